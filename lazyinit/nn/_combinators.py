"""Combinators beside ``Sequential``: ``Residual`` and ``Parallel``.

Like ``Sequential`` they forward the call's keyword arguments (``train=``)
to the children that accept them, and fold each child's index into ``key=``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from .._layer import Layer
from ..errors import ConfigureLayerError, InferShapeError
from ._sequential import Sequential, call_child, check_keywords

__all__ = ["Residual", "Parallel"]


class Residual(Layer):
    """``x + layer(x)``, with ``layer``'s params under ``'layer'``; a list is a ``Sequential``.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> block = li.Residual([li.LayerNorm(), li.Linear(4)])
        >>> params = li.dry_run(block, jax.random.key(0), jnp.ones((2, 4)))
        >>> jax.tree.map(jnp.shape, params)
        {'layer': {'0': {'bias': (4,), 'scale': (4,)}, '1': {'bias': (4,), 'kernel': (4, 4)}}}
    """

    layer: Layer

    def __post_init__(self) -> None:
        if isinstance(self.layer, list | tuple):
            object.__setattr__(self, "layer", Sequential(self.layer))
        if not isinstance(self.layer, Layer):
            raise ConfigureLayerError(
                f"Residual wraps a li.Layer (or a list of layers), got {self.layer!r}."
            )

    def __call__(self, params: Any, x: jax.Array, **kwargs: Any) -> jax.Array:
        check_keywords(self, [self.layer], kwargs)
        y = call_child(self.layer, params, "layer", 0, x, **kwargs)
        if y.shape != x.shape:
            raise InferShapeError(
                f"the wrapped layer maps shape {x.shape} to {y.shape}; a residual "
                "connection needs them equal. Project the shortcut with li.Parallel instead."
            )
        return x + y


class Parallel(Layer):
    """Calls every layer on the same input; returns the tuple of outputs, or ``merge(*outputs)``.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> two = li.Parallel([li.Linear(3), li.Linear(5)], merge=lambda *ys: jnp.concatenate(ys, -1))
        >>> params = li.dry_run(two, jax.random.key(0), jnp.ones((2, 4)))
        >>> sorted(params), two(params, jnp.ones((2, 4))).shape
        (['0', '1'], (2, 8))
    """

    layers: Sequence[Callable[..., Any]]
    merge: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", Sequential(self.layers).layers)

    def children(self) -> dict[str, Layer]:
        return {str(i): l for i, l in enumerate(self.layers) if isinstance(l, Layer)}

    def __call__(self, params: Any, x: Any, **kwargs: Any) -> Any:
        check_keywords(self, self.layers, kwargs)
        outs = tuple(
            call_child(l, params, str(i), i, x, **kwargs) for i, l in enumerate(self.layers)
        )
        return outs if self.merge is None else self.merge(*outs)
