"""``LayerNorm``, ``RMSNorm`` and ``GroupNorm``: normalization without running statistics."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from .. import initializers
from .._layer import Layer
from .._spec import Param
from ..errors import ConfigureLayerError
from ._checks import channel_axis, expect_divides, expect_min_rank
from ._precision import compute_in

__all__ = ["LayerNorm", "RMSNorm", "GroupNorm"]


def _affine_specs(layer: Any, channels: Any, scale: bool, bias: bool) -> dict[str, Param]:
    specs = {}
    if scale:
        specs["scale"] = Param((channels,), initializers.ones, axes=layer.axes)
    if bias:
        specs["bias"] = Param((channels,), initializers.zeros, axes=layer.axes)
    return specs


def _along_last(v: jax.Array, ndim: int) -> jax.Array:
    return jnp.reshape(v, (1,) * (ndim - 1) + (-1,))


# The normalizations are jit-compiled functions of their own: the boundary makes XLA keep
# the normalized activations for the backward pass instead of copying the mean and variance
# chains into every backward fusion, which more than halves the gradient's HLO and speeds up
# compiling a GPT train step by about 1.5x (see benchmarks/README.md). Same maths.
@functools.partial(jax.jit, static_argnames="eps")
def _standardize(x: jax.Array, eps: float) -> jax.Array:
    mean = jnp.mean(x, -1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(jnp.var(x, -1, keepdims=True) + eps)


@functools.partial(jax.jit, static_argnames="eps")
def _rms_normalize(x: jax.Array, eps: float) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), -1, keepdims=True) + eps)


class LayerNorm(Layer):
    """Normalizes over the last axis (PyTorch's ``LayerNorm(x.shape[-1])``, flax's ``LayerNorm``).

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> params = li.dry_run(li.LayerNorm(), jax.random.key(0), jnp.ones((2, 5, 8)))
        >>> jax.tree.map(jnp.shape, params)
        {'bias': (8,), 'scale': (8,)}
    """

    eps: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    axes: tuple[str | None] = ("embed",)
    compute_dtype: Any = None  # what to compute in (flax's ``dtype``); None: as given

    def specs(self, x: Any) -> dict[str, Param]:
        expect_min_rank(self, x, 1, "..., features")
        return _affine_specs(self, x.shape[-1], self.use_scale, self.use_bias)

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        params, x = compute_in(self.compute_dtype, params, x)
        y = _standardize(x, self.eps)
        y = y * _along_last(params["scale"], y.ndim) if self.use_scale else y
        return y + _along_last(params["bias"], y.ndim) if self.use_bias else y


class RMSNorm(Layer):
    """``x / sqrt(mean(x**2) + eps) * scale`` over the last axis (PyTorch's and Llama's ``RMSNorm``).

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> params = li.dry_run(li.RMSNorm(), jax.random.key(0), jnp.ones((2, 5, 8)))
        >>> jax.tree.map(jnp.shape, params)
        {'scale': (8,)}
    """

    eps: float = 1e-6
    use_scale: bool = True
    axes: tuple[str | None] = ("embed",)
    compute_dtype: Any = None  # what to compute in (flax's ``dtype``); None: as given

    def specs(self, x: Any) -> dict[str, Param]:
        expect_min_rank(self, x, 1, "..., features")
        return _affine_specs(self, x.shape[-1], self.use_scale, False)

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        params, x = compute_in(self.compute_dtype, params, x)
        y = _rms_normalize(x, self.eps)
        return y * _along_last(params["scale"], y.ndim) if self.use_scale else y


class GroupNorm(Layer):
    """Normalizes each sample over groups of ``channels // num_groups`` channels and all spatial axes.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> params = li.dry_run(li.GroupNorm(2), jax.random.key(0), jnp.ones((2, 4, 4, 6)))
        >>> jax.tree.map(jnp.shape, params)
        {'bias': (6,), 'scale': (6,)}
    """

    num_groups: int
    eps: float = 1e-5
    affine: bool = True
    channels_first: bool = False
    axes: tuple[str | None] = ("embed",)
    compute_dtype: Any = None  # what to compute in (flax's ``dtype``); None: as given

    def __post_init__(self) -> None:
        if not isinstance(self.num_groups, int) or self.num_groups < 1:
            raise ConfigureLayerError(
                f"GroupNorm: `num_groups`={self.num_groups!r} must be a positive int."
            )

    def specs(self, x: Any) -> dict[str, Param]:
        expect_min_rank(self, x, 2, "batch, ..., channels")
        c = x.shape[channel_axis(self, x)]
        expect_divides(self, x, self.num_groups, c, "channels", "num_groups")
        return _affine_specs(self, c, self.affine, self.affine)

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        params, x = compute_in(self.compute_dtype, params, x)
        h = jnp.moveaxis(x, 1, -1) if self.channels_first else x
        c = h.shape[-1]
        g = jnp.reshape(h, (*h.shape[:-1], self.num_groups, c // self.num_groups))
        over = (*range(1, g.ndim - 2), g.ndim - 1)
        mean, var = jnp.mean(g, over, keepdims=True), jnp.var(g, over, keepdims=True)
        h = jnp.reshape((g - mean) * jax.lax.rsqrt(var + self.eps), h.shape)
        if self.affine:
            h = h * _along_last(params["scale"], h.ndim) + _along_last(params["bias"], h.ndim)
        return jnp.moveaxis(h, -1, 1) if self.channels_first else h
