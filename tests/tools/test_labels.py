"""li.labels with optax.multi_transform: a frozen backbone does not change in a training step,
the rest does, and buffers are labelled "buffer"; and examples/finetune_head.py runs."""

import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from style_models import STYLES, styles

import lazyinit as li

ROOT = pathlib.Path(__file__).resolve().parents[2]
X = jax.random.normal(jax.random.key(7), (8, 8))
Y = jnp.arange(8) % 4


def flat(tree):
    return {"/".join(k.key for k in path): v for path, v in jax.tree.leaves_with_path(tree)}


@pytest.mark.parametrize("style", STYLES)
def test_labels_mark_frozen_trainable_and_buffers(style):
    model = styles()[style]
    params = li.dry_run(model, jax.random.key(0), X)
    assert li.labels(model, params, X, frozen=["body", "norm"]) == {
        "body": {"kernel": "frozen", "bias": "frozen"},
        "norm": {
            "scale": "frozen",
            "bias": "frozen",
            "mean": "buffer",
            "var": "buffer",
            "count": "buffer",
        },
        "head": {"kernel": "trainable", "bias": "trainable"},
    }
    assert set(flat(li.labels(model, params, X)).values()) == {"trainable", "buffer"}


@pytest.mark.parametrize("style", STYLES)
def test_a_frozen_backbone_does_not_change_in_a_training_step(style):
    model = styles()[style]
    params = li.dry_run(model, jax.random.key(0), X)
    tx = optax.multi_transform(
        {"trainable": optax.sgd(0.1), "frozen": optax.set_to_zero(), "buffer": optax.set_to_zero()},
        li.labels(model, params, X, frozen="body"),
    )
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state):
        def loss_fn(p):
            logits, updates = li.apply(model, p, X, train=True, mutable=True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean(), updates

        (_, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        steps, opt_state = tx.update(grads, opt_state, params)
        return li.merge(optax.apply_updates(params, steps), updates), opt_state

    new, _ = step(params, opt_state)
    old, new = flat(params), flat(new)
    for p in ("body/kernel", "body/bias"):
        np.testing.assert_array_equal(new[p], old[p])
    for p in ("head/kernel", "norm/scale"):  # trained
        assert not np.array_equal(new[p], old[p]), p
    assert not np.array_equal(new["norm/mean"], old["norm/mean"])  # the running stats moved


def test_labels_follow_a_partial_tree_such_as_partitions_trainable_half():
    model = styles()["fields"]
    params = li.dry_run(model, jax.random.key(0), X)
    trainable, _ = li.partition(model, params, X)
    labels = li.labels(model, trainable, X, frozen="body")
    assert jax.tree.structure(labels) == jax.tree.structure(trainable)
    assert labels["norm"] == {"scale": "trainable", "bias": "trainable"}


def test_refusals_name_what_to_do():
    model = styles()["fields"]
    params = li.dry_run(model, jax.random.key(0), X)
    with pytest.raises(li.errors.InferShapeError, match=r"needs a sample input.*li.labels\(model"):
        li.labels(model, params, frozen="body")
    with pytest.raises(
        li.errors.InvalidArgumentError, match=r"'bdy' match no parameter.*body, head"
    ):
        li.labels(model, params, X, frozen="bdy")
    with pytest.raises(li.errors.StateMismatchError, match=r"unexpected key 'extra/kernel'"):
        li.labels(model, {**params, "extra": {"kernel": X}}, X)


@pytest.mark.slow  # starts a Python process
def test_finetune_head_example_runs(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "finetune_head.py"), "--steps", "60"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "backbone unchanged: True" in out.stdout
    last = out.stdout.strip().splitlines()[-1]
    assert re.search(
        r"held-out accuracy on the 4 new classes after 60 steps: (0\.[6-9]\d*|1\.0+)$", last
    ), out.stdout[-800:]
