"""``ConvTranspose``: PyTorch's ``LazyConvTranspose{1,2,3}d``, flax's ``ConvTranspose``.

Same kernel layout and options as :class:`~lazyinit.Conv` (see
:mod:`lazyinit.nn._conv`), plus ``output_padding``. The transposed convolution
is computed as a convolution of the stride-dilated input with padding
``dilation * (k - 1) - padding`` on each side, which is what both libraries do.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from .. import initializers
from .._layer import Layer
from .._spec import Param
from .._typing import Initializer
from ..errors import ConfigureLayerError, InferShapeError
from ._checks import explicit_pads, known_rank, spatial_shape, tuple_of
from ._conv import (
    Padding,
    add_bias,
    check_options,
    dimension_numbers,
    effective_window,
    kernel_specs,
)
from ._precision import compute_in

__all__ = ["ConvTranspose"]


def _transpose_pads(kernel: int, stride: int, padding: str) -> tuple[int, int]:
    """The padding of the stride-dilated input that 'SAME' / 'VALID' mean (as jax.lax and flax)."""
    if padding == "SAME":
        total = kernel + stride - 2
        low = kernel - 1 if stride > kernel - 1 else -(-total // 2)
    else:
        total = kernel + stride - 2 + max(kernel - stride, 0)
        low = kernel - 1
    return low, total - low


class ConvTranspose(Layer):
    """The transpose (gradient) of ``Conv``: upsamples by ``stride``; ``in_channels`` is inferred.

    ``padding`` as an int or pairs is PyTorch's: how much is cropped from each
    side of the full output, ``(in - 1) * stride + dilation * (k - 1) + 1``;
    ``output_padding`` adds that many rows at the high end. ``'SAME'`` (output
    ``in * stride``) and ``'VALID'`` mean what they mean in flax and
    ``jax.lax.conv_transpose``. The kernel is flax's (not flipped): PyTorch's
    weight ``(in, out // groups, *k)`` is its spatial flip, regrouped.

    A stride above 1 maps several input sizes to one output size, so a call
    (and the dry run) takes PyTorch's ``output_size=``: the spatial sizes
    wanted (or the whole output shape), from which the ``output_padding`` of
    that call is picked, overriding the layer's.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> up = li.ConvTranspose(4, (2, 2), stride=2)
        >>> params = li.dry_run(up, jax.random.key(0), jnp.ones((1, 5, 5, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'bias': (4,), 'kernel': (2, 2, 3, 4)}
        >>> up(params, jnp.ones((1, 5, 5, 3))).shape
        (1, 10, 10, 4)
        >>> up3 = li.ConvTranspose(4, (3, 3), stride=2, padding=1)
        >>> params = li.dry_run(up3, jax.random.key(0), jnp.ones((1, 5, 5, 3)), output_size=(10, 10))
        >>> up3(params, jnp.ones((1, 5, 5, 3)), output_size=(10, 10)).shape
        (1, 10, 10, 4)
    """

    out_channels: int
    kernel_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: Padding = 0
    output_padding: int | tuple[int, ...] = 0
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    use_bias: bool = True
    channels_first: bool = False
    kernel_init: Initializer = initializers.lecun_normal()
    bias_init: Initializer = initializers.zeros
    axes: tuple[str | None, str | None] = ("embed", "mlp")
    compute_dtype: Any = None  # what to compute in (flax's ``dtype``); None: as given

    def __post_init__(self) -> None:
        check_options(self)
        extra = self.output_padding
        extra = (extra,) if isinstance(extra, int) else tuple(extra)
        if not extra or not all(isinstance(e, int) and e >= 0 for e in extra):
            raise ConfigureLayerError(
                f"ConvTranspose: `output_padding`={self.output_padding!r} must be a "
                "non-negative int or one per spatial dimension."
            )
        if not isinstance(self.output_padding, int):
            object.__setattr__(self, "output_padding", extra)
        if any(extra) and isinstance(self.padding, str):
            raise ConfigureLayerError(
                f"ConvTranspose: output_padding={self.output_padding!r} needs integer padding, "
                f"got padding={self.padding!r}."
            )
        n = max(len(v) if isinstance(v, tuple) else 1 for v in (extra, self.stride, self.dilation))
        for e, s, d in zip(*(tuple_of(v, n) for v in (extra, self.stride, self.dilation))):
            if e >= max(s, d):
                raise ConfigureLayerError(
                    f"ConvTranspose: output_padding={self.output_padding!r} must be smaller "
                    f"than stride or dilation (here {s} and {d}), as in PyTorch."
                )

    def _pads(self, n: int, extra: tuple[int, ...] | None = None) -> tuple[tuple[int, int], ...]:
        window = effective_window(tuple_of(self.kernel_size, n), tuple_of(self.dilation, n))
        if isinstance(self.padding, str):
            stride = tuple_of(self.stride, n)
            return tuple(_transpose_pads(k, s, self.padding) for k, s in zip(window, stride))
        crop = explicit_pads(self, self.padding, n)
        extra = tuple_of(self.output_padding, n) if extra is None else extra
        return tuple((k - 1 - lo, k - 1 - hi + e) for k, (lo, hi), e in zip(window, crop, extra))

    def _output_padding(self, x: Any, n: int, output_size: Any) -> tuple[int, ...] | None:
        """PyTorch's ``_output_padding``: ``output_size`` minus the smallest output size, checked."""
        if output_size is None:
            return None
        sizes = tuple(output_size)
        if len(sizes) == n + 2:  # the whole output shape, in the layer's layout
            sizes = sizes[2:] if self.channels_first else sizes[1:-1]
        if len(sizes) != n or not all(isinstance(s, int | np.integer) for s in sizes):
            raise InferShapeError(
                f"ConvTranspose: `output_size`={output_size!r} must hold {n} ints (one per "
                f"spatial dim) or {n + 2} (the whole output shape), for input shape "
                f"{tuple(x.shape)}."
            )
        if isinstance(self.padding, str):
            raise InferShapeError(
                f"ConvTranspose: `output_size` needs integer padding, got "
                f"padding={self.padding!r}. Pass padding as ints, as PyTorch has them."
            )
        stride = tuple_of(self.stride, n)
        window = effective_window(tuple_of(self.kernel_size, n), tuple_of(self.dilation, n))
        crop = explicit_pads(self, self.padding, n)
        low = tuple(
            (i - 1) * s + w - lo - hi
            for i, s, w, (lo, hi) in zip(spatial_shape(self, x), stride, window, crop)
        )
        high = tuple(m + s - 1 for m, s in zip(low, stride))
        if not all(m <= int(o) <= h for o, m, h in zip(sizes, low, high)):
            raise InferShapeError(
                f"ConvTranspose: requested output_size {tuple(map(int, sizes))}, but for spatial "
                f"input size {spatial_shape(self, x)} (input shape {tuple(x.shape)}) valid sizes "
                f"range from {low} to {high}, inclusive. Pick an output_size in that range."
            )
        return tuple(int(o) - m for o, m in zip(sizes, low))

    def specs(self, x: Any, *, output_size: Any = None) -> dict[str, Param]:
        specs = kernel_specs(self, x)
        if known_rank(x) is None:
            return specs
        n = len(specs["kernel"].shape) - 2
        window = effective_window(tuple_of(self.kernel_size, n), tuple_of(self.dilation, n))
        stride = tuple_of(self.stride, n)
        pads = self._pads(n, self._output_padding(x, n, output_size))
        for i, (size, (lo, hi)) in enumerate(zip(spatial_shape(self, x), pads)):
            out = (size - 1) * stride[i] + 1 + lo + hi - window[i] + 1
            if out < 1:
                raise InferShapeError(
                    f"padding {self.padding!r} crops more than the whole output "
                    f"along spatial dim {i} (input size {size}, stride {stride[i]}, dilated "
                    f"kernel {window[i]}: the output size would be {out}); input shape "
                    f"{tuple(x.shape)}. Use less padding."
                )
        return specs

    def __call__(self, params: Any, x: jax.Array, *, output_size: Any = None) -> jax.Array:
        params, x = compute_in(self.compute_dtype, params, x)
        n = params["kernel"].ndim - 2
        y = jax.lax.conv_general_dilated(
            x,
            params["kernel"],
            window_strides=(1,) * n,
            padding=self._pads(n, self._output_padding(x, n, output_size)),
            lhs_dilation=tuple_of(self.stride, n),
            rhs_dilation=tuple_of(self.dilation, n),
            dimension_numbers=dimension_numbers(n, self.channels_first),
            feature_group_count=self.groups,
        )
        return add_bias(self, params, y)
