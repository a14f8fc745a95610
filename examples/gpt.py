"""A GPT-style decoder (``models.gpt_decoder``): GPT-2 small planned abstractly, a tiny one trained.

    python examples/gpt.py [--steps 200]

First the summary of GPT-2 small (124M parameters) traced on a
``jax.ShapeDtypeStruct`` batch of token ids: nothing is allocated. Then a
two-layer decoder learns a toy language, counting modulo the vocabulary
(each token is the previous one plus one), in a jit-compiled optax loop.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax
from models import gpt_decoder
from tqdm import tqdm

import lazyinit as li


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()

    tokens = jax.ShapeDtypeStruct((8, 1024), jnp.int32)
    print(li.summary(gpt_decoder(), tokens, depth=1))

    vocab, length = 32, 32
    model = gpt_decoder(num_layers=2, d_model=64, num_heads=4, vocab=vocab, max_len=length)
    params = li.dry_run(model, jax.random.key(0), jnp.zeros((1, length), jnp.int32))
    print(li.summary(model, jax.ShapeDtypeStruct((args.batch, length), jnp.int32), depth=1))
    optimizer = optax.adamw(3e-3)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, key):
        start = jax.random.randint(key, (args.batch, 1), 0, vocab)
        ids = (start + jnp.arange(length + 1)[None, :]) % vocab

        def loss_fn(p):
            logits = model(p, ids[:, :-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    keys = jax.random.split(jax.random.key(1), args.steps)
    first = None
    for step in (bar := tqdm(range(args.steps), desc="gpt")):
        params, opt_state, loss = train_step(params, opt_state, keys[step])
        first = float(loss) if first is None else first
        if step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
    print(
        f"loss {first:.3f} -> {float(loss):.3f} after {args.steps} steps (chance: {jnp.log(vocab):.3f})"
    )


if __name__ == "__main__":
    main()
