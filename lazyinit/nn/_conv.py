"""``Conv``: PyTorch's ``LazyConv{1,2,3}d``, flax's ``Conv``; helpers shared with ``ConvTranspose``.

Kernels are ``(*kernel_size, in_channels // groups, out_channels)`` (flax's
HWIO; PyTorch's ``Conv`` weight is ``(out, in // groups, *kernel_size)``).
Inputs are channels-last, ``(N, *spatial, C)``, unless ``channels_first=True``
asks for PyTorch's ``(N, C, *spatial)``; the kernel layout is the same in both.
The number of spatial dims is ``len(kernel_size)``, or the input's rank - 2
when ``kernel_size`` is an int.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .. import initializers
from .._layer import Layer
from .._spec import Param
from .._typing import Initializer
from ..errors import ConfigureLayerError
from ._checks import (
    as_ints,
    as_padding,
    channel_axis,
    expect_divides,
    expect_window_fits,
    explicit_pads,
    spatial_dims,
    tuple_of,
)
from ._precision import compute_in

__all__ = ["Conv"]

Padding = str | int | tuple[int | tuple[int, int], ...]
_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def check_options(layer: Any) -> None:
    """Normalizes list options to tuples (so layers hash) and rejects impossible values."""
    for name in ("kernel_size", "stride", "dilation"):
        object.__setattr__(layer, name, as_ints(layer, name, getattr(layer, name)))
    object.__setattr__(layer, "padding", as_padding(layer, layer.padding))
    as_ints(layer, "out_channels", layer.out_channels)
    as_ints(layer, "groups", layer.groups)
    if layer.out_channels % layer.groups:
        raise ConfigureLayerError(
            f"{type(layer).__name__}: groups={layer.groups} does not divide "
            f"out_channels={layer.out_channels}. Choose out_channels a multiple of groups."
        )


def dimension_numbers(n: int, channels_first: bool) -> tuple[str, str, str]:
    spatial = "DHW"[3 - n :]
    lhs = "NC" + spatial if channels_first else "N" + spatial + "C"
    return lhs, spatial + "IO", lhs


def kernel_specs(layer: Any, x: Any) -> dict[str, Param]:
    n = spatial_dims(layer, layer.kernel_size, x, "kernel_size")
    c = x.shape[channel_axis(layer, x)]
    expect_divides(layer, x, layer.groups, c, "input channels", "groups")
    shape = (*tuple_of(layer.kernel_size, n), c // layer.groups, layer.out_channels)
    specs = {"kernel": Param(shape, layer.kernel_init, axes=(None,) * n + layer.axes)}
    if layer.use_bias:
        specs["bias"] = Param((layer.out_channels,), layer.bias_init, axes=layer.axes[-1:])
    return specs


def add_bias(layer: Any, params: Any, y: jax.Array) -> jax.Array:
    if not layer.use_bias:
        return y
    shape = [1] * y.ndim
    shape[channel_axis(layer, y)] = -1
    return y + jnp.reshape(params["bias"], shape)


def effective_window(kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, ...]:
    return tuple((k - 1) * d + 1 for k, d in zip(kernel, dilation))


class Conv(Layer):
    """An n-d convolution (n = 1, 2, 3) whose ``in_channels`` comes from the input.

    ``padding`` is PyTorch's: an int or one int or ``(low, high)`` pair per
    spatial dim, default 0; or ``'SAME'`` / ``'VALID'`` (any case). As in
    PyTorch, ``padding_mode`` pads with ``'zeros'``, or ``'reflect'``,
    ``'replicate'`` or ``'circular'`` copies of the input.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> conv = li.Conv(8, (3, 3), padding=1)
        >>> params = li.dry_run(conv, jax.random.key(0), jnp.ones((2, 16, 16, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'bias': (8,), 'kernel': (3, 3, 3, 8)}
        >>> conv(params, jnp.ones((2, 16, 16, 3))).shape
        (2, 16, 16, 8)
    """

    out_channels: int
    kernel_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: Padding = 0
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    use_bias: bool = True
    channels_first: bool = False
    padding_mode: str = "zeros"
    kernel_init: Initializer = initializers.lecun_normal()
    bias_init: Initializer = initializers.zeros
    axes: tuple[str | None, str | None] = ("embed", "mlp")
    compute_dtype: Any = None  # what to compute in (flax's ``dtype``); None: as given

    def __post_init__(self) -> None:
        check_options(self)
        if self.padding_mode not in _PAD_MODES:
            raise ConfigureLayerError(
                f"Conv: `padding_mode`={self.padding_mode!r} must be one of "
                f"{', '.join(map(repr, _PAD_MODES))}."
            )

    def _pads(self, n: int) -> Any:
        if isinstance(self.padding, str):
            return self.padding
        return explicit_pads(self, self.padding, n)

    def _pad_input(self, x: jax.Array, n: int) -> tuple[jax.Array, Any]:
        """Pads ``x`` itself for the non-zero padding modes; returns it and the conv's padding."""
        pads = self._pads(n)
        if self.padding_mode == "zeros":
            return x, pads
        if isinstance(pads, str):
            window = effective_window(tuple_of(self.kernel_size, n), tuple_of(self.dilation, n))
            spatial = x.shape[2:] if self.channels_first else x.shape[1:-1]
            pads = jax.lax.padtype_to_pads(spatial, window, tuple_of(self.stride, n), pads)
        full = [(0, 0), (0, 0), *pads] if self.channels_first else [(0, 0), *pads, (0, 0)]
        return jnp.pad(x, full, mode=_PAD_MODES[self.padding_mode]), "VALID"

    def specs(self, x: Any) -> dict[str, Param]:
        specs = kernel_specs(self, x)
        n = len(specs["kernel"].shape) - 2
        if not isinstance(self.padding, str) or self.padding == "VALID":
            pads = explicit_pads(self, 0 if self.padding == "VALID" else self.padding, n)
            window = effective_window(tuple_of(self.kernel_size, n), tuple_of(self.dilation, n))
            expect_window_fits(self, x, window, pads, "dilated kernel")
        return specs

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        params, x = compute_in(self.compute_dtype, params, x)
        n = params["kernel"].ndim - 2
        x, pads = self._pad_input(x, n)
        y = jax.lax.conv_general_dilated(
            x,
            params["kernel"],
            window_strides=tuple_of(self.stride, n),
            padding=pads,
            rhs_dilation=tuple_of(self.dilation, n),
            dimension_numbers=dimension_numbers(n, self.channels_first),
            feature_group_count=self.groups,
        )
        return add_bias(self, params, y)
