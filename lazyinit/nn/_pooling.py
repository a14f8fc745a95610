"""Pooling: ``MaxPool``, ``AvgPool`` (PyTorch's ``MaxPool{1,2,3}d``/``AvgPool{1,2,3}d``) and ``GlobalAvgPool``.

Windows slide over the spatial axes of ``(N, *spatial, C)`` inputs, or
``(N, C, *spatial)`` with ``channels_first=True``. As in PyTorch, ``stride``
defaults to the window and ``padding`` to 0; ``'SAME'``/``'VALID'`` work too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._layer import Layer
from ._checks import (
    as_ints,
    as_padding,
    expect_min_rank,
    expect_window_fits,
    explicit_pads,
    known_rank,
    spatial_dims,
    spatial_shape,
    tuple_of,
)

__all__ = ["MaxPool", "AvgPool", "GlobalAvgPool"]


def _check_options(layer: Any) -> None:
    object.__setattr__(layer, "window", as_ints(layer, "window", layer.window))
    if layer.stride is not None:
        object.__setattr__(layer, "stride", as_ints(layer, "stride", layer.stride))
    object.__setattr__(layer, "padding", as_padding(layer, layer.padding))


def _geometry(layer: Any, x: Any) -> tuple[tuple[int, ...], tuple[int, ...], Any]:
    """Window, strides and (low, high) pads over every axis of ``x``, batch and channels included."""
    n = spatial_dims(layer, layer.window, x, "window")
    window = tuple_of(layer.window, n)
    stride = window if layer.stride is None else tuple_of(layer.stride, n)
    pads: Sequence[tuple[int, int]]
    if isinstance(layer.padding, str):
        pads = jax.lax.padtype_to_pads(spatial_shape(layer, x), window, stride, layer.padding)
    else:
        pads = explicit_pads(layer, layer.padding, n)

    def full(spatial: tuple, fill: Any) -> tuple:
        return (fill, fill, *spatial) if layer.channels_first else (fill, *spatial, fill)

    return full(window, 1), full(stride, 1), full(tuple(pads), (0, 0))


def _pool_specs(layer: Any, x: Any) -> dict:
    if known_rank(x) is not None and layer.padding != "SAME":
        n = spatial_dims(layer, layer.window, x, "window")
        pads = explicit_pads(layer, 0 if layer.padding == "VALID" else layer.padding, n)
        expect_window_fits(layer, x, tuple_of(layer.window, n), pads, "window")
    return {}


class MaxPool(Layer):
    """The maximum over each window; padding counts as ``-inf``.

    Examples:
        >>> import jax.numpy as jnp, lazyinit as li
        >>> li.MaxPool(2)({}, jnp.ones((1, 8, 8, 3))).shape
        (1, 4, 4, 3)
    """

    window: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = None
    padding: str | int | tuple[Any, ...] = 0
    channels_first: bool = False

    def __post_init__(self) -> None:
        _check_options(self)

    specs = _pool_specs

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        window, stride, pads = _geometry(self, x)
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, stride, pads)


class AvgPool(Layer):
    """The mean over each window; ``count_include_pad`` as in PyTorch (padding counts as zeros).

    Examples:
        >>> import jax.numpy as jnp, lazyinit as li
        >>> li.AvgPool(3, stride=1, padding=1)({}, jnp.ones((1, 5, 2))).shape
        (1, 5, 2)
    """

    window: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = None
    padding: str | int | tuple[Any, ...] = 0
    count_include_pad: bool = True
    channels_first: bool = False

    def __post_init__(self) -> None:
        _check_options(self)

    specs = _pool_specs

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        window, stride, pads = _geometry(self, x)
        total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, stride, pads)
        if self.count_include_pad:
            return total / np.prod(window)
        ones = jnp.ones(x.shape, x.dtype)
        return total / jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, stride, pads)


class GlobalAvgPool(Layer):
    """The mean over all spatial axes: ``(N, *spatial, C) -> (N, C)`` (PyTorch's ``AdaptiveAvgPool(1)`` + flatten).

    Examples:
        >>> import jax.numpy as jnp, lazyinit as li
        >>> li.GlobalAvgPool()({}, jnp.ones((2, 4, 4, 8))).shape
        (2, 8)
    """

    channels_first: bool = False

    def specs(self, x: Any) -> dict:
        expect_min_rank(self, x, 3, "batch, spatial..., channels")
        return {}

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        over = tuple(range(2, x.ndim)) if self.channels_first else tuple(range(1, x.ndim - 1))
        return jnp.mean(x, over)
