"""The GPT example (``models.gpt_decoder``) with float32 params, bfloat16 compute, scanned blocks.

    python examples/gpt_mixed_precision.py [--steps 200] [--layers 4] [--remat]

The policy is two lines: ``li.mixed_precision(model, "bfloat16")`` makes every
built-in layer compute in bfloat16, while the dry run keeps the parameters
(the optimizer's master weights) in float32; the logits are cast back to
float32 before the softmax cross-entropy. The decoder's blocks run as one
``li.Repeat`` (a ``lax.scan``: the compiled step does not grow with depth),
optionally rematerialized. The same toy language as ``gpt.py`` (each token
is the previous one plus one) is learned in bfloat16 and in float32, and the
two final losses are printed side by side.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import optax
from models import gpt_decoder

import lazyinit as li


def scanned_gpt(num_layers: int, remat: bool = False, **kwargs: int) -> li.Layer:
    """``gpt_decoder`` whose identical blocks run as one ``li.Repeat``."""
    model = gpt_decoder(num_layers=1, **kwargs)
    return dataclasses.replace(
        model, blocks=li.Repeat(model.blocks.layers[0], num_layers, remat=remat)
    )


def train(model: li.Layer, steps: int, batch: int = 16, vocab: int = 32, length: int = 32) -> float:
    """Trains ``model`` on the counting language; returns the last step's loss."""
    params = li.dry_run(model, jax.random.key(0), jnp.zeros((1, length), jnp.int32))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))  # master weights
    optimizer = optax.adamw(3e-3)

    def step(carry, key):
        params, opt_state = carry
        start = jax.random.randint(key, (batch, 1), 0, vocab)
        ids = (start + jnp.arange(length + 1)[None, :]) % vocab

        def loss_fn(p):
            logits = model(p, ids[:, :-1]).astype(jnp.float32)  # the loss in float32
            return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    keys = jax.random.split(jax.random.key(1), steps)
    run = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), keys))
    _, losses = run(params)
    return float(losses[-1])


def main(argv: list[str] | None = None) -> tuple[float, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--remat", action="store_true")
    args = parser.parse_args(argv)

    config = dict(d_model=64, num_heads=4, vocab=32, max_len=32)
    model = scanned_gpt(args.layers, args.remat, **config)
    full = train(model, args.steps)
    half = train(li.mixed_precision(model, "bfloat16"), args.steps)
    print(
        f"{args.layers} scanned layers, {args.steps} steps: loss float32 {full:.3f}, "
        f"bfloat16 compute {half:.3f} (chance: {jnp.log(32):.3f})"
    )
    return full, half


if __name__ == "__main__":
    main()
