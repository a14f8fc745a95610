"""The load rules, written once: what happens where known state meets what a model needs.

PyTorch's ``load_state_dict`` rules, as one pure function that every entry
point calls (``li.dry_run(state=)``, ``li.load_state``, ``li.load``,
``li.check_checkpoint``, ``TrainingCheckpoints.restore``, the PyTorch and flax
converters, ``li.summary``'s statuses and a call's check of its params), so that
their decisions and their words cannot drift apart:

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
  side *unexpected* (with a near-miss hint); each entry point's *policy* says
  which of the two it refuses (:func:`judge`);
* numpy values are copied into ``jax.Array``s, so a caller's later in-place edit
  never reaches the params (small ones in stacks, one transfer for many).

Every problem is collected, none is raised here: :func:`judge` lists what an
entry point refuses and :func:`refuse` raises one
:class:`~lazyinit.errors.StateMismatchError` listing them all, before anything
is built. Each rule's line is worded by one function below (:func:`size_mismatch`,
:func:`dtype_mismatch`, :func:`missing_key`, :func:`unexpected_key`,
:func:`placeholder_for_value`); other libraries' converters plug in their own
key names (``show``) and say which layer a key belongs to (``about``).

A parameter keeps one record from the match to the draw: its :class:`Target`
(shape, dtype, placement, and the :class:`~lazyinit.Param` a dry run traced),
and, while it has no value, the :class:`Hole` that says what will fill it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _paths
from ._spec import DEFAULT_DTYPE, Param, Uninitialized
from ._typing import Path, PerPath
from .errors import StateMismatchError

__all__ = [
    "Report",
    "Target",
    "Hole",
    "Matched",
    "match",
    "judge",
    "refuse",
    "report",
    "size_mismatch",
    "dtype_mismatch",
    "missing_key",
    "unexpected_key",
    "near_hint",
    "placeholder_for_value",
    "fixed_dtype",
    "forced_dtype",
    "param_dtype",
]

Shape = tuple[int | None, ...]


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
      tied: entries of another library's state that hold a tensor tied to a loaded
        parameter (``lm_head.weight`` beside ``wte.weight``): checked equal to it and not
        loaded under their own name.
    """

    kept: tuple[str, ...] = ()
    loaded: tuple[str, ...] = ()
    initialized: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    cast: tuple[str, ...] = ()
    resharded: tuple[str, ...] = ()
    tied: tuple[str, ...] = ()

    def __str__(self) -> str:
        rows = [
            f"{f.name}: {', '.join(getattr(self, f.name)) or '-'}" for f in dataclasses.fields(self)
        ]
        return "\n".join(rows)


def report(**groups: Iterable[Path | str]) -> Report:
    """A :class:`Report` from lists of paths (tuples or ``/``-joined strings)."""
    return Report(
        **{
            k: tuple(sorted(p if isinstance(p, str) else _paths.join(p) for p in v))
            for k, v in groups.items()
        }
    )


# ---------------------------------------------------------------------------
# The dtype a parameter is stored in.


def fixed_dtype(param: Param) -> bool:
    """Whether a spec's dtype is fixed whatever is chosen: a non-floating one (BatchNorm's int32
    ``count``). ``dtype=`` choices, placeholders' dtypes and mixed precision apply to the rest."""
    return param.dtype is not None and not np.issubdtype(param.dtype, np.floating)


def forced_dtype(param: Param, dtype: PerPath, path: Path) -> np.dtype | None:
    """The dtype that wins over a placeholder's choice: a fixed spec's, else ``dtype=``'s."""
    if fixed_dtype(param):
        return param.dtype
    chosen = _paths.resolve(dtype, path)
    return None if chosen is None else np.dtype(chosen)


def param_dtype(param: Param, dtype: PerPath = None, path: Path = ()) -> np.dtype:
    """The dtype a parameter materializes in: forced, else the spec's, else float32.

    The one place the default (:data:`lazyinit._spec.DEFAULT_DTYPE`) is applied.
    """
    forced = forced_dtype(param, dtype, path)
    if forced is not None:
        return forced
    return param.dtype if param.dtype is not None else DEFAULT_DTYPE


# ---------------------------------------------------------------------------
# The records.


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
      spec: the declaration a dry run traced at this path, carried to the draw.
    """

    shape: Shape | None
    dtype: np.dtype | None = None
    default_dtype: np.dtype | None = None
    device: Any = None
    value: Any = None
    spec: Param | None = None

    @classmethod
    def of(cls, leaf: Any) -> Target:
        """The target a leaf of a current state or a ``like`` tree stands for."""
        if isinstance(leaf, Uninitialized):
            return cls(leaf.shape, leaf.dtype, None, leaf.device)
        return cls(tuple(leaf.shape), np.dtype(leaf.dtype), None, None, leaf)

    @classmethod
    def declared(cls, spec: Param, *, dtype: PerPath, path: Path, device: Any = None) -> Target:
        """The target of a traced parameter: its shape, the dtype chosen for it, its placement."""
        return cls(
            spec.shape, forced_dtype(spec, dtype, path), param_dtype(spec), device, None, spec
        )


@dataclasses.dataclass(frozen=True)
class Hole:
    """A path that still has no value after the match, with all that is known of it.

    ``shape`` is what the two sides know together, ``dtype`` and ``device`` the
    choices that won (the target's forced dtype, then the incoming placeholder's, then the
    default). A dry run draws it (``target.spec``); a load returns it as a placeholder.
    """

    path: Path
    target: Target
    shape: Shape | None
    dtype: np.dtype | None
    device: Any

    @property
    def spec(self) -> Param:
        """The traced declaration this hole is drawn from (dry runs only)."""
        assert self.target.spec is not None, "only a dry run's targets carry a spec"
        return self.target.spec

    def placeholder(self) -> Uninitialized:
        """The :class:`~lazyinit.Uninitialized` a load returns for this hole."""
        return Uninitialized(self.shape, self.dtype, self.device, _paths.join(self.path))


@dataclasses.dataclass
class Matched:
    """The decisions :func:`match` took, by path, and every rule problem it found."""

    values: dict[Path, Any] = dataclasses.field(default_factory=dict)
    holes: dict[Path, Hole] = dataclasses.field(default_factory=dict)
    taken: list[Path] = dataclasses.field(default_factory=list)
    missing: list[Path] = dataclasses.field(default_factory=list)
    unexpected: list[Path] = dataclasses.field(default_factory=list)
    cast: list[Path] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    names: _Names | None = None
    shapes: dict[Path, Shape | None] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------
# The words: each rule's line, written once.


def shape_str(shape: Shape | None) -> str:
    """``(3, ?)``; a whole unknown shape is ``?``."""
    if shape is None:
        return "?"
    dims = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({dims},)" if len(shape) == 1 else f"({dims})"


def transpose_hint(found: Shape | None, expected: Shape | None, path: Path = ()) -> str:
    """The default size-mismatch hint: a 2-d shape that is the transpose of the expected one.

    A converter's hint also gets the ``path`` of the entry, to name its layer and the likely cause.
    """
    if (
        found is not None
        and expected is not None
        and len(found) == 2
        and tuple(found[::-1]) == tuple(expected)
        and None not in expected
        and found != expected
    ):
        return (
            " (the transpose: PyTorch stores Linear weights as (out, in); lazyinit kernels are "
            "(in, out). Convert with lazyinit.interop.torch or transpose it.)"
        )
    return ""


def size_mismatch(name: str, found: Shape | None, expected: Shape | None, hint: str = "") -> str:
    """``size mismatch for 'fc1/kernel': found shape (10, 4), expected (4, 10)`` (+ a hint)."""
    return f"size mismatch for {name}: found shape {shape_str(found)}, expected {shape_str(expected)}{hint}"


def dtype_mismatch(name: str, found: Any, expected: Any, fix: str) -> str:
    """``dtype mismatch for 'w': found float64, expected float32 (pass cast=True to convert it)``."""
    want = expected if isinstance(expected, str) else np.dtype(expected).name
    return f"dtype mismatch for {name}: found {np.dtype(found).name}, expected {want} ({fix})"


def missing_key(name: str, hint: str = "") -> str:
    """``missing key 'fc1/kernel' (did you mean 'fc1/weight'?)``."""
    return f"missing key {name}{hint}"


def unexpected_key(name: str, hint: str = "") -> str:
    """``unexpected key 'fc1/weight' (did you mean 'fc1/kernel'?)``."""
    return f"unexpected key {name}{hint}"


def placeholder_for_value(name: str) -> str:
    """A placeholder arriving where an array is needed."""
    return (
        f"placeholder for {name}, where an array is needed: the incoming state has no value "
        "for it (dry-run the model with this state first, or load it into a lazy state)"
    )


@dataclasses.dataclass(frozen=True)
class _Names:
    """How an entry point names paths in its lines: lazyinit's own, or another library's keys."""

    show: Callable[[Path], str]
    about: Mapping[Path, str]
    hint: Callable[[Shape | None, Shape | None, Path], str]

    def __call__(self, path: Path) -> str:
        about = self.about.get(path)
        return f"{self.show(path)!r}" + (f" ({about})" if about else "")


def near_hint(
    path: Path,
    candidates: list[Path],
    show: Callable[[Path], str] = _paths.join,
    shapes: Mapping[Path, Shape | None] | None = None,
) -> str:
    """`` (did you mean 'fc1/kernel'?)`` for the likeliest of ``candidates``, or ``''``
    (:func:`lazyinit._paths.near_misses`: structure, shapes, spelling, order)."""
    return _did_you_mean(_paths.near_miss(path, candidates, shapes), show)


def _did_you_mean(hit: Path | None, show: Callable[[Path], str]) -> str:
    return f" (did you mean {show(hit)!r}?)" if hit is not None else ""


# ---------------------------------------------------------------------------
# The rules.


def _shape_of(x: Any) -> Shape | None:
    shape = getattr(x, "shape", None)
    return None if shape is None else tuple(shape)


def _agrees(known: Shape | None, shape: Shape | None) -> bool:
    if known is None or shape is None:
        return True
    return len(known) == len(shape) and all(
        k is None or s is None or k == s for k, s in zip(known, shape)
    )


def _is_hole(x: Any, abstract: bool) -> bool:
    """A hole, as this match sees it: in an ``abstract`` match a ``ShapeDtypeStruct`` is a value
    (a shape and dtype to check), otherwise a hole like a placeholder (:func:`_paths.is_hole`)."""
    return isinstance(x, Uninitialized) or (_paths.is_hole(x) and not abstract)


_STACK_LEAF = 64 * 2**10  # numpy leaves up to this size travel in stacks (below)
_STACK = 4 * 2**20  # the most bytes of one stack


def _on_device(values: dict[Path, Any]) -> dict[Path, Any]:
    """``values`` with every numpy leaf copied into a ``jax.Array``, so that a caller's later
    in-place edit never reaches the params.

    Small leaves of one shape and dtype travel together, as one host stack that one transfer
    copies and JAX then splits on the device: a transfer per leaf costs more than the rules
    themselves on a state of 10,000 small leaves. Each leaf is what ``jnp.array(x, copy=True)``
    gives (tests/core/test_rules.py pins it).
    """
    stacks: dict[tuple[tuple[int, ...], np.dtype], list[Path]] = {}
    out = dict(values)
    for path, x in values.items():
        if not isinstance(x, (np.ndarray, np.generic)):
            continue
        if x.nbytes <= _STACK_LEAF:
            stacks.setdefault((np.shape(x), np.dtype(x.dtype)), []).append(path)
        else:
            out[path] = jnp.array(x, copy=True)
    for paths in stacks.values():
        per = max(1, _STACK // max(1, values[paths[0]].nbytes))
        for i in range(0, len(paths), per):
            chunk = paths[i : i + per]
            if len(chunk) == 1:
                out[chunk[0]] = jnp.array(values[chunk[0]], copy=True)
                continue
            stacked = jnp.asarray(np.stack([values[p] for p in chunk]))
            out.update(zip(chunk, stacked))
    return out


def _hole(path: Path, target: Target, hint: Any) -> Hole:
    """What a hole becomes: the target's dtype wins, then the hint's, then the default."""
    dtype = target.dtype or getattr(hint, "dtype", None) or target.default_dtype
    device = getattr(hint, "device", None) if isinstance(hint, Uninitialized) else None
    if isinstance(hint, jax.ShapeDtypeStruct):
        device = hint.sharding
    return Hole(
        path,
        target,
        _union(target.shape, _shape_of(hint)),
        None if dtype is None else np.dtype(dtype),
        device if device is not None else target.device,
    )


def _union(a: Shape | None, b: Shape | None) -> Shape | None:
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
    cast_hint: str = "pass cast=True to convert it",
    show: Callable[[Path], str] = _paths.join,
    about: Mapping[Path, str] | None = None,
    hint: Callable[[Shape | None, Shape | None, Path], str] = transpose_hint,
) -> Matched:
    """Applies the load rules to every path of ``targets`` and ``incoming``; raises nothing.

    In an ``abstract`` match a ``ShapeDtypeStruct`` counts as a value, not a hole.
    ``cast_hint`` is the remedy a dtype mismatch names (it differs by entry point: the
    rule does not). ``show`` prints a path as the entry point's keys (another library's
    dotted names), ``about`` adds what a key belongs to, and ``hint(found, expected, path)``
    explains a size mismatch (default: the transpose of PyTorch's layout).
    """
    names = _Names(show, about or {}, hint)
    m = Matched(names=names)
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
                    m.values[path] = _take(path, target, new, cast, cast_hint, m)
                continue
            for p in below:
                used.add(p)
                new = incoming[p]
                sub = dataclasses.replace(target, value=None, spec=None)
                if _is_hole(new, abstract):
                    m.holes[p] = _hole(p, sub, new)
                else:
                    m.values[p] = _take(p, sub, new, cast, cast_hint, m)
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
                m.values[path] = target.value
            else:
                m.holes[path] = _hole(path, target, None)
            continue
        if _is_hole(new, abstract):
            shape = _shape_of(new)
            if target.value is not None:
                m.problems.append(placeholder_for_value(names(path)))
            elif not _agrees(shape, target.shape):
                m.problems.append(size_mismatch(names(path), shape, target.shape))
            else:
                m.holes[path] = _hole(path, target, new)
            continue
        found = tuple(new.shape)
        if not _agrees(found, target.shape):
            m.problems.append(
                size_mismatch(names(path), found, target.shape, hint(found, target.shape, path))
            )
            continue
        m.values[path] = _take(path, target, new, cast, cast_hint, m)
    m.unexpected = [
        p for p in incoming if p not in used and not any(p[: len(w)] == w for w in wholes)
    ]
    m.shapes = {p: targets[p].shape for p in m.missing}
    m.shapes.update((p, _shape_of(incoming[p])) for p in m.unexpected)
    m.values = _on_device(m.values)
    return m


def _take(path: Path, target: Target, new: Any, cast: bool, cast_hint: str, m: Matched) -> Any:
    """An incoming value at ``path``, dtype-checked (or cast) and copied out of numpy."""
    want = target.dtype or target.default_dtype
    m.taken.append(path)
    if want is None or np.dtype(new.dtype) == np.dtype(want):
        return new  # numpy is copied onto a device once every decision is taken
    if cast:
        m.cast.append(path)
        if isinstance(new, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(new.shape, want, sharding=new.sharding)
        return jnp.asarray(new).astype(want)
    assert m.names is not None
    m.problems.append(dtype_mismatch(m.names(path), new.dtype, want, cast_hint))
    return new


# ---------------------------------------------------------------------------
# The policy, and the error.


def judge(m: Matched, *, missing: bool, unexpected: bool) -> list[str]:
    """Every line an entry point refuses: the rule problems, then missing and unexpected keys
    where its policy refuses them, each with a near-miss hint from the other side (paired one
    to one, by structure, shape, spelling and order: :func:`lazyinit._paths.near_misses`)."""
    names = m.names or _Names(_paths.join, {}, transpose_hint)
    lines = list(m.problems)
    pairs = _paths.near_misses(m.missing, m.unexpected, m.shapes)
    back = {o: w for w, o in pairs.items()}
    if missing:
        lines += [missing_key(names(p), _did_you_mean(pairs.get(p), names.show)) for p in m.missing]
    if unexpected:
        lines += [
            unexpected_key(names(p), _did_you_mean(back.get(p), names.show)) for p in m.unexpected
        ]
    return lines


def refuse(
    what: str,
    lines: list[str],
    advice: str = "",
    error: type[StateMismatchError] = StateMismatchError,
) -> None:
    """Raises one ``error`` listing every line, unless there are none."""
    if lines:
        raise error(what, lines, advice)
