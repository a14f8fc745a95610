"""Drawing a dry run's holes: one kernel per kind, batches of small parameters, one program.

Whatever the route, a parameter's value is its initializer at its path's key
(:func:`lazyinit._materialize.init_at`), and each draw also says whether its values
are finite, computed by the program that draws them (:class:`Drawn`).

* **A kernel per kind** (initializer, shape, dtype, placement), compiled once and
  called with each parameter's path words: a GPT-2 compiles about a dozen. A
  parameter is written straight into its own buffer (each device writes its shard):
  with the fused threefry keys, a draw needs no memory beyond its output.
* **Batches** of small same-kind parameters (two or more, at most
  :data:`GROUP_BYTES` together) are drawn by one vmapped call and then split into
  their arrays, since a call per leaf costs more than drawing a small leaf: this is
  what keeps a dry run of 10,000 small leaves near a checkpoint load's time.
* **One program** (``jit=True``, a mesh, initializers that draw together) draws
  every batch and every parameter of a kind of its own; only same-kind parameters
  too big to batch are drawn by their kind's kernel instead, so that no stack of
  big parameters is ever built. A batch leaves the program as one stacked array
  when its placement is one device, so that the program's outputs do not grow with
  the number of leaves (XLA compiles each output separately).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import _paths
from ._match import Hole
from ._materialize import init_at, param_words
from ._spec import Param
from ._typing import Path
from .errors import InitializerError

__all__ = ["Drawn", "GROUP_BYTES", "draw", "draw_holes", "confirm_finite", "clear_cache"]

GROUP_BYTES = 4 * 2**20
"""The most bytes of same-kind parameters drawn by one vmapped call. A vmapped draw keeps
stacked intermediates of two or three times the batch before the batch is split, so
parameters bigger than half of this are drawn one by one by their kind's kernel, each
straight into its own buffer (a dispatch costs microseconds, drawing 2 MiB milliseconds)."""


class Drawn(NamedTuple):
    """Drawn parameters by path, and for each a device scalar saying whether its values are
    finite. The parameters of one batch share their batch's check (read back once, later)."""

    values: dict[Path, jax.Array]
    finite: dict[Path, jax.Array]


# ---------------------------------------------------------------------------
# Checks inside the draw.


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


# ---------------------------------------------------------------------------
# Kernels: one per kind, and one per kind and batch size.

_KERNELS: dict[Any, Any] = {}


def _cached(cache_key: Any, build: Any) -> Any:
    try:
        kernel = _KERNELS.get(cache_key)
    except TypeError:  # an unhashable initializer or placement: compile, but do not cache
        return build()
    if kernel is None:
        kernel = _KERNELS[cache_key] = build()
    return kernel


def _kind(hole: Hole) -> tuple[Any, tuple[int, ...], np.dtype, Any]:
    return hole.spec.init, hole.spec.shape, np.dtype(hole.dtype), hole.device


def _kernel(hole: Hole, key: jax.Array) -> Any:
    """The compiled draw of ``hole``'s kind, its initializer's output checked once."""
    init, shape, dtype, sharding = kind = _kind(hole)
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)

    def build() -> Any:
        def draw_one(root: jax.Array, words: jax.Array) -> tuple[jax.Array, jax.Array]:
            return _with_check(init_at(init, root, words, shape, dtype))

        kernel = jax.jit(draw_one, out_shardings=None if sharding is None else (sharding, None))
        out = _trace_initializer(hole.path, hole.spec, kernel, key, param_words(hole.path, init))
        check(hole.path, hole.spec, dtype, out[0])
        return kernel

    return _cached((*kind, typed), build)


def _batch_kernel(hole: Hole, n: int, key: jax.Array) -> Any:
    """The compiled draw of ``n`` parameters of ``hole``'s kind, stacked."""
    init, shape, dtype, sharding = kind = _kind(hole)

    def build() -> Any:
        def draw_n(root: jax.Array, words: jax.Array) -> tuple[jax.Array, jax.Array]:
            return _with_check(jax.vmap(lambda w: init_at(init, root, w, shape, dtype))(words))

        return jax.jit(draw_n, out_shardings=None if sharding is None else (sharding, None))

    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    return _cached((*kind, typed, n), build)


def draw(key: jax.Array, hole: Hole) -> tuple[jax.Array, jax.Array]:
    """One parameter, drawn by its kind's kernel, and whether its values are finite."""
    return _kernel(hole, key)(key, param_words(hole.path, hole.spec.init))


# ---------------------------------------------------------------------------
# Batches.


class _Routes(NamedTuple):
    """How the holes are drawn: in batches (same-kind paths, two or more, at most
    :data:`GROUP_BYTES` together), alone as the only one of their kind, or alone because their
    kind is too big to batch."""

    batches: list[list[Path]]
    single: list[Path]
    big: list[Path]


def _routes(holes: Mapping[Path, Hole]) -> _Routes:
    kinds: dict[Any, list[Path]] = {}
    for path, hole in holes.items():
        try:
            kinds.setdefault(_kind(hole), []).append(path)
        except TypeError:  # an unhashable initializer or placement draws alone
            kinds[(path,)] = [path]
    routes = _Routes([], [], [])
    for members in kinds.values():
        hole = holes[members[0]]
        per = GROUP_BYTES // max(math.prod(hole.spec.shape) * np.dtype(hole.dtype).itemsize, 1)
        if len(members) == 1:
            routes.single.append(members[0])
        elif per < 2:
            routes.big.extend(members)
        else:
            routes.batches.extend(members[i : i + per] for i in range(0, len(members), per))
    return routes


def _one_device(hole: Hole) -> bool:
    """Whether a batch at this placement can leave its draw stacked and be split after."""
    return hole.device is None or len(hole.device.device_set) == 1


def _split(stacked: jax.Array, paths: list[Path], check: jax.Array, drawn: Drawn) -> None:
    """A stacked batch as its parameters' arrays (JAX unstacks a one-device array cheaply)."""
    for path, value in zip(paths, stacked):
        drawn.values[path], drawn.finite[path] = value, check


def draw_holes(key: jax.Array, holes: Mapping[Path, Hole], *, together: bool) -> Drawn:
    """Every hole drawn into its placement (``hole.device``), by kernels and batches, or with
    ``together`` by one program (see the module doc): the same values every way."""
    drawn = Drawn({}, {})
    routes = _routes(holes)
    for path in [*routes.single, *routes.big, *(b[0] for b in routes.batches)]:
        _kernel(holes[path], key)  # each kind's initializer checked before anything is drawn
    alone = list(routes.big)
    if together:
        if routes.batches or routes.single:
            _run_program(key, holes, routes.batches, routes.single, drawn)
    else:
        alone += routes.single
        for batch in routes.batches:
            if not _one_device(holes[batch[0]]):
                alone += batch
                continue
            words = np.stack([param_words(p, holes[p].spec.init) for p in batch])
            stacked, finite = _batch_kernel(holes[batch[0]], len(batch), key)(key, words)
            _split(stacked, batch, finite, drawn)
    for path in alone:
        drawn.values[path], drawn.finite[path] = draw(key, holes[path])
    return drawn


# ---------------------------------------------------------------------------
# One program.

_PROGRAMS: dict[Any, Any] = {}


def _run_program(
    key: jax.Array,
    holes: Mapping[Path, Hole],
    batches: list[list[Path]],
    inline: list[Path],
    drawn: Drawn,
) -> None:
    """Draws ``batches`` and ``inline`` in one compiled call and records them in ``drawn``."""
    stacked = [_one_device(holes[b[0]]) for b in batches]
    signature: Any = (
        tuple((tuple(b), _kind(holes[b[0]]), s) for b, s in zip(batches, stacked)),
        tuple((p, _kind(holes[p])) for p in inline),
    )

    def everything(root: jax.Array) -> tuple[list, list]:
        out_batches = []
        for batch, whole in zip(batches, stacked):
            init, shape, dtype, _ = _kind(holes[batch[0]])
            words = np.stack([param_words(p, init) for p in batch])
            values = jax.vmap(lambda w, f=init, s=shape, d=dtype: init_at(f, root, w, s, d))(words)
            finite = _with_check(values)[1]
            out_batches.append((values, finite) if whole else (list(values), finite))
        out_inline = []
        for p in inline:
            init, shape, dtype, _ = _kind(holes[p])
            out_inline.append(_with_check(init_at(init, root, param_words(p, init), shape, dtype)))
        return out_batches, out_inline

    def shardings() -> tuple[list, list]:
        batch_out = [
            (holes[b[0]].device, None) if whole else ([holes[p].device for p in b], None)
            for b, whole in zip(batches, stacked)
        ]
        return batch_out, [(holes[p].device, None) for p in inline]

    try:
        program = _PROGRAMS.get(signature)
    except TypeError:
        signature, program = None, None
    if program is None:
        program = jax.jit(everything, out_shardings=shardings())
        if signature is not None:
            _PROGRAMS[signature] = program
    out_batches, out_inline = program(key)
    for batch, whole, (values, finite) in zip(batches, stacked, out_batches):
        if whole:
            _split(values, batch, finite, drawn)
        else:
            for p, v in zip(batch, values):
                drawn.values[p], drawn.finite[p] = v, finite
    for p, (value, finite) in zip(inline, out_inline):
        drawn.values[p], drawn.finite[p] = value, finite


def clear_cache() -> None:
    """Forgets the compiled kernels and programs (see ``li.clear_cache``)."""
    _KERNELS.clear()
    _PROGRAMS.clear()
