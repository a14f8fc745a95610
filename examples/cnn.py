"""A ResNet-style CNN (``models.resnet_cnn``): ResNet-18 planned abstractly, a small one trained.

    python examples/cnn.py [--steps 200]

First the summary of the full ResNet-18 on CIFAR-sized inputs, traced on a
``jax.ShapeDtypeStruct`` (nothing allocated). Then a two-stage version trains
on scikit-learn's digits (shipped with it, nothing downloaded), with BatchNorm
statistics threaded through the jit-compiled step as buffers.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from models import resnet_cnn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import lazyinit as li


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    cifar = jax.ShapeDtypeStruct((128, 32, 32, 3), jnp.float32)
    print(li.summary(resnet_cnn(), cifar, depth=1))

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]  # (N, 8, 8, 1)
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)

    model = resnet_cnn(widths=(16, 32), blocks_per_stage=1)
    params = li.dry_run(model, jax.random.key(0), x_train[:1])
    print(li.summary(model, x_train[: args.batch], depth=1))
    trainable, buffers = li.partition(model, params)  # BatchNorm's running statistics
    optimizer = optax.adam(3e-3)
    opt_state = optimizer.init(trainable)

    @jax.jit
    def train_step(trainable, buffers, opt_state, x, y):
        def loss_fn(t):
            logits, updates = li.apply(model, li.merge(t, buffers), x, train=True, mutable=True)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        steps, opt_state = optimizer.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, steps), li.merge(buffers, updates), opt_state, loss

    rng = np.random.default_rng(0)
    for step in (bar := tqdm(range(args.steps), desc="cnn")):
        idx = rng.integers(0, len(x_train), args.batch)
        trainable, buffers, opt_state, loss = train_step(
            trainable, buffers, opt_state, x_train[idx], y_train[idx]
        )
        if step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
    logits = model(li.merge(trainable, buffers), x_test, train=False)
    accuracy = float(jnp.mean(logits.argmax(-1) == y_test))
    print(f"held-out accuracy after {args.steps} steps: {accuracy:.3f}")


if __name__ == "__main__":
    main()
