"""The vocabulary of lazyinit's signatures."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

import jax

Array: TypeAlias = jax.Array
Path: TypeAlias = tuple[str, ...]
"""A parameter's address: the keys from the root, e.g. ``('fc1', 'kernel')``."""
PathStr: TypeAlias = str
"""A path joined with ``/``, as errors and reports print it: ``'fc1/kernel'``."""
Shape: TypeAlias = tuple[int, ...]
DType: TypeAlias = Any
"""Anything ``jnp.dtype`` accepts."""
Initializer: TypeAlias = Callable[[jax.Array, Shape, DType], jax.Array]
"""``(key, shape, dtype) -> array``, the signature of ``jax.nn.initializers``."""
Params: TypeAlias = dict[str, Any]
"""A nested dict of arrays (or placeholders, or ``ShapeDtypeStruct``s) keyed by name."""
State: TypeAlias = Any
"""What a load or a dry run takes as ``state`` and what :func:`lazyinit.lazy_state` returns: a
nested dict of arrays, ``ShapeDtypeStruct``s and placeholders, or one placeholder of unknown
structure (``Uninitialized(shape=?)``) standing for a whole model. ``Any`` so that indexing a
lazy state (``state["fc1"]``) type-checks in user code."""
Specs: TypeAlias = dict[str, Any]
"""A nested dict of :class:`lazyinit.Param`, shaped like the params it describes."""
PerPath: TypeAlias = Any | Mapping[str, Any]
"""One value for every parameter, or a mapping from path patterns to values.

Patterns are ``/``-joined paths, matched as a prefix (``'fc1'`` covers
``'fc1/kernel'``) or as an ``fnmatch`` glob (``'*/bias'``); the longest
matching pattern wins and ``'*'`` is the default.
"""
