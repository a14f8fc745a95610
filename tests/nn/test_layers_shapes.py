"""Every layer goes through the shape-agreement and lifecycle helpers.

Shape agreement: the dry run's params are the same on an abstract sample and
a concrete one, and the traced output shapes equal a real apply's.
Lifecycle: a lazy state holds placeholders; after a dry run, loading the
params into a fresh lazy state and dry-running again with another key keeps
every value bit for bit; partition/merge give the tree back.
(Parity with PyTorch's lazy modules' materialized shapes is checked case by
case in test_layers_torch.py.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layer_helpers import check_lifecycle, check_shapes

import lazyinit as li


def x(*shape, dtype=np.float32):
    rng = np.random.default_rng(sum(shape))
    if np.issubdtype(dtype, np.integer):
        return jnp.asarray(rng.integers(0, 10, shape), dtype)
    return jnp.asarray(rng.standard_normal(shape), dtype)


CATALOGUE = {
    "linear": (li.Linear(3), lambda: (x(2, 5, 4),), {}),
    "linear-nobias": (li.Linear(3, use_bias=False), lambda: (x(4),), {}),
    "conv1d": (li.Conv(3, (3,)), lambda: (x(2, 5, 2),), {}),
    "conv2d": (li.Conv(3, (3, 3), stride=2, padding="SAME"), lambda: (x(2, 6, 6, 2),), {}),
    "conv2d-int-kernel": (li.Conv(4, 3, padding=1, dilation=2), lambda: (x(1, 6, 6, 2),), {}),
    "conv3d-groups": (li.Conv(4, (2, 2, 2), groups=2), lambda: (x(1, 3, 3, 3, 2),), {}),
    "conv2d-channels-first": (
        li.Conv(3, (3, 3), channels_first=True),
        lambda: (x(2, 2, 5, 5),),
        {},
    ),
    "conv-transpose1d": (li.ConvTranspose(3, (3,), stride=2), lambda: (x(2, 4, 2),), {}),
    "conv-transpose2d": (
        li.ConvTranspose(3, (3, 3), stride=2, padding=1, output_padding=1),
        lambda: (x(1, 4, 4, 2),),
        {},
    ),
    "conv-transpose3d": (
        li.ConvTranspose(2, (2, 2, 2), padding="SAME"),
        lambda: (x(1, 3, 3, 3, 2),),
        {},
    ),  # fmt: skip
    "batch-norm-eval": (li.BatchNorm(), lambda: (x(4, 3, 3, 2),), {}),
    "batch-norm-train": (li.BatchNorm(), lambda: (x(4, 3, 3, 2),), {"train": True}),
    "batch-norm-1d-first": (
        li.BatchNorm(channels_first=True),
        lambda: (x(4, 3, 5),),
        {"train": True},
    ),  # fmt: skip
    "batch-norm-no-stats": (li.BatchNorm(track_running_stats=False), lambda: (x(4, 3),), {}),
    "instance-norm": (li.InstanceNorm(), lambda: (x(2, 5, 3),), {}),
    "instance-norm-stats": (
        li.InstanceNorm(affine=True, track_running_stats=True),
        lambda: (x(2, 4, 4, 3),),
        {"train": True},
    ),
    "layer-norm": (li.LayerNorm(), lambda: (x(2, 3, 6),), {}),
    "rms-norm": (li.RMSNorm(), lambda: (x(2, 3, 6),), {}),
    "group-norm": (li.GroupNorm(2), lambda: (x(2, 4, 4, 6),), {}),
    "embedding": (li.Embedding(10, 4), lambda: (x(2, 7, dtype=np.int32),), {}),
    "attention-self": (li.MultiHeadAttention(2), lambda: (x(2, 5, 8),), {}),
    "attention-cross-masked": (
        li.MultiHeadAttention(2, qkv_features=6, out_features=3),
        lambda: (x(2, 4, 8), x(2, 5, 7), x(2, 5, 3)),
        {"mask": jnp.ones((2, 1, 4, 5), bool)},
    ),
    "attention-causal-rotary": (
        li.MultiHeadAttention(2, use_bias=False, causal=True, rotary=True),
        lambda: (x(1, 6, 8),),
        {},
    ),
    "dropout-eval": (li.Dropout(0.5), lambda: (x(3, 4),), {}),
    "max-pool": (li.MaxPool(2), lambda: (x(2, 6, 6, 3),), {}),
    "avg-pool": (li.AvgPool((3,), stride=1, padding=1), lambda: (x(2, 6, 3),), {}),
    "global-avg-pool": (li.GlobalAvgPool(), lambda: (x(2, 3, 3, 4),), {}),
    "flatten": (li.Flatten(), lambda: (x(2, 3, 4, 5),), {}),
    "sequential": (
        li.Sequential([li.Conv(4, (3, 3)), li.BatchNorm(), li.nn.relu, li.Flatten(), li.Linear(2)]),
        lambda: (x(2, 5, 5, 3),),
        {"train": True},
    ),
    "residual": (li.Residual([li.LayerNorm(), li.Linear(6)]), lambda: (x(2, 6),), {}),
    "repeat": (li.Repeat(li.Residual([li.LayerNorm(), li.Linear(6)]), 3), lambda: (x(2, 6),), {}),
    "ensemble": (li.Ensemble(li.Linear(4), 3), lambda: (x(2, 6),), {}),
    "parallel": (
        li.Parallel([li.Linear(3), li.Sequential([li.Linear(2), li.nn.relu])]),
        lambda: (x(2, 6),),
        {},
    ),
}


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_shapes_agree(name):
    layer, inputs, kwargs = CATALOGUE[name]
    check_shapes(layer, *inputs(), **kwargs)


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_lifecycle(name):
    layer, inputs, kwargs = CATALOGUE[name]
    check_lifecycle(layer, *inputs(), **kwargs)


def test_dropout_in_training_goes_through_both_helpers():
    """A key is consumed by each call, so each helper call gets its own."""
    layer, sample = li.Dropout(0.5), x(3, 4)
    check_shapes(layer, sample, train=True, key=jax.random.key(1))
    check_lifecycle(layer, sample, train=True, key=jax.random.key(2))


def test_every_public_layer_is_in_the_catalogue():
    covered = {type(layer) for layer, _, _ in CATALOGUE.values()} | {li.Dropout}
    public = {
        v
        for v in vars(li).values()
        if isinstance(v, type) and issubclass(v, li.Layer) and v is not li.Layer
    }
    assert public <= covered, public - covered


# "sequential" and "parallel" hold jax.nn activations (li.nn.relu), which pickle cannot find by name.
@pytest.mark.parametrize(
    "name", [n for n in CATALOGUE if n not in ("sequential", "parallel")] + ["dropout"]
)
def test_layers_pickle_and_compare_by_value(name):
    """Layers are configuration: they pickle, and equal configurations are equal (and hash alike)."""
    import copy
    import pickle

    layer = li.Dropout(0.5) if name == "dropout" else CATALOGUE[name][0]
    again = pickle.loads(pickle.dumps(layer))
    assert again == layer and hash(again) == hash(layer) and repr(again) == repr(layer)
    assert copy.deepcopy(layer) == layer
