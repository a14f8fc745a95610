"""Parity with flax.linen: the same params tree (names and shapes), the same outputs.

Each case initializes the flax module, checks that lazyinit's dry run infers
the very same tree of shapes, then applies both with flax's params.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layer_helpers import abstract, assert_close, shapes

import lazyinit as li


def rand(*shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def randomize(tree, seed=1):
    """flax initializes biases and norms to constants; random values (drawn by numpy) test more."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda l: jnp.asarray(rng.uniform(0.5, 1.5, l.shape), l.dtype), tree)


def compare(layer, module, *inputs, flax_kwargs=None, **kwargs):
    variables = randomize(module.init(jax.random.key(0), *inputs, **(flax_kwargs or {})))
    params = li.dry_run(layer, jax.random.key(0), *abstract(inputs), **kwargs)
    assert shapes(params) == shapes(variables["params"])
    want = module.apply(variables, *inputs, **(flax_kwargs or {}))
    assert_close(layer(variables["params"], *inputs, **kwargs), want)


@pytest.mark.parametrize("bias", [True, False])
def test_dense(bias):
    compare(li.Linear(5, use_bias=bias), nn.Dense(5, use_bias=bias), rand(2, 3, 4))


@pytest.mark.parametrize(
    "padding,stride,dilation,groups,bias",
    [
        ("SAME", 1, 1, 1, True),
        ("SAME", 2, 1, 2, False),
        ("VALID", 1, 2, 1, True),
        ("VALID", 2, 1, 2, True),
        (1, 2, 2, 1, False),
        (((0, 2), (1, 0)), 1, 1, 2, True),
    ],
)
@pytest.mark.parametrize("kernel", [(3,), (3, 2), (2, 2, 2)], ids=["1d", "2d", "3d"])
def test_conv(kernel, padding, stride, dilation, groups, bias):
    if len(kernel) != 2 and isinstance(padding, tuple):
        padding = ((0, 2),) * len(kernel)
    x = rand(2, *(6,) * len(kernel), 4)
    layer = li.Conv(4, kernel, stride, padding, dilation, groups, bias)
    flax_padding = ((padding, padding),) * len(kernel) if isinstance(padding, int) else padding
    module = nn.Conv(4, kernel, stride, flax_padding, kernel_dilation=dilation, feature_group_count=groups, use_bias=bias)  # fmt: skip
    compare(layer, module, x)


@pytest.mark.parametrize(
    "padding,stride,dilation",
    [
        ("SAME", 1, 1),
        ("SAME", 2, 1),
        ("SAME", 3, 2),
        ("VALID", 2, 1),
        ("VALID", 3, 1),
        (1, 2, 1),
        (2, 2, 2),
    ],
)
@pytest.mark.parametrize("kernel", [(3,), (3, 2), (2, 2, 2)], ids=["1d", "2d", "3d"])
def test_conv_transpose(kernel, padding, stride, dilation):
    """lazyinit's integer padding is PyTorch's crop; flax's explicit padding pads the dilated input."""
    x = rand(2, *(4,) * len(kernel), 3)
    layer = li.ConvTranspose(4, kernel, stride, padding, dilation=dilation)
    if isinstance(padding, int):
        flax_padding = tuple(((k - 1) * dilation - padding,) * 2 for k in kernel)
    else:
        flax_padding = padding
    module = nn.ConvTranspose(4, kernel, stride, flax_padding, kernel_dilation=dilation)
    compare(layer, module, x)


@pytest.mark.parametrize("shape", [(6, 3), (3, 4, 5, 3)])
@pytest.mark.parametrize("train", [False, True])
def test_batch_norm(shape, train):
    """flax's momentum is 1 - PyTorch's; flax keeps the biased running variance, lazyinit the unbiased."""
    x = rand(*shape)
    module = nn.BatchNorm(use_running_average=not train, momentum=0.8, epsilon=1e-3)
    variables = randomize(module.init(jax.random.key(0), x))
    layer = li.BatchNorm(momentum=0.2, eps=1e-3)
    params = li.dry_run(layer, jax.random.key(0), abstract(x))
    ours = {**variables["params"], **variables["batch_stats"], "count": jnp.zeros(())}
    assert shapes(params) == shapes(ours)  # flax keeps no count of batches; lazyinit does
    if not train:
        assert_close(layer(ours, x), module.apply(variables, x))
        return
    want, state = module.apply(variables, x, mutable=["batch_stats"])
    got, updates = li.apply(layer, ours, x, train=True, mutable=True)
    assert_close(got, want)
    new, old = state["batch_stats"], variables["batch_stats"]
    assert_close(updates["mean"], new["mean"])
    n = x.size // x.shape[-1]
    biased = (new["var"] - 0.8 * old["var"]) / 0.2
    assert_close(updates["var"], 0.8 * old["var"] + 0.2 * biased * n / (n - 1))


@pytest.mark.parametrize("scale,bias", [(True, True), (False, True), (True, False)])
def test_layer_norm(scale, bias):
    layer = li.LayerNorm(eps=1e-6, use_scale=scale, use_bias=bias)
    compare(layer, nn.LayerNorm(epsilon=1e-6, use_scale=scale, use_bias=bias), rand(2, 3, 6))


@pytest.mark.parametrize("groups,shape", [(2, (2, 5, 4)), (3, (2, 3, 3, 6)), (1, (2, 4))])
def test_group_norm(groups, shape):
    compare(li.GroupNorm(groups, eps=1e-6), nn.GroupNorm(groups, epsilon=1e-6), rand(*shape))


def test_embed():
    ids = jnp.array([[0, 3, 9], [2, 2, 1]], jnp.int32)
    compare(li.Embedding(10, 4), nn.Embed(10, 4), ids)
    x = rand(2, 3, 4)
    variables = randomize(nn.Embed(10, 4).init(jax.random.key(0), ids))
    want = nn.Embed(10, 4).apply(variables, x, method="attend")
    assert_close(li.Embedding(10, 4).attend(variables["params"], x), want)


@pytest.mark.parametrize("qkv,out", [(None, None), (12, 5)])
@pytest.mark.parametrize("masked", ["none", "causal", "padding"])
@pytest.mark.parametrize("cross", [False, True])
def test_multi_head_dot_product_attention(qkv, out, masked, cross):
    q = rand(2, 4, 8, seed=1)
    k = rand(2, 4, 6, seed=2) if cross else None
    v = rand(2, 4, 3, seed=3) if cross else None
    module = nn.MultiHeadDotProductAttention(3 if qkv else 2, qkv_features=qkv, out_features=out)
    mask = None
    if masked == "causal":
        mask = nn.make_causal_mask(jnp.ones((2, 4)))
    elif masked == "padding":
        mask = jnp.asarray(
            np.arange(4)[None, None, None, :] < np.array([4, 2])[:, None, None, None]
        )
    layer = li.MultiHeadAttention(3 if qkv else 2, qkv, out, causal=masked == "causal")
    ours_mask = mask if masked == "padding" else None
    inputs = (q,) if not cross else (q, k, v)
    variables = randomize(module.init(jax.random.key(0), *inputs, mask=mask))
    params = li.dry_run(layer, jax.random.key(0), *abstract(inputs), mask=ours_mask)
    assert shapes(params) == shapes(variables["params"])
    want = module.apply(variables, *inputs, mask=mask)
    assert_close(layer(variables["params"], *inputs, mask=ours_mask), want)
