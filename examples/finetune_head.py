"""Fine-tune only a new head: surgery with a dry run, a frozen backbone with li.labels.

    python examples/finetune_head.py [--steps 150]

A small ResNet-style CNN (``models.resnet_cnn``) is first trained on scikit-learn's
digits 0-5. Then the surgery: the same network with a new 4-class head for digits
6-9 is dry-run with the old params as ``state=`` (the old head, of another shape, is
dropped), and ``li.dry_run_with_report`` says what was kept and what was initialized.
``li.labels`` freezes everything but the head for ``optax.multi_transform``, and only
the head trains, in evaluation mode so that BatchNorm's statistics stay as they were.
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

import lazyinit as li


def train(model, params, tx, x, y, steps, batch, *, train_mode):
    """``steps`` of ``tx`` on random batches; BatchNorm statistics updated when ``train_mode``."""
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, xb, yb):
        def loss_fn(p):
            logits, updates = li.apply(model, p, xb, train=train_mode, mutable=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean(), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        steps_, opt_state = tx.update(grads, opt_state, params)
        return li.merge(optax.apply_updates(params, steps_), updates), opt_state, loss

    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.integers(0, len(x), batch)
        params, opt_state, loss = step(params, opt_state, x[idx], y[idx])
    return params, float(loss)


def accuracy(model, params, x, y) -> float:
    return float(jnp.mean(model(params, x, train=False).argmax(-1) == y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="fine-tuning steps of the head")
    parser.add_argument("--pretrain-steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]  # (N, 8, 8, 1)
    y = digits.target.astype(np.int32)
    old, new = y < 6, y >= 6

    # 1. The pretrained model: digits 0-5.
    model = resnet_cnn(num_classes=6, widths=(16, 32), blocks_per_stage=1)
    params = li.dry_run(model, jax.random.key(0), x[:1])
    params, loss = train(
        model,
        params,
        optax.adam(3e-3),
        x[old],
        y[old],
        args.pretrain_steps,
        args.batch,
        train_mode=True,
    )
    print(f"pretrained on digits 0-5: loss {loss:.3f}")

    # 2. Surgery: a new 4-class head. The old head does not fit it, so it is dropped.
    new_model = resnet_cnn(num_classes=4, widths=(16, 32), blocks_per_stage=1)
    head = str(len(new_model.layers) - 1)
    state = {name: sub for name, sub in params.items() if name != head}
    new_params, report = li.dry_run_with_report(
        new_model, jax.random.key(1), x[:1], state=state, strict=False
    )
    print(f"kept {len(report.kept)} arrays, initialized {', '.join(report.initialized)}")

    # 3. Freeze everything but the head, and train it on digits 6-9.
    x_train, x_test, y_train, y_test = train_test_split(
        x[new], y[new] - 6, test_size=0.25, random_state=0
    )
    backbone = [name for name in new_params if name != head]
    tx = optax.multi_transform(
        {
            "trainable": optax.adam(3e-2),
            "frozen": optax.set_to_zero(),
            "buffer": optax.set_to_zero(),
        },
        li.labels(new_model, new_params, x[:1], frozen=backbone),
    )
    tuned, _ = train(
        new_model, new_params, tx, x_train, y_train, args.steps, args.batch, train_mode=False
    )
    same = all(
        bool(jnp.array_equal(a, b))
        for name in backbone
        for a, b in zip(jax.tree.leaves(tuned[name]), jax.tree.leaves(new_params[name]))
    )
    print(f"backbone unchanged: {same}")
    acc = accuracy(new_model, tuned, x_test, y_test)
    print(f"held-out accuracy on the 4 new classes after {args.steps} steps: {acc:.3f}")


if __name__ == "__main__":
    main()
