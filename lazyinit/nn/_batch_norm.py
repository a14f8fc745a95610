"""``BatchNorm`` and ``InstanceNorm``: PyTorch's ``LazyBatchNorm{1,2,3}d`` and ``LazyInstanceNorm{1,2,3}d``.

Both follow PyTorch's maths: ``momentum`` weighs the new statistic
(``running = (1 - momentum) * running + momentum * batch``, flax's
``momentum`` is ``1 -`` this one) and the running variance is the unbiased
one, while the output is normalized with the biased one. ``BatchNorm`` counts
its training batches in a ``count`` buffer, as PyTorch's ``num_batches_tracked``
does; with ``momentum=None`` (PyTorch's cumulative average) the ``n``-th
training batch weighs ``1 / n``. ``InstanceNorm`` counts nothing (PyTorch's
``num_batches_tracked`` of one stays 0). The count is a floating-point buffer
like the statistics, on purpose: ``jax.grad`` of a loss over the whole params
(buffers included, masked for the optimizer by ``li.labels``) refuses integer
leaves. In float32 it is exact up to 2**24 (16.7 million) batches; keep it float32
if the dry run's ``dtype=`` stores the rest in a 16-bit type. The running
statistics are buffers (``li.Param(..., trainable=False)``, named ``mean``,
``var`` and ``count``), updated only in a training-mode call under
``li.apply(..., mutable=True)``; the affine ones are ``scale`` and ``bias``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .. import initializers
from .._buffers import update_buffers
from .._layer import Layer
from .._spec import Param
from ..errors import ConfigureLayerError
from ._checks import channel_axis, expect_min_rank
from ._precision import compute_in

__all__ = ["BatchNorm", "InstanceNorm"]


def norm_specs(layer: Any, channels: Any, stats: bool, count: bool) -> dict[str, Param]:
    """``scale``/``bias`` if ``layer.affine``; ``mean``/``var`` buffers if ``stats``, and a
    ``count`` of training batches if also ``count``."""
    specs = {}
    if layer.affine:
        specs["scale"] = Param((channels,), initializers.ones, axes=layer.axes)
        specs["bias"] = Param((channels,), initializers.zeros, axes=layer.axes)
    if stats:
        specs["mean"] = Param((channels,), initializers.zeros, axes=layer.axes, trainable=False)
        specs["var"] = Param((channels,), initializers.ones, axes=layer.axes, trainable=False)
        if count:
            specs["count"] = Param((), initializers.zeros, axes=(), trainable=False)
    return specs


def normalize(layer: Any, params: Any, x: jax.Array, mean: Any, var: Any, axis: int) -> jax.Array:
    """``(x - mean) / sqrt(var + eps)``, then the affine map, with stats broadcast along ``axis``."""
    shape = [1] * x.ndim
    shape[axis] = -1
    if mean.ndim == 1:
        mean, var = jnp.reshape(mean, shape), jnp.reshape(var, shape)
    y = (x - mean) * jax.lax.rsqrt(var + layer.eps)
    if layer.affine:
        y = y * jnp.reshape(params["scale"], shape) + jnp.reshape(params["bias"], shape)
    return y


def _running(layer: Any, params: Any, mean: jax.Array, var: jax.Array, n: int) -> None:
    """Hands the PyTorch-style running averages (unbiased variance) to ``update_buffers``."""
    counted = {"count": params["count"] + 1} if "count" in params else {}
    if layer.momentum is None:  # a cumulative average: batch n weighs 1 / n
        m = 1.0 / counted["count"].astype(mean.dtype)
    else:
        m = layer.momentum
    unbiased = var * (n / max(n - 1, 1))
    new_mean = (1 - m) * params["mean"] + m * mean
    new_var = (1 - m) * params["var"] + m * unbiased
    update_buffers(
        params,
        mean=jax.lax.stop_gradient(new_mean),
        var=jax.lax.stop_gradient(new_var),
        **counted,
    )


class BatchNorm(Layer):
    """Normalizes each channel over the batch and spatial axes; channels come from the input.

    ``train=True`` normalizes with the batch's statistics and updates the
    running ones (call it with ``li.apply(..., mutable=True)``); ``train=False``
    uses the running ones, or the batch's when ``track_running_stats=False``.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> bn = li.BatchNorm()
        >>> params = li.dry_run(bn, jax.random.key(0), jnp.ones((4, 8, 8, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'bias': (3,), 'count': (), 'mean': (3,), 'scale': (3,), 'var': (3,)}
        >>> out, updates = li.apply(bn, params, jnp.ones((4, 8, 8, 3)), train=True, mutable=True)
        >>> sorted(updates), int(updates["count"])
        (['count', 'mean', 'var'], 1)
    """

    momentum: float | None = 0.1
    eps: float = 1e-5
    affine: bool = True
    track_running_stats: bool = True
    channels_first: bool = False
    axes: tuple[str | None] = ("embed",)
    compute_dtype: Any = None  # the output's dtype (flax's ``dtype``); statistics stay precise

    def specs(self, x: Any, *, train: bool = False) -> dict[str, Param]:
        expect_min_rank(self, x, 2, "batch, ..., channels")
        stats = self.track_running_stats
        return norm_specs(self, x.shape[channel_axis(self, x)], stats, stats)

    def __call__(self, params: Any, x: jax.Array, *, train: bool = False) -> jax.Array:
        axis = channel_axis(self, x) % x.ndim
        if train or not self.track_running_stats:
            over = tuple(i for i in range(x.ndim) if i != axis)
            mean, var = jnp.mean(x, over), jnp.var(x, over)
            if train and self.track_running_stats:
                _running(self, params, mean, var, x.size // x.shape[axis])
        else:
            mean, var = params["mean"], params["var"]
        return compute_in(self.compute_dtype, None, normalize(self, params, x, mean, var, axis))[1]


class InstanceNorm(Layer):
    """Normalizes each channel of each sample over its spatial axes, as PyTorch's ``InstanceNorm``.

    ``InstanceNorm{1,2,3}d``'s defaults: no affine parameters and no running
    statistics. PyTorch's ``LazyInstanceNorm{1,2,3}d`` differ (they are affine
    and track running statistics by default, as BatchNorm does); for those,
    pass ``affine=True, track_running_stats=True``. With
    ``track_running_stats=True``, training updates them with the batch average
    of the per-sample statistics and evaluation normalizes with them.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> norm = li.InstanceNorm(affine=True)
        >>> params = li.dry_run(norm, jax.random.key(0), jnp.ones((2, 10, 4)))
        >>> jax.tree.map(jnp.shape, params)
        {'bias': (4,), 'scale': (4,)}
    """

    momentum: float = 0.1
    eps: float = 1e-5
    affine: bool = False
    track_running_stats: bool = False
    channels_first: bool = False
    axes: tuple[str | None] = ("embed",)
    compute_dtype: Any = None  # the output's dtype (flax's ``dtype``); statistics stay precise

    def __post_init__(self) -> None:
        if self.momentum is None:
            raise ConfigureLayerError(
                "InstanceNorm(momentum=None): PyTorch's InstanceNorm then never updates its "
                "running statistics. Pass a float momentum (BatchNorm takes None for a "
                "cumulative average)."
            )

    def specs(self, x: Any, *, train: bool = False) -> dict[str, Param]:
        expect_min_rank(self, x, 3, "batch, spatial..., channels")
        return norm_specs(self, x.shape[channel_axis(self, x)], self.track_running_stats, False)

    def __call__(self, params: Any, x: jax.Array, *, train: bool = False) -> jax.Array:
        axis = channel_axis(self, x) % x.ndim
        if train or not self.track_running_stats:
            over = tuple(i for i in range(1, x.ndim) if i != axis)
            mean = jnp.mean(x, over, keepdims=True)
            var = jnp.var(x, over, keepdims=True)
            if train and self.track_running_stats:
                n = x.size // (x.shape[0] * x.shape[axis])
                batch_mean = jnp.mean(
                    jnp.reshape(jnp.moveaxis(mean, axis, -1), (-1, x.shape[axis])), 0
                )
                batch_var = jnp.mean(
                    jnp.reshape(jnp.moveaxis(var, axis, -1), (-1, x.shape[axis])), 0
                )
                _running(self, params, batch_mean, batch_var, n)
        else:
            mean, var = params["mean"], params["var"]
        return compute_in(self.compute_dtype, None, normalize(self, params, x, mean, var, axis))[1]
