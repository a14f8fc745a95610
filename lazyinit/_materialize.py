"""Turning specs into arrays: per-path keys, cached kernels, dtype and placement.

Each parameter is drawn with its own key, ``fold_in`` of the root key and
two 32-bit words hashed from its path (:func:`param_key`). The draw runs as a
small jit-compiled kernel cached per ``(initializer, shape, dtype,
placement)``: the first dry run compiles one kernel per distinct kind of
parameter (a GPT-2 has about a dozen), later ones and other paths reuse them.
``jit=True`` instead draws everything in one compiled call, which placement
over a mesh needs; both give the same values.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from . import _paths
from ._errors import InitializerError, InvalidArgumentError, InvalidSpecError
from ._spec import Param
from ._typing import Path

__all__ = ["KEY_SCHEME", "param_key", "as_key", "draw", "draw_all", "placement", "abstract_leaf"]

KEY_SCHEME = 1
"""Version of the path -> key scheme. It changes only with a major release, and
golden-value tests pin it, so upgrading never silently changes initial values."""


def path_words(path: Path) -> np.ndarray:
    """Two uint32 words from a BLAKE2b hash of the ``/``-joined path."""
    digest = hashlib.blake2b("/".join(path).encode(), digest_size=8).digest()
    return np.frombuffer(digest, dtype="<u4").astype(np.uint32)


def _fold(root: jax.Array, words: jax.Array) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(root, words[0]), words[1])


def as_key(key: Any, *, abstract: bool = False) -> jax.Array:
    """A typed PRNG key from a key, a raw ``uint32[2]`` key or an int seed.

    An abstract dry run draws nothing, so it checks the key without building one.
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return key if abstract else jax.random.key(int(key))
    if isinstance(key, (jax.Array, np.ndarray)) and (
        jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape == (2,)
    ):
        return key
    raise InvalidArgumentError(
        f"key must be a jax.random.key(...), a raw jax.random.PRNGKey(...) or an int seed, "
        f"got {type(key).__name__} {getattr(key, 'shape', '')}."
    )


def param_key(key: Any, path: str | Path) -> jax.Array:
    """The key the dry run uses for the parameter at ``path``.

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


def check_dtype(path: Path, dtype: np.dtype) -> None:
    if dtype.itemsize == 8 and not jax.config.jax_enable_x64 and dtype.kind in "fiuc":
        raise InvalidSpecError(
            f"Parameter {_paths.join(path)!r} asks for {dtype.name} but 64-bit types are off: "
            "run jax.config.update('jax_enable_x64', True) first, or choose a 32-bit dtype."
        )


_KERNELS: dict[Any, Any] = {}


def _kernel(param: Param, dtype: np.dtype, sharding: Any, path: Path, key: jax.Array) -> Any:
    cache_key = (
        param.init,
        param.shape,
        dtype,
        sharding,
        jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key),
    )
    try:
        kernel = _KERNELS.get(cache_key)
    except TypeError:  # an unhashable initializer: compile, but do not cache
        cache_key, kernel = None, None
    if kernel is not None:
        return kernel
    shape, init = param.shape, param.init

    def kernel(root: jax.Array, words: jax.Array) -> jax.Array:
        return init(_fold(root, words), shape, dtype)

    kernel = jax.jit(kernel, out_shardings=sharding)
    check(path, param, dtype, kernel.trace(key, path_words(path)).out_info)
    if cache_key is not None:
        _KERNELS[cache_key] = kernel
    return kernel


def check(path: Path, param: Param, dtype: np.dtype, out: Any) -> None:
    """Raises unless an initializer's output ``out`` has the declared shape and dtype."""
    if tuple(out.shape) != param.shape or out.dtype != dtype:
        name = getattr(param.init, "__name__", repr(param.init))
        raise InitializerError(
            f"For parameter {_paths.join(path)!r}: initializer {name} returned "
            f"{out.dtype.name}{list(out.shape)}, but the spec declares "
            f"{dtype.name}{list(param.shape)}. Fix the initializer to honour its shape and dtype "
            "arguments."
        )


def abstract_leaf(param: Param, dtype: np.dtype, sharding: Any) -> jax.ShapeDtypeStruct:
    """The abstract stand-in of a parameter (shared: ``ShapeDtypeStruct`` is immutable)."""
    try:
        return _abstract(param.shape, dtype, sharding)
    except TypeError:  # an unhashable sharding
        return jax.ShapeDtypeStruct(param.shape, dtype, sharding=sharding)


@functools.lru_cache(maxsize=65536)
def _abstract(shape: tuple[int, ...], dtype: np.dtype, sharding: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)


def draw(key: jax.Array, path: Path, param: Param, dtype: np.dtype, sharding: Any) -> jax.Array:
    """One parameter, drawn eagerly by its cached kernel."""
    return _kernel(param, dtype, sharding, path, key)(key, path_words(path))


_PROGRAMS: dict[Any, Any] = {}


def _groups(todo: Mapping[Path, tuple[Param, np.dtype, Any]]) -> list[tuple[Any, list[Path]]]:
    """Paths grouped by (initializer, shape, dtype): each group is one vmapped draw, so the
    program grows with the number of kinds of parameters, not with the model's depth. vmap of
    a draw over keys gives the same values as drawing each key alone."""
    groups: dict[Any, list[Path]] = {}
    for path, (param, dtype, _) in todo.items():
        kind = (param.init, param.shape, dtype)
        try:
            groups.setdefault(kind, []).append(path)
        except TypeError:  # an unhashable initializer draws alone
            groups[(param.init, param.shape, dtype, path)] = [path]
    return [(kind[:3], members) for kind, members in groups.items()]


def draw_all(
    key: jax.Array, todo: Mapping[Path, tuple[Param, np.dtype, Any]]
) -> dict[Path, jax.Array]:
    """Every parameter in ``todo`` drawn in one jit-compiled call, each into its sharding."""
    paths = list(todo)
    for p in paths:  # validates each initializer's output once
        _kernel(todo[p][0], todo[p][1], todo[p][2], p, key)
    signature = tuple((p, todo[p][0].init, todo[p][0].shape, todo[p][1], todo[p][2]) for p in paths)
    try:
        program = _PROGRAMS.get(signature)
    except TypeError:
        signature, program = None, None
    if program is None:
        groups = _groups(todo)

        def everything(root: jax.Array) -> list[jax.Array]:
            out: dict[Path, jax.Array] = {}
            for (init, shape, dtype), members in groups:
                words = np.stack([path_words(p) for p in members])
                if len(members) == 1:
                    out[members[0]] = init(_fold(root, words[0]), shape, dtype)
                    continue
                keys = jax.vmap(lambda w: _fold(root, w))(words)
                stacked = jax.vmap(lambda k, f=init, s=shape, d=dtype: f(k, s, d))(keys)
                out.update((p, stacked[i]) for i, p in enumerate(members))
            return [out[p] for p in paths]

        program = jax.jit(everything, out_shardings=[todo[p][2] for p in paths])
        if signature is not None:
            _PROGRAMS[signature] = program
    return dict(zip(paths, program(key)))


def clear_cache() -> None:
    """Forgets the compiled initializer kernels and programs (see ``li.clear_cache``)."""
    _KERNELS.clear()
    _PROGRAMS.clear()
    _abstract.cache_clear()
