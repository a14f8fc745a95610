"""``Ensemble``: ``n`` independent copies of a layer applied with ``jax.vmap`` over stacked params."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .. import _buffers
from .._layer import Layer
from .._recorder import is_tracing, record_stacked
from .._typing import Params
from ..errors import InferShapeError
from ._repeat import block_kwargs, check_count, with_key

__all__ = ["Ensemble"]


class Ensemble(Layer):
    """``n`` copies of ``layer``, each with its own params, outputs stacked on a leading axis.

    Params are ``layer``'s with every leaf stacked on a new leading axis of
    length ``n`` (logical axis ``"ensemble"``), and slice ``i`` holds what
    ``Parallel([layer] * n)`` draws at ``<path>/<i>/...``, as for
    ``li.Repeat``. Every copy sees the same input; with ``map_inputs=True``
    the input carries a leading axis of length ``n`` too and copy ``i`` gets
    slice ``i``. ``key=`` reaches copy ``i`` as ``fold_in(key, i)``.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> heads = li.Ensemble(li.Linear(2), 5)
        >>> params = li.dry_run(heads, jax.random.key(0), jnp.ones((8, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'bias': (5, 2), 'kernel': (5, 3, 2)}
        >>> heads(params, jnp.ones((8, 3))).shape
        (5, 8, 2)
    """

    layer: Layer
    n: int
    map_inputs: bool = False
    axis: str = "ensemble"

    def __post_init__(self) -> None:
        check_count("li.Ensemble", self.layer, self.n)
        object.__setattr__(self, "n", int(self.n))

    @property
    def stacked_layer(self) -> Layer:
        """The layer copied ``n`` times (``li.summary`` shows one row, ``<layer> x<n>``)."""
        return self.layer

    def summary_label(self) -> str:
        return f"{type(self).__name__}: {type(self.layer).__name__} x{self.n}"

    def children(self) -> dict[str, Layer]:
        return {}  # the layer's params are this layer's own, stacked: no key of their own

    children._lazyinit_default = True  # type: ignore[attr-defined]  # derived only by tracing

    def __call__(self, params: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs = block_kwargs(self, self.layer, kwargs)
        if self.map_inputs:
            _check_mapped(self.n, args)
        if is_tracing(params):  # a dry run: trace one copy, declare n
            one = jax.tree.map(lambda a: a[0], args) if self.map_inputs else args
            y = record_stacked(params, self.layer, self.n, self.axis, one, with_key(kwargs, 0))
            return jax.tree.map(lambda a: jnp.broadcast_to(a, (self.n, *a.shape)), y)

        def step(p: Params, *a: Any) -> Any:
            return self.layer(p, *a, **with_key(kwargs, jax.lax.axis_index("copy")))

        in_axes = (0, *([0 if self.map_inputs else None] * len(args)))
        y, updates = jax.vmap(_buffers.collect_per_copy(step), in_axes=in_axes, axis_name="copy")(
            params, *args
        )
        _buffers.report_stacked(params, updates)
        return y


def _check_mapped(n: int, args: tuple) -> None:
    for a in jax.tree.leaves(args):
        if not hasattr(a, "shape") or not a.shape or a.shape[0] != n:
            raise InferShapeError(
                f"li.Ensemble(map_inputs=True) with n={n} maps over the inputs' leading axis, "
                f"but an input has shape {getattr(a, 'shape', type(a).__name__)}. Stack one "
                f"input per copy on a leading axis of length {n}, or use map_inputs=False."
            )
