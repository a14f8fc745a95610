"""``ConvTranspose(...)(params, x, output_size=...)`` as PyTorch's ``ConvTranspose*d(x, output_size=...)``.

A stride above 1 maps several input sizes to one output size; ``output_size``
picks the ``output_padding`` of the call, in the dry run and in calls alike.
Each case runs PyTorch with the same weights and compares the outputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from layer_helpers import assert_close, channels_first, channels_last, from_torch, randomize

import lazyinit as li

torch = pytest.importorskip("torch", reason="PyTorch parity needs torch (the test extra)")
nn = torch.nn

TORCH_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _rand(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize(
    "n,size,stride,padding,dilation,output_size",
    [
        (1, 5, 2, 1, 1, (10,)),  # one more than the smallest, 9
        (1, 5, 3, 0, 2, (17,)),  # the largest, min + stride - 1
        (2, 4, 2, 1, 1, (8, 7)),  # per-dimension choices
        (2, 4, (3, 2), 0, 1, (12, 9)),
        (3, 3, 2, 1, 1, (6, 5, 6)),
    ],
)
def test_matches_torch(n, size, stride, padding, dilation, output_size):
    x = _rand(2, *(size,) * n, 3)  # channels-last
    layer = li.ConvTranspose(4, 3, stride=stride, padding=padding, dilation=dilation)
    tmod = TORCH_CONV_T[n](3, 4, 3, stride=stride, padding=padding, dilation=dilation)
    randomize(tmod)
    with torch.no_grad():
        out = tmod(torch.from_numpy(channels_first(x)), output_size=output_size)
    want = channels_last(out.numpy())
    planned = li.dry_run(layer, jax.random.key(0), jnp.asarray(x), output_size=output_size)
    params = from_torch(tmod)
    assert jax.tree.map(jnp.shape, planned) == jax.tree.map(jnp.shape, params)
    got = layer(params, jnp.asarray(x), output_size=output_size)
    assert got.shape == (2, *output_size, 4)
    assert_close(got, want, 1e-5)
    traced = li.trace(layer, jax.ShapeDtypeStruct(x.shape, x.dtype), output_size=output_size)
    assert traced.outputs.shape == got.shape


def test_whole_output_shape_and_channels_first():
    """A full shape (N, C, *spatial) in the layer's layout works, as torch's does."""
    x = _rand(1, 2, 5, 5)
    layer = li.ConvTranspose(3, 3, stride=2, padding=1, channels_first=True)
    tmod = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1)
    randomize(tmod)
    with torch.no_grad():
        want = tmod(torch.from_numpy(x), output_size=(1, 3, 10, 9)).numpy()
    got = layer(from_torch(tmod), jnp.asarray(x), output_size=(1, 3, 10, 9))
    assert_close(got, want, 1e-5)


def test_overrides_the_layers_output_padding():
    """As in torch, ``output_size`` decides; the layer's own ``output_padding`` is the default."""
    x = jnp.ones((1, 4, 4, 1))
    layer = li.ConvTranspose(1, 3, stride=2, padding=1, output_padding=1)
    params = li.dry_run(layer, jax.random.key(0), x)
    assert layer(params, x).shape == (1, 8, 8, 1)
    assert layer(params, x, output_size=(7, 7)).shape == (1, 7, 7, 1)


def test_inside_a_model_through_the_dry_run():
    model = li.Sequential([li.Conv(4, 3, stride=2, padding=1), li.ConvTranspose(2, 3, 2, 1)])
    x = jnp.ones((1, 7, 7, 3))
    params = li.dry_run(model, jax.random.key(0), x, output_size=(7, 7))
    assert model(params, x, output_size=(7, 7)).shape == (1, 7, 7, 2)
    assert model(params, x, output_size=(8, 8)).shape == (1, 8, 8, 2)


def test_out_of_range_names_the_layer_and_the_valid_range():
    model = li.Sequential([li.ConvTranspose(2, 3, stride=2, padding=1)])
    x = jnp.ones((1, 5, 5, 1))
    with pytest.raises(
        li.errors.InferShapeError,
        match=r"'0'.*ConvTranspose: requested output_size \(11, 9\).*valid sizes range from "
        r"\(9, 9\) to \(10, 10\)",
    ):
        li.dry_run(model, jax.random.key(0), x, output_size=(11, 9))
    params = li.dry_run(model, jax.random.key(0), x)
    with pytest.raises(
        li.errors.InferShapeError, match=r"ConvTranspose: requested output_size \(8, 9\)"
    ):
        model(params, x, output_size=(8, 9))


@pytest.mark.parametrize(
    "layer,output_size,match",
    [
        (li.ConvTranspose(2, 3, 2), (9,), r"`output_size`=\(9,\) must hold 2 ints .* or 4"),
        (li.ConvTranspose(2, 3, 2), (9.0, 9.0), r"must hold 2 ints"),
        (li.ConvTranspose(2, 3, 2, "SAME"), (10, 10), r"needs integer padding, got padding='SAME'"),
    ],
)
def test_bad_output_size(layer, output_size, match):
    with pytest.raises(li.errors.InferShapeError, match=match):
        li.dry_run(layer, jax.random.key(0), jnp.ones((1, 5, 5, 1)), output_size=output_size)
