"""Lazy state: placeholders before a dry run, and PyTorch's ``load_state_dict`` rules as pure functions."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from . import _paths
from ._errors import StateMismatchError
from ._spec import Param, Uninitialized
from ._typing import Params, Path, PerPath

__all__ = [
    "Report",
    "lazy_state",
    "has_uninitialized",
    "uninitialized_paths",
    "load_state",
    "is_leaf",
    "describe_mismatch",
]


def is_leaf(x: Any) -> bool:
    """What a state may hold at a leaf: arrays, ``ShapeDtypeStruct``s and placeholders."""
    return isinstance(x, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct, Uninitialized))


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


def _report(**groups: list[Path]) -> Report:
    return Report(**{k: tuple(sorted(_paths.join(p) for p in v)) for k, v in groups.items()})


# ---------------------------------------------------------------------------
# The state before a dry run.


class _UnknownDim:
    """A dimension that depends on an input not seen yet; arithmetic keeps it unknown."""

    def _same(self, *args: Any) -> _UnknownDim:
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __floordiv__ = __rfloordiv__ = __truediv__ = __mod__ = __neg__ = _same


class _UnknownShape(tuple):
    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, int):
            return _UnknownDim()
        raise _Unknowable

    def __len__(self) -> int:
        raise _Unknowable


class _Unknowable(Exception):
    pass


class _UnknownInput:
    """What ``specs`` sees when ``lazy_state`` asks it before any input exists."""

    shape = _UnknownShape()
    dtype = None

    @property
    def ndim(self) -> int:
        raise _Unknowable


def _known(dim: Any) -> int | None:
    return None if isinstance(dim, _UnknownDim) else int(dim)


def _own_specs(layer: Any) -> dict[str, Param] | None:
    """The layer's own specs as far as they are known without input, or None."""
    try:
        sig = inspect.signature(layer.specs)
        inputs = [
            _UnknownInput()
            for p in sig.parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        specs = layer.specs(*inputs)
        return {name: p for name, p in specs.items() if isinstance(p, Param)}
    except Exception:
        return None


def lazy_state(model: Any, *, dtype: PerPath = None, device: PerPath = None) -> Params:
    """The model's parameters before a dry run: a nested dict of :class:`Uninitialized`.

    Each placeholder shows what is known without input (``kernel`` of a
    ``Linear(10)`` is ``(?, 10)``). ``dtype`` and ``device`` choose, for the
    whole model or per path, what the dry run will materialize in; pass the
    result as ``li.dry_run(..., state=...)``. A layer whose ``specs`` need to
    see the input to even name their parameters shows as one placeholder of
    unknown shape.

    >>> import lazyinit as li
    >>> li.lazy_state(li.Linear(10))
    {'kernel': Uninitialized(shape=(?, 10), dtype=float32), 'bias': Uninitialized(shape=(10,), dtype=float32)}
    """

    def walk(layer: Any, path: Path) -> Any:
        own = _own_specs(layer)
        if own is None:
            return Uninitialized(
                None, _paths.resolve(dtype, path), _paths.resolve(device, path), _paths.join(path)
            )
        tree: dict[str, Any] = {}
        for name, p in own.items():
            shape = tuple(_known(d) for d in p.shape)
            fixed = p.dtype is not None and not np.issubdtype(p.dtype, np.floating)
            chosen = (
                p.dtype if fixed else _paths.resolve(dtype, (*path, name), p.dtype or np.float32)
            )
            device_choice = _paths.resolve(device, (*path, name))
            tree[name] = Uninitialized(shape, chosen, device_choice, _paths.join((*path, name)))
        for name, child in layer.children().items():
            tree[name] = walk(child, (*path, name))
        return tree

    return walk(model, ())


def uninitialized_paths(tree: Any) -> list[str]:
    """The ``/``-joined paths of every :class:`Uninitialized` leaf in ``tree``."""
    if isinstance(tree, Uninitialized):
        return ["<root>"]
    if not isinstance(tree, Mapping):
        return []
    flat = _paths.flatten(tree, lambda x: True)
    return [_paths.join(p) for p, v in flat.items() if isinstance(v, Uninitialized)]


def has_uninitialized(tree: Any) -> bool:
    """Whether ``tree`` still holds placeholders: PyTorch's ``has_uninitialized_params()``.

    >>> import jax, jax.numpy as jnp, lazyinit as li
    >>> model = li.Linear(3)
    >>> li.has_uninitialized(li.lazy_state(model))
    True
    >>> li.has_uninitialized(li.dry_run(model, jax.random.key(0), jnp.ones((1, 2))))
    False
    """
    return bool(uninitialized_paths(tree))


# ---------------------------------------------------------------------------
# Loading.


def _shape_str(x: Any) -> str:
    if isinstance(x, Uninitialized):
        return repr(x).removeprefix("Uninitialized(shape=").split(", dtype")[0]
    return str(tuple(x.shape))


def describe_mismatch(
    path: Path, found: Any, expected: Any, found_what: str, expected_what: str
) -> str:
    """``'fc1/kernel': loaded shape (10, 4), expected (4, 10)`` plus a transpose hint."""
    line = (
        f"size mismatch for {_paths.join(path)!r}: {found_what} shape {_shape_str(found)}, "
        f"{expected_what} {_shape_str(expected)}"
    )
    fs, es = tuple(getattr(found, "shape", ()) or ()), tuple(getattr(expected, "shape", ()) or ())
    if len(fs) == 2 and len(es) == 2 and fs[::-1] == es and None not in es:
        line += (
            " (the transpose: PyTorch stores Linear weights as (out, in); lazyinit kernels are "
            "(in, out). Convert with lazyinit.interop.torch or transpose it.)"
        )
    return line


def _check_dtype(
    path: Path, new: Any, want: Any, cast: bool, problems: list[str], casts: list[Path]
) -> Any:
    if want is None or np.dtype(new.dtype) == np.dtype(want):
        return new
    if cast:
        casts.append(path)
        if isinstance(new, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct(new.shape, want, sharding=new.sharding)
        return new.astype(want)
    problems.append(
        f"dtype mismatch for {_paths.join(path)!r}: loaded {np.dtype(new.dtype).name}, expected "
        f"{np.dtype(want).name} (pass cast=True to convert it)"
    )
    return new


def _place(value: Any, device: Any) -> Any:
    if device is None or not isinstance(value, (jax.Array, np.ndarray)):
        return value
    from ._materialize import placement

    return jax.device_put(value, placement(device))


def load_state(
    current: Params, incoming: Params, *, strict: bool = True, cast: bool = False
) -> tuple[Params, Report]:
    """Loads ``incoming`` into ``current`` by PyTorch's rules, as a pure function.

    * a placeholder takes an initialized value whose shape agrees with the
      dimensions it already knows (and is placed on its chosen device);
    * an initialized leaf takes one of the same shape and dtype; another shape
      is a *size mismatch*;
    * a placeholder loaded into an initialized leaf is an error; into a
      placeholder it changes nothing, so loading twice is harmless;
    * with ``strict=True`` paths of ``current`` absent from ``incoming``
      (*missing*) and paths of ``incoming`` absent from ``current``
      (*unexpected*) are errors; otherwise they are reported.

    Every problem is reported at once, and the inputs are never modified.
    Dtypes must match unless ``cast=True``, which converts and reports.

    Returns:
      ``(merged, report)``: a new tree shaped like ``current``, and a :class:`Report`.

    Raises:
      StateMismatchError: listing every offending path.
    """
    whole = isinstance(current, Uninitialized)  # a layer that names its params only from input
    cur = {(): current} if whole else _paths.flatten(current, is_leaf, what="current state")
    inc = _paths.flatten(incoming, is_leaf, what="incoming state")
    merged = dict(cur)
    problems: list[str] = []
    loaded, unexpected, casts, covered = [], [], [], set()
    for path, new in inc.items():
        old = cur.get(path)
        if old is None:
            owner = next((path[:i] for i in range(len(path)) if path[:i] in cur), None)
            if (
                owner is not None
                and isinstance(cur[owner], Uninitialized)
                and cur[owner].shape is None
            ):
                covered.add(owner)  # a placeholder of unknown structure takes any subtree
                merged[path] = _check_dtype(path, new, cur[owner].dtype, cast, problems, casts)
                loaded.append(path)
            else:
                unexpected.append(path)
            continue
        if isinstance(new, Uninitialized):
            if not isinstance(old, Uninitialized):
                problems.append(
                    f"cannot load a placeholder into initialized {_paths.join(path)!r}: the "
                    "incoming state has no value for it (dry-run it first, or drop it)"
                )
            continue
        if isinstance(old, Uninitialized):
            if not old.matches(tuple(new.shape)):
                problems.append(describe_mismatch(path, new, old, "loaded", "expected"))
                continue
            merged[path] = _place(
                _check_dtype(path, new, old.dtype, cast, problems, casts), old.device
            )
        else:
            if tuple(new.shape) != tuple(old.shape):
                problems.append(describe_mismatch(path, new, old, "loaded", "current"))
                continue
            merged[path] = _check_dtype(path, new, old.dtype, cast, problems, casts)
        loaded.append(path)
    for owner in covered:
        del merged[owner]
    missing = [p for p in cur if p not in inc and p not in covered]
    if strict:
        problems += [
            f"missing key {_paths.join(p)!r}{_paths.near_miss(p, unexpected)}" for p in missing
        ]
        problems += [
            f"unexpected key {_paths.join(p)!r}{_paths.near_miss(p, missing)}" for p in unexpected
        ]
    if problems:
        raise StateMismatchError(
            f"Error(s) loading state ({len(problems)}):\n  "
            + "\n  ".join(problems)
            + "\nNothing was changed. Fix the state, or pass strict=False to load what fits "
            "and get a report of the rest.",
            tuple(problems),
        )
    skeleton = _paths.subtrees(incoming if whole else current)
    return _paths.unflatten(merged, skeleton), _report(
        loaded=loaded, missing=missing, unexpected=unexpected, cast=casts
    )
