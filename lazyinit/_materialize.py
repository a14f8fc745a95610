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

import dataclasses
import functools
import hashlib
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _paths
from ._keys import as_key, for_draw
from ._match import Hole
from ._spec import Param
from ._typing import Path
from .errors import InitializerError, InvalidArgumentError, InvalidSpecError

__all__ = [
    "KEY_SCHEME",
    "confirm_finite",
    "param_key",
    "Drawn",
    "draw",
    "draw_each",
    "draw_all",
    "GROUP_BYTES",
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


def _init_at(init: Any, root: jax.Array, words: jax.Array, shape: Any, dtype: Any) -> jax.Array:
    """``init`` at the key of ``words``; a stacked one draws each slice at its own words."""
    if isinstance(init, Stacked):
        return jax.vmap(lambda w: _init_at(init.init, root, w, shape[1:], dtype))(words)
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


_KERNELS: dict[Any, Any] = {}


def _with_check(out: Any) -> tuple[Any, jax.Array]:
    """``(out, whether its sum is finite)``, in the program that draws ``out`` (integers: True).

    A NaN or an infinity makes the sum non-finite, so the check never misses one; a sum can
    also overflow, so an alarm is confirmed on the values (:func:`confirm_finite`). XLA sums
    the drawn output where it lies; ``isfinite(out).all()`` would instead have it compute the
    values a second time and keep the initializer's intermediate arrays to do so.
    """
    if isinstance(out, jax.Array) and jnp.issubdtype(out.dtype, jnp.inexact):
        return out, jnp.isfinite(out.sum())
    return out, jnp.bool_(True)


def confirm_finite(value: jax.Array) -> bool:
    """Whether every value is finite, exactly: for the rare parameter whose sum was not."""
    return bool(jnp.isfinite(value).all())


def _out_shardings(shardings: list[Any]) -> Any:
    """Each value into its sharding, each check unspecified (XLA replicates the scalar)."""
    if all(s is None for s in shardings):
        return None
    return [(s, None) for s in shardings]


def _kernel(param: Param, dtype: np.dtype, sharding: Any, path: Path, key: jax.Array) -> Any:
    cache_key: Any = (
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

    def draw_one(root: jax.Array, words: jax.Array) -> tuple[jax.Array, jax.Array]:
        return _with_check(_init_at(init, root, words, shape, dtype))

    out_shardings = _out_shardings([sharding])
    kernel = jax.jit(draw_one, out_shardings=None if out_shardings is None else out_shardings[0])
    out = _trace_initializer(path, param, kernel, key, param_words(path, init))
    check(path, param, dtype, out[0])
    if cache_key is not None:
        _KERNELS[cache_key] = kernel
    return kernel


def initializer_name(param: Param) -> str:
    """How messages name a parameter's initializer."""
    return getattr(param.init, "__name__", repr(param.init))


def _trace_initializer(path: Path, param: Param, kernel: Any, key: Any, words: Any) -> Any:
    """The abstract output of a parameter's initializer; its failure becomes InitializerError."""
    try:
        return kernel.trace(key, words).out_info
    except Exception as e:
        raise InitializerError(
            f"For parameter {_paths.join(path)!r}: initializer {initializer_name(param)} "
            f"raised {type(e).__name__}: {str(e)[:300]}. An initializer is called as "
            "init(key, shape, dtype) and must return one array of that shape and dtype."
        ) from e


def check(path: Path, param: Param, dtype: np.dtype, out: Any) -> None:
    """Raises unless an initializer's output ``out`` has the declared shape and dtype."""
    if not (hasattr(out, "shape") and hasattr(out, "dtype")):
        raise InitializerError(
            f"For parameter {_paths.join(path)!r}: initializer {initializer_name(param)} "
            f"returned {type(out).__name__} {str(out)[:100]}, not an array. An initializer is "
            f"called as init(key, shape, dtype) and must return one array of {dtype.name}"
            f"{list(param.shape)}."
        )
    if tuple(out.shape) != param.shape or out.dtype != dtype:
        name = initializer_name(param)
        raise InitializerError(
            f"For parameter {_paths.join(path)!r}: initializer {name} returned "
            f"{out.dtype.name}{list(out.shape)}, but the spec declares "
            f"{dtype.name}{list(param.shape)}. Fix the initializer to honour its shape and dtype "
            "arguments."
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


class Drawn(NamedTuple):
    """Drawn parameters by path, and for each a device scalar: whether every value is finite
    (computed by the program that drew it, read later in one transfer)."""

    values: dict[Path, jax.Array]
    finite: dict[Path, jax.Array]


def draw(key: jax.Array, hole: Hole) -> tuple[jax.Array, jax.Array]:
    """One parameter, drawn eagerly by its cached kernel, and whether its values are finite."""
    param, dtype = hole.spec, np.dtype(hole.dtype)
    kernel = _kernel(param, dtype, hole.device, hole.path, key)
    return kernel(key, param_words(hole.path, param.init))


def draw_each(key: jax.Array, holes: Mapping[Path, Hole]) -> Drawn:
    """Every hole drawn by its own cached kernel, one call each, straight into its sharding."""
    drawn = Drawn({}, {})
    for path, hole in holes.items():
        drawn.values[path], drawn.finite[path] = draw(key, hole)
    return drawn


GROUP_BYTES = 4 * 2**20
"""The largest stack of same-kind parameters that :func:`draw_all` draws with one vmapped
draw. A vmapped draw keeps stacked intermediates (two or three times the stack) before each
slice is written out, so a bigger group's members are drawn one by one instead, by the
kernel compiled for their kind, each straight into its own buffer: drawing them costs a
dispatch each (microseconds, against milliseconds to draw 4 MiB), and no temporaries."""

_PROGRAMS: dict[Any, Any] = {}


def _groups(holes: Mapping[Path, Hole]) -> list[tuple[Any, list[Path]]]:
    """Paths grouped by (initializer, shape, dtype): each group is one vmapped draw, so the
    program grows with the number of kinds of parameters, not with the model's depth. vmap of
    a draw over keys gives the same values as drawing each key alone."""
    groups: dict[Any, list[Path]] = {}
    for path, hole in holes.items():
        kind = (hole.spec.init, hole.spec.shape, np.dtype(hole.dtype))
        try:
            groups.setdefault(kind, []).append(path)
        except TypeError:  # an unhashable initializer draws alone
            groups[(*kind, path)] = [path]
    return [(kind[:3], members) for kind, members in groups.items()]


def _stack_bytes(kind: Any, members: list[Path]) -> int:
    _, shape, dtype = kind
    return len(members) * math.prod(shape) * dtype.itemsize


def draw_all(key: jax.Array, holes: Mapping[Path, Hole]) -> Drawn:
    """Every hole drawn into its sharding (``hole.device``), in one jit-compiled call but for
    groups of same-kind parameters bigger than :data:`GROUP_BYTES`, whose members are drawn
    one by one by their kind's kernel (:func:`draw_each`): the same values either way."""
    paths = list(holes)
    for p in paths:  # validates each initializer's output once
        h = holes[p]
        _kernel(h.spec, np.dtype(h.dtype), h.device, p, key)
    groups, alone = [], []
    for kind, members in _groups(holes):
        if len(members) > 1 and _stack_bytes(kind, members) > GROUP_BYTES:
            alone += members
        else:
            groups.append((kind, members))
    drawn = draw_each(key, {p: holes[p] for p in alone})
    together = [p for _, members in groups for p in members]
    if together:
        program = _program(holes, together, groups)
        for p, (value, finite) in zip(together, program(key)):
            drawn.values[p], drawn.finite[p] = value, finite
    return drawn


def _program(holes: Mapping[Path, Hole], paths: list[Path], groups: list) -> Any:
    """The compiled draw of ``paths`` (cached by their paths, kinds and shardings)."""
    signature: Any = tuple(
        (p, holes[p].spec.init, holes[p].spec.shape, np.dtype(holes[p].dtype), holes[p].device)
        for p in paths
    )
    try:
        program = _PROGRAMS.get(signature)
    except TypeError:
        signature, program = None, None
    if program is not None:
        return program

    def everything(root: jax.Array) -> list[tuple[jax.Array, jax.Array]]:
        out: dict[Path, jax.Array] = {}
        for (init, shape, dtype), members in groups:
            words = np.stack([param_words(p, init) for p in members])
            if len(members) == 1:
                out[members[0]] = _init_at(init, root, words[0], shape, dtype)
                continue
            stacked = jax.vmap(lambda w, f=init, s=shape, d=dtype: _init_at(f, root, w, s, d))(
                words
            )
            out.update((p, stacked[i]) for i, p in enumerate(members))
        return [_with_check(out[p]) for p in paths]

    program = jax.jit(everything, out_shardings=_out_shardings([holes[p].device for p in paths]))
    if signature is not None:
        _PROGRAMS[signature] = program
    return program


def clear_cache() -> None:
    """Forgets the compiled initializer kernels and programs (see ``li.clear_cache``)."""
    _KERNELS.clear()
    _PROGRAMS.clear()
    _abstract.cache_clear()
