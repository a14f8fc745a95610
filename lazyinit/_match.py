"""The load rules, written once: what happens where known state meets what a model needs.

PyTorch's ``load_state_dict`` rules, as one pure function that every entry
point calls (``li.dry_run(state=)``, ``li.load_state``, ``li.load``,
``TrainingCheckpoints.restore``, ``li.summary``'s statuses), so that their
decisions and their words cannot drift apart:

* a *value* (an array) fills a *hole* (a placeholder, or in a concrete run a
  ``ShapeDtypeStruct``) when it agrees with every dimension the hole knows;
  it replaces an initialized leaf of the same shape;
* a value's dtype must be the target's unless ``cast=True``, which converts it
  and reports it;
* a hole arriving where a value is needed is an error; a hole meeting a hole
  passes its dtype and device choices on, so loading a lazy state is harmless;
* a placeholder of unknown structure (``shape=?``) stands for a whole subtree:
  it takes whatever the other side has below its path;
* paths only on the receiving side are *missing*, paths only on the incoming
  side *unexpected* (with a near-miss hint); the caller says which are errors;
* numpy values are copied into ``jax.Array``s, so a caller's later in-place edit
  never reaches the params.

Every problem is collected, none is raised here: callers raise one error
listing them all, before anything is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _paths
from ._spec import Uninitialized
from ._typing import Path

__all__ = [
    "Report",
    "Target",
    "Matched",
    "match",
    "report",
    "describe_mismatch",
    "missing_lines",
    "unexpected_lines",
]


@dataclasses.dataclass(frozen=True)
class Report:
    """What a load or a dry run did with each path (``/``-joined, sorted).

    Attributes:
      kept: initialized leaves that were already there and were kept as they are.
      loaded: leaves taken from the incoming state.
      initialized: leaves the dry run drew from their initializers.
      missing: leaves the incoming state lacked (left as they were).
      unexpected: incoming leaves the model has no place for (ignored).
      cast: loaded leaves whose dtype was converted because ``cast=True``.
      resharded: kept leaves that a dry run moved from another multi-device layout to the
        planned one because ``reshard=True``.
    """

    kept: tuple[str, ...] = ()
    loaded: tuple[str, ...] = ()
    initialized: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    cast: tuple[str, ...] = ()
    resharded: tuple[str, ...] = ()

    def __str__(self) -> str:
        rows = [
            f"{f.name}: {', '.join(getattr(self, f.name)) or '-'}" for f in dataclasses.fields(self)
        ]
        return "\n".join(rows)


def report(**groups: Any) -> Report:
    """A :class:`Report` from lists of paths (tuples or ``/``-joined strings)."""
    return Report(
        **{
            k: tuple(sorted(p if isinstance(p, str) else _paths.join(p) for p in v))
            for k, v in groups.items()
        }
    )


@dataclasses.dataclass(frozen=True)
class Target:
    """What the receiving side knows at one path.

    Attributes:
      shape: known dims (``None`` for an unknown one), or ``None`` when even the
        structure is unknown: the target then takes a whole incoming subtree.
      dtype: the dtype a value must have (``None``: any); it also wins over a
        hole's choice.
      default_dtype: the dtype of a hole that nobody chose one for.
      device: where a hole is to be materialized, unless the incoming hole says.
      value: the initialized leaf already there, or ``None``.
    """

    shape: tuple[int | None, ...] | None
    dtype: np.dtype | None = None
    default_dtype: np.dtype | None = None
    device: Any = None
    value: Any = None

    @classmethod
    def of(cls, leaf: Any) -> Target:
        """The target a leaf of a current state or a ``like`` tree stands for."""
        if isinstance(leaf, Uninitialized):
            return cls(leaf.shape, leaf.dtype, None, leaf.device)
        return cls(tuple(leaf.shape), np.dtype(leaf.dtype), None, None, leaf)


@dataclasses.dataclass
class Matched:
    """The decisions :func:`match` took, by path, and every problem it found."""

    values: dict[Path, Any] = dataclasses.field(default_factory=dict)
    holes: dict[Path, Uninitialized] = dataclasses.field(default_factory=dict)
    taken: list[Path] = dataclasses.field(default_factory=list)
    missing: list[Path] = dataclasses.field(default_factory=list)
    unexpected: list[Path] = dataclasses.field(default_factory=list)
    cast: list[Path] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)


def _shape_str(shape: tuple[int | None, ...] | None) -> str:
    if shape is None:
        return "?"
    dims = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({dims},)" if len(shape) == 1 else f"({dims})"


def describe_mismatch(
    path: Path, found: Any, expected: Any, found_what: str, expected_what: str
) -> str:
    """``size mismatch for 'fc1/kernel': loaded shape (10, 4), expected (4, 10)``, plus a
    hint when one is the transpose of the other (PyTorch's ``(out, in)`` layout).

    ``found`` and ``expected`` are shapes (``None`` dims unknown) or leaves that have one.
    """
    found, expected = _shape_of(found), _shape_of(expected)
    line = (
        f"size mismatch for {_paths.join(path)!r}: {found_what} shape {_shape_str(found)}, "
        f"{expected_what} {_shape_str(expected)}"
    )
    if (
        found is not None
        and expected is not None
        and len(found) == 2
        and tuple(found[::-1]) == tuple(expected)
        and None not in expected
        and found != expected
    ):
        line += (
            " (the transpose: PyTorch stores Linear weights as (out, in); lazyinit kernels are "
            "(in, out). Convert with lazyinit.interop.torch or transpose it.)"
        )
    return line


def _shape_of(x: Any) -> tuple[int | None, ...] | None:
    if x is None or isinstance(x, tuple):
        return x
    shape = getattr(x, "shape", None)
    return None if shape is None else tuple(shape)


def _agrees(known: tuple[int | None, ...] | None, shape: tuple[int | None, ...] | None) -> bool:
    if known is None or shape is None:
        return True
    return len(known) == len(shape) and all(
        k is None or s is None or k == s for k, s in zip(known, shape)
    )


def _is_hole(x: Any, abstract: bool) -> bool:
    return isinstance(x, Uninitialized) or (isinstance(x, jax.ShapeDtypeStruct) and not abstract)


def _as_value(x: Any) -> Any:
    """A value the caller cannot change behind our back: numpy is copied into a ``jax.Array``."""
    if isinstance(x, (np.ndarray, np.generic)):
        return jnp.array(x, copy=True)
    return x


def _hole(path: Path, target: Target, hint: Any) -> Uninitialized:
    """The placeholder a hole becomes: the target's dtype wins, then the hint's, then the default."""
    dtype = target.dtype or getattr(hint, "dtype", None) or target.default_dtype
    device = getattr(hint, "device", None) if isinstance(hint, Uninitialized) else None
    if isinstance(hint, jax.ShapeDtypeStruct):
        device = hint.sharding
    return Uninitialized(
        _union(target.shape, getattr(hint, "shape", None)),
        dtype,
        device if device is not None else target.device,
        _paths.join(path),
    )


def _union(
    a: tuple[int | None, ...] | None, b: tuple[int | None, ...] | None
) -> tuple[int | None, ...] | None:
    """What two agreeing shapes know together (``(?, 10)`` and ``(3, ?)`` give ``(3, 10)``)."""
    if a is None or b is None or len(a) != len(b):
        return a if a is not None else b
    return tuple(x if x is not None else y for x, y in zip(a, b))


def _covering(incoming: Mapping[Path, Any], path: Path) -> Path | None:
    """The path of an incoming placeholder of unknown structure that stands for ``path``."""
    for i in range(len(path) - 1, -1, -1):
        leaf = incoming.get(path[:i])
        if isinstance(leaf, Uninitialized) and leaf.shape is None:
            return path[:i]
    return None


def match(
    targets: Mapping[Path, Target],
    incoming: Mapping[Path, Any],
    *,
    cast: bool = False,
    abstract: bool = False,
    found: str = "loaded",
    expected: str = "expected",
    current: str = "current",
    cast_hint: str = "pass cast=True to convert it",
) -> Matched:
    """Applies the load rules to every path of ``targets`` and ``incoming``; raises nothing.

    ``found``/``expected`` are the words of the size-mismatch lines (``loaded``
    vs ``expected``, ``existing`` vs ``inferred``); ``current`` replaces
    ``expected`` where the target is an initialized leaf. In an ``abstract`` match a
    ``ShapeDtypeStruct`` counts as a value, not a hole.
    """
    m = Matched()
    words = (found, expected, cast_hint)
    used: set[Path] = set()
    wholes = [p for p, t in targets.items() if t.shape is None]
    for path, target in targets.items():
        if target.shape is None:  # a placeholder of unknown structure takes a subtree
            below = [p for p in incoming if p[: len(path)] == path]
            if path in incoming or not below:
                new = incoming.get(path)
                used.add(path)
                if new is None:
                    m.missing.append(path)
                    m.holes[path] = _hole(path, target, None)
                elif _is_hole(new, abstract):
                    m.holes[path] = _hole(path, target, new)
                else:
                    m.values[path] = _take(path, target, new, cast, m, words)
                continue
            for p in below:
                used.add(p)
                new = incoming[p]
                sub = Target(None, target.dtype, target.default_dtype, target.device)
                if _is_hole(new, abstract):
                    m.holes[p] = _hole(p, sub, new)
                else:
                    m.values[p] = _take(p, sub, new, cast, m, words)
            continue
        new = incoming.get(path)
        if new is not None:
            used.add(path)
        else:
            cover = _covering(incoming, path)
            if cover is not None:
                used.add(cover)
                new = incoming[cover]
        if new is None:
            m.missing.append(path)
            if target.value is not None:
                m.values[path] = _as_value(target.value)
            else:
                m.holes[path] = _hole(path, target, None)
            continue
        if _is_hole(new, abstract):
            shape = getattr(new, "shape", None)
            if isinstance(target.value, jax.ShapeDtypeStruct):
                m.problems.append(
                    f"cannot load a placeholder into {_paths.join(path)!r}, where the template "
                    "wants an array: the incoming state has no value for it (dry-run the model "
                    "with this state first, or load it into a lazy state)"
                )
            elif target.value is not None:
                m.problems.append(
                    f"cannot load a placeholder into initialized {_paths.join(path)!r}: the "
                    "incoming state has no value for it (dry-run it first, or drop it)"
                )
            elif not _agrees(shape, target.shape):
                m.problems.append(
                    describe_mismatch(path, target.shape, shape, expected, "placeholder")
                )
            else:
                m.holes[path] = _hole(path, target, new)
            continue
        if not _agrees(tuple(new.shape), target.shape):
            than = expected if target.value is None else current
            m.problems.append(describe_mismatch(path, tuple(new.shape), target.shape, found, than))
            continue
        m.values[path] = _take(path, target, new, cast, m, words)
    m.unexpected = [
        p for p in incoming if p not in used and not any(p[: len(w)] == w for w in wholes)
    ]
    return m


def _take(
    path: Path, target: Target, new: Any, cast: bool, m: Matched, words: tuple[str, str, str]
) -> Any:
    """An incoming value at ``path``, dtype-checked (or cast) and copied out of numpy."""
    found, expected, cast_hint = words
    want = target.dtype or target.default_dtype
    m.taken.append(path)
    if want is None or np.dtype(new.dtype) == np.dtype(want):
        return _as_value(new)
    if cast:
        m.cast.append(path)
        if isinstance(new, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(new.shape, want, sharding=new.sharding)
        return jnp.asarray(new).astype(want)
    m.problems.append(
        f"dtype mismatch for {_paths.join(path)!r}: {found} {np.dtype(new.dtype).name}, "
        f"{expected} {np.dtype(want).name} ({cast_hint})"
    )
    return new


def missing_lines(m: Matched) -> list[str]:
    """``missing key 'fc1/kernel'`` lines, each with a near-miss hint among the unexpected."""
    return [f"missing key {_paths.join(p)!r}{_paths.near_miss(p, m.unexpected)}" for p in m.missing]


def unexpected_lines(m: Matched, candidates: list[Path], why: str = "") -> list[str]:
    """``unexpected key 'fc1/weight' (did you mean 'fc1/kernel'?)`` lines."""
    return [
        f"unexpected key {_paths.join(p)!r}{why}{_paths.near_miss(p, candidates)}"
        for p in m.unexpected
    ]
