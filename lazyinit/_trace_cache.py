"""The trace cache: specs and output shapes of a ``(layer, input signature)``, traced once.

Layers are frozen dataclasses, equal when their configuration is; a call's
signature is the shapes, dtypes and weak types of its array arguments and the
values of the others. Equal layers on equal signatures declare the same specs
and produce the same output shapes (calls are pure), so a cached trace is
reused for identical blocks and for a repeated dry run.
"""

from __future__ import annotations

import collections
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _drawing, _materialize, _paths

__all__ = [
    "CACHE",
    "cache_key",
    "signature",
    "aval",
    "is_array",
    "rebuild",
    "abstractify",
    "is_abstract",
    "register_cache",
    "clear_cache",
]


is_array = _paths.is_shaped  # an input whose shape and dtype lend the call its signature


def aval(x: Any) -> jax.ShapeDtypeStruct:
    weak = bool(getattr(getattr(x, "aval", None), "weak_type", False))
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, weak_type=weak)


def signature(args: Any) -> Any:
    """A hashable key for the shapes, dtypes and static values of ``args``, or None."""
    leaves, treedef = jax.tree.flatten(args)
    sig = tuple(
        (l.shape, l.dtype, l.weak_type)
        if isinstance(l, jax.ShapeDtypeStruct)
        else (np.shape(l), l.dtype, bool(getattr(getattr(l, "aval", None), "weak_type", False)))
        if is_array(l)
        else ("static", l)
        for l in leaves
    )
    try:
        hash(sig)
    except TypeError:
        return None
    return treedef, sig


class _LRU(collections.OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get(self, key: Any, default: Any = None) -> Any:
        if key is None or key not in self:
            return default
        self.move_to_end(key)
        return self[key]

    def put(self, key: Any, value: Any) -> None:
        if key is None:
            return
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)


CACHE = _LRU(4096)
"""``(layer type, layer, input signature) -> Trace`` of the calls traced so far."""
_OTHER_CACHES: list[dict[Any, Any]] = []  # e.g. the interop wrappers' traced inits


def register_cache(cache: dict[Any, Any]) -> dict[Any, Any]:
    """Has :func:`clear_cache` clear ``cache`` too; returns it."""
    _OTHER_CACHES.append(cache)
    return cache


def clear_cache() -> None:
    """Forgets every cached trace and compiled initializer (they are only ever reused for
    equal layers and inputs, so this frees memory; it never changes a result)."""
    CACHE.clear()
    _materialize.clear_cache()
    _drawing.clear_cache()
    for cache in _OTHER_CACHES:
        cache.clear()


def cache_key(layer: Any, args: tuple, kwargs: dict) -> Any:
    sig = signature((args, kwargs))
    if sig is None:
        return None
    try:
        hash(layer)
    except TypeError:
        return None
    return type(layer), layer, sig


def rebuild(outputs: Any) -> Any:
    """Fresh abstract values standing in for cached outputs."""
    return jax.tree.map(
        lambda o: jnp.zeros(o.shape, o.dtype) if isinstance(o, jax.ShapeDtypeStruct) else o,
        outputs,
    )


def abstractify(tree: Any) -> Any:
    """Arrays and ``ShapeDtypeStruct``s become plain ``ShapeDtypeStruct``s; the rest stays."""
    return jax.tree.map(lambda x: aval(x) if is_array(x) else x, tree)


def is_abstract(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a ``jax.ShapeDtypeStruct``."""
    return any(isinstance(l, jax.ShapeDtypeStruct) for l in jax.tree.leaves(tree))
