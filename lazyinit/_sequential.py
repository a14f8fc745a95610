"""``Sequential``: layers and plain functions applied in order."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from ._errors import InvalidLayerError
from ._layer import Layer

__all__ = ["Sequential"]


@functools.cache
def _keywords(layer_type: type) -> frozenset[str] | None:
    """The keyword arguments ``layer_type.__call__`` accepts; None means any."""
    params = inspect.signature(layer_type.__call__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


class Sequential(Layer):
    """Applies each entry to the previous one's output, like ``torch.nn.Sequential``.

    Entries are layers or plain functions (``li.relu``). A layer's params are
    under its index as a string, so functions leave gaps as in PyTorch's
    state dicts. Keyword arguments of the call (``train=True``) reach every
    layer whose ``__call__`` accepts them.

    >>> import jax, jax.numpy as jnp, lazyinit as li
    >>> mlp = li.Sequential([li.Linear(8), li.relu, li.Linear(1)])
    >>> params = mlp.dry_run(jax.random.key(0), jnp.ones((4, 3)))
    >>> sorted(params)
    ['0', '2']
    >>> mlp(params, jnp.ones((4, 3))).shape
    (4, 1)
    """

    layers: Sequence[Callable[..., Any]]

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise InvalidLayerError(
                    f"Sequential entry {i} is a {type(layer).__name__} ({layer!r}), which is not "
                    "callable. Pass layers (li.Linear(10)) or functions (li.relu)."
                )
        object.__setattr__(self, "layers", layers)

    def children(self) -> dict[str, Layer]:
        return {str(i): l for i, l in enumerate(self.layers) if isinstance(l, Layer)}

    def __call__(self, params: Any, x: Any, **kwargs: Any) -> Any:
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Layer):
                names = _keywords(type(layer))
                given = kwargs if names is None else {k: v for k, v in kwargs.items() if k in names}
                x = layer(params[str(i)], x, **given)
            else:
                x = layer(x)
        return x
