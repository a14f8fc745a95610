"""``Sequential``: layers and plain functions applied in order."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax

from .._layer import Layer
from ..errors import ConfigureLayerError, InvalidArgumentError
from ._foreign import refuse_foreign

__all__ = ["Sequential", "call_child", "check_keywords"]


@functools.cache
def accepted_keywords(layer_type: Any) -> frozenset[str] | None:
    """The keyword arguments ``layer_type.__call__`` accepts; None means any."""
    params = inspect.signature(layer_type.__call__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    names = (p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    return frozenset(names) - {"self", "params"}


def check_keywords(owner: Layer, children: Sequence[Any], kwargs: dict[str, Any]) -> None:
    """Raises unless every keyword reaches at least one child layer: a typo never passes silently.

    ``train`` and ``key`` are the conventions every model may be called with,
    so they are always accepted, whether or not a child uses them.
    """
    accepted: set[str] = {"train", "key"}
    for child in children:
        if isinstance(child, Layer):
            names = accepted_keywords(type(child))  # type: ignore[arg-type]
            if names is None:
                return
            accepted |= names
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise InvalidArgumentError(
            f"{type(owner).__name__} got keyword(s) {', '.join(map(repr, unknown))} that none of its "
            f"layers accepts (they accept: {', '.join(sorted(accepted)) or 'none'}). Check the "
            "spelling, or drop the argument."
        )


def call_child(
    layer: Callable[..., Any], params: Any, name: str, index: int, *args: Any, **kwargs: Any
) -> Any:
    """Calls child ``index`` of a combinator, with ``params[name]`` and the keywords it accepts.

    A plain function gets only ``args``. A ``key`` is replaced by
    ``jax.random.fold_in(key, index)``, so that no two children (two
    ``Dropout`` layers) ever draw with the same key.
    """
    if not isinstance(layer, Layer):
        refuse_foreign(f"Child {name!r}", layer)
        return layer(*args)
    names = accepted_keywords(type(layer))  # type: ignore[arg-type]
    given = kwargs if names is None else {k: v for k, v in kwargs.items() if k in names}
    if given.get("key") is not None:
        given = {**given, "key": jax.random.fold_in(given["key"], index)}
    return layer(params.get(name, {}), *args, **given)


class Sequential(Layer):
    """Applies each entry to the previous one's output, like ``torch.nn.Sequential``.

    Entries are layers or plain functions (``li.nn.relu``). A layer's params are
    under its index as a string, so functions leave gaps as in PyTorch's
    state dicts. Keyword arguments of the call (``train=True``) reach every
    layer whose ``__call__`` accepts them; ``key=`` reaches layer ``i`` as
    ``jax.random.fold_in(key, i)``.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> mlp = li.Sequential([li.Linear(8), li.nn.relu, li.Linear(1)])
        >>> params = li.dry_run(mlp, jax.random.key(0), jnp.ones((4, 3)))
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
                raise ConfigureLayerError(
                    f"Sequential entry {i} is a {type(layer).__name__} ({layer!r}), which is not "
                    "callable. Pass layers (li.Linear(10)) or functions (li.nn.relu)."
                )
            refuse_foreign(f"Sequential entry {i}", layer)
        object.__setattr__(self, "layers", layers)

    def children(self) -> dict[str, Layer]:
        return {str(i): l for i, l in enumerate(self.layers) if isinstance(l, Layer)}

    def __call__(self, params: Any, x: Any, **kwargs: Any) -> Any:
        check_keywords(self, self.layers, kwargs)
        for i, layer in enumerate(self.layers):
            x = call_child(layer, params, str(i), i, x, **kwargs)
        return x
