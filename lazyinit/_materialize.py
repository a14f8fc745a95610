"""The key scheme: each parameter's key from its path, its dtype and its placement.

Each parameter is drawn with its own key, ``fold_in`` of the root key and
two 32-bit words hashed from its path (:func:`param_key`), by its initializer
(:func:`init_at`); the key the initializer gets draws threefry's bits through
a PRNG implementation that XLA fuses (:func:`lazyinit._keys.for_draw`). How the
draws are compiled and batched is :mod:`lazyinit._drawing`'s business; whatever
it does, a parameter's value is its initializer at its path's key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any

import jax
import numpy as np

from . import _paths
from ._keys import as_key, for_draw
from ._match import Hole
from ._typing import Path
from .errors import InvalidArgumentError, InvalidSpecError

__all__ = [
    "KEY_SCHEME",
    "param_key",
    "param_words",
    "init_at",
    "placement",
    "abstract_leaf",
    "Stacked",
]

KEY_SCHEME = 1
"""Version of the path -> key scheme. It changes only with a major release, and
golden-value tests pin it, so upgrading never silently changes initial values."""


def path_words(path: Path) -> np.ndarray:
    """Two uint32 words from a BLAKE2b hash of the ``/``-joined path."""
    digest = hashlib.blake2b("/".join(path).encode(), digest_size=8).digest()
    return np.frombuffer(digest, dtype="<u4").astype(np.uint32)


def _fold(root: jax.Array, words: jax.Array | np.ndarray) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(root, words[0]), words[1])


@dataclasses.dataclass(frozen=True)
class Stacked:
    """The initializer of ``n`` copies of a parameter stacked on a new leading axis.

    ``li.Repeat`` and ``li.Ensemble`` declare their block's parameters with it.
    The dry run draws slice ``i`` exactly as it would draw the unrolled
    parameter, at the path with ``str(i)`` inserted ``depth`` names from the
    end: ``blocks/attn/kernel`` (depth 2) stacks ``blocks/0/attn/kernel``,
    ``blocks/1/attn/kernel``, ... So stacked and unrolled models convert
    losslessly both ways. Stackings nest (a ``Repeat`` of ``Repeat``).
    """

    init: Any
    n: int
    depth: int

    def __call__(self, key: jax.Array, shape: Any, dtype: Any = None) -> jax.Array:
        """Draws with one key, for code that knows no paths: slice ``i`` from ``fold_in(key, i)``."""
        return jax.vmap(lambda i: self.init(jax.random.fold_in(key, i), tuple(shape)[1:], dtype))(
            jax.numpy.arange(self.n)
        )

    @property
    def __name__(self) -> str:
        return f"stacked({getattr(self.init, '__name__', repr(self.init))}, n={self.n})"


def param_words(path: Path, init: Any) -> np.ndarray:
    """The path words a parameter is drawn from: ``(2,)``, or ``(n, ..., 2)`` when stacked."""
    if not isinstance(init, Stacked):
        return path_words(path)
    cut = len(path) - init.depth
    return np.stack(
        [param_words((*path[:cut], str(i), *path[cut:]), init.init) for i in range(init.n)]
    )


def init_at(
    init: Any, root: jax.Array, words: jax.Array | np.ndarray, shape: Any, dtype: Any
) -> jax.Array:
    """``init`` at the key of ``words``; a stacked one draws each slice at its own words."""
    if isinstance(init, Stacked):
        return jax.vmap(lambda w: init_at(init.init, root, w, shape[1:], dtype))(words)
    return init(for_draw(_fold(root, words)), shape, dtype)


def param_key(key: Any, path: str | Path) -> jax.Array:
    """The key the dry run uses for the parameter at ``path``.

    Examples:
        >>> import jax, lazyinit as li
        >>> k = li.param_key(jax.random.key(0), "fc1/kernel")
        >>> bool((jax.random.key_data(k) == jax.random.key_data(
        ...     li.param_key(jax.random.key(0), ("fc1", "kernel")))).all())
        True
    """
    path = tuple(path.split("/")) if isinstance(path, str) else tuple(path)
    return _fold(as_key(key), path_words(path))


def placement(device: Any) -> jax.sharding.Sharding | None:
    """A ``Sharding`` from a ``Device``, a ``Sharding`` or None."""
    if device is None or isinstance(device, jax.sharding.Sharding):
        return device
    if isinstance(device, jax.Device):
        return jax.sharding.SingleDeviceSharding(device)
    raise InvalidArgumentError(
        f"device must be a jax.Device or a jax.sharding.Sharding, got {device!r}."
    )


def check_dtype(hole: Hole) -> None:
    """Refuses a 64-bit dtype while JAX's 64-bit types are off (it would silently narrow)."""
    path, dtype = hole.path, np.dtype(hole.dtype)
    wide = (dtype.itemsize == 8 and dtype.kind in "fiu") or (
        dtype.kind == "c" and dtype.itemsize == 16
    )
    if wide and not jax.config.read("jax_enable_x64"):  # complex64 is two float32s: no x64
        raise InvalidSpecError(
            f"Parameter {_paths.join(path)!r} asks for {dtype.name} but 64-bit types are off: "
            "run jax.config.update('jax_enable_x64', True) first, or choose a 32-bit dtype."
        )


def abstract_leaf(hole: Hole) -> jax.ShapeDtypeStruct:
    """The abstract stand-in of a parameter (shared: ``ShapeDtypeStruct`` is immutable)."""
    shape, dtype, sharding = hole.spec.shape, np.dtype(hole.dtype), hole.device
    try:
        return _abstract(shape, dtype, sharding)
    except TypeError:  # an unhashable sharding
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


@functools.lru_cache(maxsize=65536)
def _abstract(shape: tuple[int, ...], dtype: np.dtype, sharding: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def clear_cache() -> None:
    """Forgets the cached abstract leaves (see ``li.clear_cache``)."""
    _abstract.cache_clear()
