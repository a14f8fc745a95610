"""Train the reference MLP (``models.mlp``) on scikit-learn's digits, with a progress bar.

    python examples/mlp.py [--steps 300]

The dataset ships inside scikit-learn (1,797 8x8 images): nothing is downloaded.
The MLP states no input size; the dry run infers 64 input features from the batch.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from models import mlp
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import lazyinit as li


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0)

    model = mlp(hidden=(128, 128))
    params = li.dry_run(model, jax.random.key(0), x_train[:1])
    print(li.summary(model, x_train[: args.batch], params=params))

    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(0)
    for step in (bar := tqdm(range(args.steps), desc="mlp")):
        idx = rng.integers(0, len(x_train), args.batch)
        params, opt_state, loss = train_step(params, opt_state, x_train[idx], y_train[idx])
        if step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)
    accuracy = float(jnp.mean(model(params, x_test).argmax(-1) == y_test))
    print(f"held-out accuracy after {args.steps} steps: {accuracy:.3f}")


if __name__ == "__main__":
    main()
