"""``li.channels_first``: PyTorch's layout for a whole model, and the hint when a sample looks
channels-first but the layers read it channels-last."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from style_models import styles

import lazyinit as li

SWITCHED = (li.Conv, li.ConvTranspose, li.BatchNorm, li.InstanceNorm, li.GroupNorm)
SWITCHED += (li.MaxPool, li.AvgPool, li.GlobalAvgPool)
HINT = "li.channels_first(model)"


class Stem(li.Layer):
    """A layer of your own: children as fields, and a ``channels_first`` field of its own."""

    conv: li.Layer = li.Conv(4, 3, padding=1)
    norm: li.Layer = li.GroupNorm(2)
    channels_first: bool = False

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        h = self.norm(params["norm"], self.conv(params["conv"], x))
        return jnp.mean(h, axis=1 if self.channels_first else -1, keepdims=True) + h


def cnn() -> li.Sequential:
    return li.Sequential(
        [
            Stem(),
            li.BatchNorm(),
            li.nn.relu,
            li.Residual([li.Conv(4, 3, padding=1), li.InstanceNorm(affine=True)]),
            li.Parallel([li.MaxPool(2), li.AvgPool(2)], merge=jnp.add),
            li.ConvTranspose(6, 2, stride=2),
            li.Repeat(li.Conv(6, 1), 2),
            li.GlobalAvgPool(),
            li.LayerNorm(),
            li.Linear(3),
        ]
    )


def _layers(model: Any) -> list[Any]:
    """Every dataclass in ``model``, depth first."""
    import dataclasses

    if isinstance(model, list | tuple):
        return [layer for v in model for layer in _layers(v)]
    if not dataclasses.is_dataclass(model) or isinstance(model, type):
        return []
    return [model, *(x for f in dataclasses.fields(model) for x in _layers(getattr(model, f.name)))]


def test_every_layer_with_the_option_is_switched_and_nothing_else_changes():
    model = cnn()
    switched = li.channels_first(model)
    options = [layer for layer in _layers(switched) if hasattr(layer, "channels_first")]
    assert {type(layer) for layer in options} == {*SWITCHED, Stem}
    assert all(layer.channels_first is True for layer in options)
    assert not any(getattr(layer, "channels_first", False) for layer in _layers(model))
    assert switched.layers[-1] is model.layers[-1]  # a Linear has no option: the same object
    assert li.channels_first(switched) == switched


def test_the_switched_model_on_pytorch_layout_equals_the_model_on_channels_last(key):
    model, x = cnn(), jax.random.normal(key, (2, 8, 8, 3))
    params = li.dry_run(model, key, x)
    torch_like = li.channels_first(model)
    x_first = jnp.moveaxis(x, -1, 1)
    assert jax.tree.map(jnp.shape, li.dry_run(torch_like, key, x_first)) == jax.tree.map(
        jnp.shape, params
    )
    np.testing.assert_allclose(torch_like(params, x_first), model(params, x), rtol=2e-5, atol=2e-5)


def test_it_shares_the_walk_of_mixed_precision():
    both = li.mixed_precision(li.channels_first(cnn()))
    conv = both.layers[3].layer.layers[0]
    assert conv.channels_first is True and conv.compute_dtype == jnp.bfloat16


@pytest.mark.parametrize("style", ["fields", "wrapper", "inline"])
def test_style_models(style, key):
    """Children in fields (and behind a wrapper) are switched; children built inside
    ``__call__`` are out of reach, and ``li.describe`` points at them."""
    model = li.channels_first(styles(li.Conv(16, 3, padding=1))[style])
    x = jnp.ones((2, 3, 8, 8))
    params = li.dry_run(model, key, x)
    body = params["body"]["kernel"].shape
    described = li.describe(model, x)
    if style == "inline":
        assert body == (3, 3, 8, 16)  # in_channels from the last axis: 8
        assert "8 channels from the last axis of (2, 3, 8, 8)" in described
    else:
        assert body == (3, 3, 3, 16)
        assert "channels-first sample?" not in described


# ---------------------------------------------------------------------------
# A channels-first sample read as channels-last: the errors that follow say so.


def _pytorch_cnn() -> li.Sequential:
    """A CNN as a PyTorch user writes it, without channels_first: fine on (N, H, W, C)."""
    return li.Sequential(
        [
            li.Conv(16, 3, padding=1),
            li.BatchNorm(),
            li.nn.relu,
            li.MaxPool(2),
            li.Conv(32, 3),
            li.nn.relu,
            li.GlobalAvgPool(),
            li.Linear(10),
        ]
    )


FIRST_CONV = re.escape(
    "The sample may be channels-first: Conv at '0' read its input (2, 3, 32, 32) as "
    "(N, ..., C), taking 32 channels from the last axis (the size of axis 2 too) while axis 1 "
    "holds only 3. For PyTorch's (N, C, ...) layout, call model = li.channels_first(model)."
)


def test_an_error_in_a_later_layer_names_the_layer_that_misread_the_sample(key):
    model, x = _pytorch_cnn(), jnp.ones((2, 3, 32, 32))
    with pytest.raises(li.errors.InferShapeError, match=r"^Conv at '4': the dilated kernel"):
        li.dry_run(model, key, x)
    for _ in range(2):  # the second time, the first layers come from the trace cache
        with pytest.raises(li.errors.InferShapeError, match=FIRST_CONV) as e:
            li.dry_run(model, key, x)
        assert str(e.value).endswith("call model = li.channels_first(model).")
    li.channels_first(model)  # ... and the fix works:
    assert li.trace(li.channels_first(model), x).outputs.shape == (2, 10)
    assert li.trace(model, jnp.ones((2, 32, 32, 3))).outputs.shape == (2, 10)


def test_the_hint_does_not_depend_on_what_was_traced_before(key):
    li.clear_cache()
    li.trace(li.Conv(16, 3, padding=1), jnp.ones((2, 3, 32, 32)))  # cached alone first
    with pytest.raises(li.errors.InferShapeError, match=FIRST_CONV):
        li.trace(_pytorch_cnn(), jnp.ones((2, 3, 32, 32)))


def test_the_layer_that_misreads_may_fail_itself(key):
    expected = "Conv at '<root>': the dilated kernel (5 along spatial dim 0) is larger"
    with pytest.raises(li.errors.InferShapeError, match=re.escape(expected)) as e:
        li.dry_run(li.Conv(8, 5), key, jnp.ones((2, 3, 32, 32)))
    assert "Conv at '<root>' read its input (2, 3, 32, 32) as (N, ..., C)" in str(e.value)


@pytest.mark.parametrize(
    "model,match",
    [
        (li.Residual([li.Conv(8, 3, padding=1)]), "Residual at '<root>': the wrapped layer maps"),
        (  # jax's own error (a sum of (2, 3, 32, 8) and (2, 3, 32, 32)), located
            li.Parallel([li.Conv(8, 3, padding=1), li.nn.relu], merge=jnp.add),
            r"Parallel at '<root>' failed on inputs of shape \(2, 3, 32, 32\): TypeError",
        ),
    ],
)
def test_an_error_outside_the_conv_layers_gets_the_hint_too(model, match, key):
    with pytest.raises(li.errors.InferShapeError, match=match) as e:
        li.dry_run(model, key, jnp.ones((2, 3, 32, 32)))
    assert re.search(r"Conv at '(layer/)?0' read its input \(2, 3, 32, 32\)", str(e.value))


def test_a_layer_of_your_own_with_the_option_is_read_the_same_way(key):
    model = li.Sequential([Stem(), li.Conv(4, 5)])
    with pytest.raises(li.errors.InferShapeError, match="Stem at '0' read its input") as e:
        li.dry_run(model, key, jnp.ones((2, 1, 4, 4)))
    assert str(e.value).startswith("Conv at '1': the dilated kernel (5 along spatial dim 0)")


@pytest.mark.parametrize(
    "shape",
    [
        (2, 32, 32, 3),  # channels-last
        (2, 4, 4, 4),  # axis 1 is not smaller than the channels
        (2, 3, 30, 32),  # no spatial size equals the channel count
        (2, 8, 32, 32),  # axis 1 is too large for image channels
        (2, 3, 32),  # one spatial dim: nothing to compare
    ],
)
def test_no_hint_where_the_pattern_is_absent(shape, key):
    model = li.Sequential([li.Conv(8, 3, padding=1), li.Conv(8, 99)])
    with pytest.raises(li.errors.InferShapeError, match="is larger than the padded input") as e:
        li.dry_run(model, key, jnp.ones(shape))
    assert HINT not in str(e.value).replace(
        "li.channels_first(model) sets it on every layer", ""
    )  # the layers' own standing advice names it too


def test_no_hint_once_the_model_is_channels_first(key):
    model = li.channels_first(li.Sequential([li.Conv(8, 3, padding=1), li.Conv(8, 99)]))
    with pytest.raises(li.errors.InferShapeError) as e:
        li.dry_run(model, key, jnp.ones((2, 3, 32, 32)))
    assert "may be channels-first" not in str(e.value)
