"""Numerical parity with PyTorch: same weights (converted layout), same input, same output.

Each case first runs PyTorch's lazy module (or the plain one where PyTorch has
no lazy version) on the input, which materializes its parameters; their
shapes, converted, must equal what lazyinit's dry run infers. Then both run
with PyTorch's (randomized) weights, and outputs, and in training mode the
updated running statistics, must agree to float32 tolerance.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layer_helpers import (
    abstract,
    assert_close,
    channels_first,
    channels_last,
    from_torch,
    randomize,
    shapes,
)

import lazyinit as li

torch = pytest.importorskip("torch", reason="PyTorch parity needs torch (the test extra)")
nn = torch.nn
F = torch.nn.functional


def compare(layer, tmod, x, *, layout="last", train=False, tol=1e-5, **kwargs):
    """Runs ``tmod`` (PyTorch) and ``layer`` (lazyinit) on ``x`` and compares everything.

    ``layout='last'`` converts channels-last ``x`` to PyTorch's channels-first
    and back; ``'same'`` passes it unchanged.
    """
    to_t = channels_first if layout == "last" else (lambda a: a)
    from_t = channels_last if layout == "last" else (lambda a: a)
    xt = torch.from_numpy(to_t(np.asarray(x)))
    tmod.eval()
    with torch.no_grad():
        tmod(xt)  # PyTorch's dry run: lazy modules materialize here
    randomize(tmod)
    expected = from_torch(tmod)
    kwargs = {**kwargs, "train": True} if train else kwargs
    params = li.dry_run(layer, jax.random.key(0), abstract(jnp.asarray(x)), **kwargs)
    assert shapes(params) == shapes(expected)
    tmod.train(train)
    with torch.no_grad():
        want = from_t(tmod(xt).numpy())
    if train and layer.track_running_stats:
        got, updates = li.apply(layer, expected, jnp.asarray(x), mutable=True, **kwargs)
        after = from_torch(tmod)
        assert_close(updates["mean"], after["mean"], tol)
        assert_close(updates["var"], after["var"], tol)
        if "count" in after:  # BatchNorm counts its training batches, as PyTorch does
            assert_close(updates["count"], after["count"], 0)
    else:
        got = layer(expected, jnp.asarray(x), **kwargs)
    assert_close(got, want, tol)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_linear():
    compare(li.Linear(5), nn.LazyLinear(5), rand(3, 2, 4), layout="same")
    compare(li.Linear(5, use_bias=False), nn.LazyLinear(5, bias=False), rand(3, 4), layout="same")


# ---------------------------------------------------------------------------
# Convolutions.

# groups and bias vary together: (1, with bias) and (2, without), to keep the grid small.
CONV_GRID = [
    (stride, padding, dilation, groups, groups == 1)
    for stride, padding, dilation, groups in itertools.product(
        (1, 2), (0, 1, "same", "valid"), (1, 2), (1, 2)
    )
    if not (padding == "same" and stride > 1)  # PyTorch refuses it
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("stride,padding,dilation,groups,bias", CONV_GRID)
def test_conv2d(stride, padding, dilation, groups, bias):
    layer = li.Conv(4, (3, 2), stride, padding, dilation, groups, bias)
    tmod = nn.LazyConv2d(4, (3, 2), stride, padding, dilation, groups, bias)
    compare(layer, tmod, rand(2, 7, 6, 4))


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize(
    "stride,padding,dilation,groups", [(1, 0, 1, 1), (2, 1, 2, 2), (1, "same", 2, 1)]
)
def test_conv_1d_3d(n, stride, padding, dilation, groups):
    lazy = {1: nn.LazyConv1d, 3: nn.LazyConv3d}[n]
    compare(
        li.Conv(4, 3, stride=stride, padding=padding, dilation=dilation, groups=groups),
        lazy(4, 3, stride=stride, padding=padding, dilation=dilation, groups=groups),
        rand(2, *(7,) * n, 2),
    )


def test_conv_channels_first_takes_pytorch_layout():
    x = rand(2, 4, 7, 6)
    compare(
        li.Conv(6, 3, stride=2, padding=1, channels_first=True),
        nn.LazyConv2d(6, 3, 2, 1),
        x,
        layout="same",
    )


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("stride,padding", [(1, "same"), (2, 1), (1, (2, 1))])
def test_conv_padding_modes(mode, stride, padding):
    layer = li.Conv(3, (3, 2), stride, padding, padding_mode=mode)
    tmod = nn.LazyConv2d(3, (3, 2), stride, padding, padding_mode=mode)
    compare(layer, tmod, rand(2, 5, 6, 2))


def test_conv_asymmetric_padding_equals_pad_then_conv():
    layer = li.Conv(3, (3, 3), padding=((0, 2), (1, 0)))
    x = rand(1, 5, 5, 2)
    tmod = nn.Conv2d(2, 3, 3)
    randomize(tmod)
    params = from_torch(tmod)
    assert shapes(li.dry_run(layer, jax.random.key(0), abstract(x))) == shapes(params)
    want = tmod(F.pad(torch.from_numpy(channels_first(x)), (1, 0, 0, 2))).detach().numpy()
    assert_close(layer(params, x), channels_last(want))


CONV_T_GRID = [
    (stride, padding, output_padding, dilation, 1 + (stride + padding) % 2, stride != 2)
    for stride, padding, output_padding, dilation in itertools.product(
        (1, 2, 3), (0, 1, 2), (0, 1), (1, 2)
    )
    if output_padding < max(stride, dilation)
]


@pytest.mark.parametrize("stride,padding,output_padding,dilation,groups,bias", CONV_T_GRID)
def test_conv_transpose2d(stride, padding, output_padding, dilation, groups, bias):
    layer = li.ConvTranspose(4, (3, 2), stride, padding, output_padding, dilation, groups, bias)
    tmod = nn.LazyConvTranspose2d(
        4, (3, 2), stride, padding, output_padding, groups, bias, dilation
    )
    compare(layer, tmod, rand(2, 4, 5, 4))


@pytest.mark.parametrize("n", [1, 3])
def test_conv_transpose_1d_3d(n):
    lazy = {1: nn.LazyConvTranspose1d, 3: nn.LazyConvTranspose3d}[n]
    compare(
        li.ConvTranspose(4, 3, stride=2, padding=1, output_padding=1, groups=2),
        lazy(4, 3, stride=2, padding=1, output_padding=1, groups=2),
        rand(2, *(4,) * n, 2),
    )


def test_conv_transpose_channels_first():
    x = rand(2, 3, 4, 4)
    compare(
        li.ConvTranspose(2, 3, stride=2, padding=1, channels_first=True),
        nn.LazyConvTranspose2d(2, 3, stride=2, padding=1),
        x,
        layout="same",
    )


# ---------------------------------------------------------------------------
# Normalization.

BN_INPUTS = {1: [(6, 3), (4, 5, 3)], 2: [(3, 4, 5, 3)], 3: [(2, 3, 2, 4, 3)]}
BN_LAZY = {1: nn.LazyBatchNorm1d, 2: nn.LazyBatchNorm2d, 3: nn.LazyBatchNorm3d}


@pytest.mark.parametrize(
    "dims,shape", [(d, s) for d, ss in BN_INPUTS.items() for s in ss], ids=lambda v: str(v)
)
@pytest.mark.parametrize(
    "affine,track,momentum",
    [(True, True, 0.1), (False, True, 0.5), (True, False, 0.1), (False, False, 0.3)],
)
@pytest.mark.parametrize("train", [False, True])
def test_batch_norm(dims, shape, affine, track, momentum, train):
    layer = li.BatchNorm(momentum=momentum, eps=1e-3, affine=affine, track_running_stats=track)
    tmod = BN_LAZY[dims](eps=1e-3, momentum=momentum, affine=affine, track_running_stats=track)
    compare(layer, tmod, rand(*shape), train=train)


# Without parameters or buffers PyTorch's lazy module never learns num_features, and warns.
quiet_unsized_instance_norm = pytest.mark.filterwarnings(
    "ignore:input's size at dim=1 does not match num_features"
)
IN_LAZY = {1: nn.LazyInstanceNorm1d, 2: nn.LazyInstanceNorm2d, 3: nn.LazyInstanceNorm3d}


@quiet_unsized_instance_norm
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize(
    "affine,track", [(False, False), (True, False), (False, True), (True, True)]
)
@pytest.mark.parametrize("train", [False, True])
def test_instance_norm(dims, affine, track, train):
    layer = li.InstanceNorm(momentum=0.2, affine=affine, track_running_stats=track)
    tmod = IN_LAZY[dims](momentum=0.2, affine=affine, track_running_stats=track)
    compare(layer, tmod, rand(3, *(4,) * dims, 2), train=train)


@pytest.mark.parametrize("scale,bias", [(True, True), (True, False), (False, False)])
def test_layer_norm(scale, bias):
    layer = li.LayerNorm(eps=1e-4, use_scale=scale, use_bias=bias)
    tmod = nn.LayerNorm(6, eps=1e-4, elementwise_affine=scale, bias=bias)
    compare(layer, tmod, rand(2, 3, 6), layout="same")


def test_rms_norm():
    compare(li.RMSNorm(eps=1e-5), nn.RMSNorm(6, eps=1e-5), rand(2, 3, 6), layout="same")
    x = rand(2, 6)
    assert_close(
        li.RMSNorm(use_scale=False, eps=1e-5)({}, x),
        nn.RMSNorm(6, 1e-5, False)(torch.from_numpy(x)).numpy(),
    )


@pytest.mark.parametrize(
    "groups,affine,shape",
    [
        (2, True, (2, 5, 4)),
        (3, True, (2, 3, 3, 6)),
        (1, False, (2, 4, 4)),
        (4, True, (1, 2, 2, 2, 4)),
    ],
)
def test_group_norm(groups, affine, shape):
    layer = li.GroupNorm(groups, eps=1e-5, affine=affine)
    compare(layer, nn.GroupNorm(groups, shape[-1], eps=1e-5, affine=affine), rand(*shape))
    first = li.GroupNorm(groups, affine=affine, channels_first=True)
    x = channels_first(rand(*shape))
    compare(first, nn.GroupNorm(groups, shape[-1], affine=affine), x, layout="same")


# ---------------------------------------------------------------------------
# Embedding, attention, pooling, reshaping, dropout.


def test_embedding():
    ids = np.array([[0, 3, 9], [2, 2, 1]], np.int32)
    tmod = nn.Embedding(10, 4)
    randomize(tmod)
    params = li.dry_run(li.Embedding(10, 4), jax.random.key(0), ids)
    assert shapes(params) == shapes(from_torch(tmod))
    want = tmod(torch.from_numpy(ids).long()).detach().numpy()
    assert_close(li.Embedding(10, 4)(from_torch(tmod), ids), want)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mask_kind", [None, "causal", "padding", "both"])
@pytest.mark.parametrize("kv_dims", [None, (3, 5)])
def test_multi_head_attention(bias, mask_kind, kv_dims):
    e, h, lq = 8, 2, 4
    lk = lq if mask_kind in ("causal", "both") else 6
    q = rand(2, lq, e, seed=1)
    kd, vd = kv_dims or (e, e)
    k, v = (
        (rand(2, lk, kd, seed=2), rand(2, lk, vd, seed=3))
        if kv_dims
        else (q, q)
        if lk == lq
        else (rand(2, lk, e, seed=2),) * 2
    )
    tmod = nn.MultiheadAttention(e, h, bias=bias, kdim=kd, vdim=vd, batch_first=True)
    randomize(tmod)
    allowed = np.ones((2, 1, lq, lk), bool)
    if mask_kind in ("padding", "both"):
        allowed[1, :, :, -1] = False  # the second sequence's last key is padding
    causal = mask_kind in ("causal", "both")
    layer = li.MultiHeadAttention(h, use_bias=bias, causal=causal)
    mask = allowed if mask_kind in ("padding", "both") else None
    params = li.dry_run(layer, jax.random.key(0), *abstract((q, k, v)), mask=mask)
    expected = from_torch(tmod)
    assert shapes(params) == shapes(expected)
    t_mask = None
    if causal:
        t_mask = torch.triu(torch.ones(lq, lk, dtype=torch.bool), 1)
    pad = torch.from_numpy(~allowed[:, 0, 0, :]) if mask is not None else None
    want, _ = tmod(
        *(torch.from_numpy(a) for a in (q, k, v)),
        key_padding_mask=pad,
        attn_mask=t_mask,
        need_weights=False,
    )
    assert_close(layer(expected, q, k, v, mask=mask), want.detach().numpy())


def _rotary_torch(x, base=10000.0):
    """Hugging Face LLaMA's rotary embedding of (b, heads, l, d): rotate_half pairs j, j + d/2."""
    half = x.shape[-1] // 2
    inv = base ** (-torch.arange(half, dtype=torch.float64) / half)
    angles = torch.arange(x.shape[-2], dtype=torch.float64)[:, None] * inv[None]
    cos, sin = (torch.cat([f(angles)] * 2, -1).float() for f in (torch.cos, torch.sin))
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("rotary", [False, True])
def test_grouped_query_attention_equals_torch_sdpa_with_enable_gqa(kv_heads, rotary):
    """num_kv_heads=4 (= num_heads) is plain attention; 2 and 1 share each key/value head
    among consecutive query heads, as torch's enable_gqa (and Hugging Face's repeat_kv)."""
    b, l, e, h = 2, 5, 16, 4
    x = rand(b, l, e, seed=4)
    layer = li.MultiHeadAttention(h, num_kv_heads=kv_heads, causal=True, rotary=rotary)
    params = li.dry_run(layer, jax.random.key(1), x)
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape), params)
    assert params["key"]["kernel"].shape == params["value"]["kernel"].shape == (e, kv_heads, 4)
    assert params["query"]["kernel"].shape == (e, h, 4)
    t = {n: {k: torch.from_numpy(np.array(a)) for k, a in p.items()} for n, p in params.items()}
    tx = torch.from_numpy(x)

    def heads(name):  # (b, heads, l, d)
        y = torch.einsum("blf,fhd->bhld", tx, t[name]["kernel"]) + t[name]["bias"][:, None]
        return _rotary_torch(y) if rotary and name != "value" else y

    q, k, v = heads("query"), heads("key"), heads("value")
    ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv_heads < h)
    want = torch.einsum("bhld,hdf->blf", ctx, t["out"]["kernel"]) + t["out"]["bias"]
    assert_close(layer(params, x), want.numpy())


def test_num_kv_heads_by_default_keeps_the_params_and_values_of_plain_attention():
    x = rand(1, 3, 8, seed=5)
    plain, same = li.MultiHeadAttention(2), li.MultiHeadAttention(2, num_kv_heads=2)
    a, b = (li.dry_run(m, jax.random.key(0), x) for m in (plain, same))
    assert jax.tree.all(jax.tree.map(lambda u, w: bool(jnp.array_equal(u, w)), a, b))
    assert np.array_equal(plain(a, x), same(b, x))


@pytest.mark.parametrize(
    "window,stride,padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1)), (3, 1, 0)]
)
def test_max_pool(window, stride, padding):
    layer = li.MaxPool(window, stride, padding)
    compare(layer, nn.MaxPool2d(window, stride, padding), rand(2, 7, 6, 3))


@pytest.mark.parametrize(
    "window,stride,padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1))]
)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool(window, stride, padding, count_include_pad):
    layer = li.AvgPool(window, stride, padding, count_include_pad)
    tmod = nn.AvgPool2d(window, stride, padding, count_include_pad=count_include_pad)
    compare(layer, tmod, rand(2, 7, 6, 3))


@pytest.mark.parametrize("n", [1, 3])
def test_pool_1d_3d(n):
    x = rand(2, *(6,) * n, 3)
    compare(li.MaxPool(2, padding=1), {1: nn.MaxPool1d, 3: nn.MaxPool3d}[n](2, padding=1), x)
    compare(li.AvgPool(3, stride=2), {1: nn.AvgPool1d, 3: nn.AvgPool3d}[n](3, 2), x)


def test_pool_channels_first():
    x = rand(2, 3, 7, 6)
    compare(li.MaxPool(3, 2, 1, channels_first=True), nn.MaxPool2d(3, 2, 1), x, layout="same")
    compare(li.AvgPool(2, channels_first=True), nn.AvgPool2d(2), x, layout="same")


def test_global_avg_pool_equals_adaptive_avg_pool():
    x = rand(2, 5, 4, 3)
    want = nn.AdaptiveAvgPool2d(1)(torch.from_numpy(channels_first(x))).numpy()[:, :, 0, 0]
    assert_close(li.GlobalAvgPool()({}, x), want)
    assert_close(li.GlobalAvgPool(channels_first=True)({}, channels_first(x)), want)


@pytest.mark.parametrize("start,end", [(1, -1), (0, -1), (1, 2), (2, 3)])
def test_flatten(start, end):
    x = rand(2, 3, 4, 5)
    want = nn.Flatten(start, end)(torch.from_numpy(x)).numpy()
    assert_close(li.Flatten(start, end)({}, x), want)


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_dropout_matches_pytorch_semantics(rate):
    """Masks differ between libraries; the semantics must not: kept values scaled by 1/(1-rate)."""
    x = jnp.asarray(rand(64, 64)) + 5.0
    y = li.Dropout(rate)({}, x, train=True, key=jax.random.key(0))
    kept = np.asarray(y) != 0
    assert_close(np.asarray(y)[kept], np.asarray(x)[kept] / (1 - rate))
    assert abs(1 - kept.mean() - rate) < 0.03
    assert_close(li.Dropout(rate)({}, x), x)  # evaluation: the identity, as nn.Dropout.eval()


def test_batch_norm_cumulative_average_when_momentum_is_none():
    from lazyinit.interop.torch import from_torch_state_dict, to_torch_state_dict

    layer = li.BatchNorm(momentum=None)
    tmod = nn.BatchNorm1d(3, momentum=None)
    batches = [rand(4, 5, 3, seed=i) for i in range(3)]  # channels-last for lazyinit
    params = li.dry_run(layer, jax.random.key(0), jnp.asarray(batches[0]))
    assert params["count"].dtype == jnp.float32 and params["count"].shape == ()
    tmod.train()
    for x in batches:
        tmod(torch.from_numpy(np.moveaxis(x, -1, 1).copy()))
        _, updates = li.apply(layer, params, jnp.asarray(x), train=True, mutable=True)
        params = li.merge(params, updates)
    assert int(params["count"]) == int(tmod.num_batches_tracked) == 3
    np.testing.assert_allclose(params["mean"], tmod.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(params["var"], tmod.running_var.numpy(), rtol=1e-5, atol=1e-6)
    x0 = jnp.asarray(batches[0])
    params, _ = from_torch_state_dict(layer, tmod.state_dict(), x0)
    assert int(params["count"]) == 3
    fresh = nn.BatchNorm1d(3, momentum=None)
    fresh.load_state_dict(to_torch_state_dict(layer, params, x0))
    assert int(fresh.num_batches_tracked) == 3


def test_instance_norm_refuses_momentum_none():
    with pytest.raises(
        li.errors.ConfigureLayerError,
        match=r"InstanceNorm\(momentum=None\): PyTorch's InstanceNorm then never updates",
    ):
        li.InstanceNorm(momentum=None, track_running_stats=True)
