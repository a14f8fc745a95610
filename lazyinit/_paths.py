"""Addressing parameters by path: flattening nested dicts and resolving per-path choices.

Paths are tuples of string keys; they print ``/``-joined (``'fc1/kernel'``),
like PyTorch's dotted state-dict keys. Because ``/`` is the separator, a key
that contains it, an empty key or a non-string key is rejected up front, so
two different trees can never flatten to the same paths.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import numpy as np

from ._spec import Uninitialized
from ._typing import Path, PathStr, PerPath
from .errors import DeletedParamError, InvalidTreeError


def is_value(x: Any) -> bool:
    """A leaf that holds numbers: a ``jax.Array`` (tracers too) or a numpy array or scalar."""
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def is_hole(x: Any) -> bool:
    """A leaf without numbers: a placeholder, or a ``ShapeDtypeStruct`` (a hole whose shape,
    dtype and sharding are all known)."""
    return isinstance(x, (Uninitialized, jax.ShapeDtypeStruct))


def is_shaped(x: Any) -> bool:
    """A leaf whose shape and dtype are both known: a value or a ``ShapeDtypeStruct``."""
    return is_value(x) or isinstance(x, jax.ShapeDtypeStruct)


def is_leaf(x: Any) -> bool:
    """What a params tree or a state may hold at a leaf: a value or a hole."""
    return is_value(x) or is_hole(x)


def is_deleted(x: Any) -> bool:
    """Whether ``x`` is a ``jax.Array`` that was deleted or donated (tracers and numpy: no)."""
    try:
        return x.is_deleted() is True
    except Exception:
        return False


def deleted_error(what: str, paths: list[str]) -> DeletedParamError:
    return DeletedParamError(
        f"The {what} holds deleted arrays: {', '.join(repr(p) for p in paths)}. They were "
        "donated to a jit-compiled call (donate_argnums) or deleted with .delete(); use the "
        "arrays that call returned instead."
    )


MAX_DEPTH = 100
"""How deeply a parameter tree may nest: deeper is a cycle or a mistake, and would
exhaust Python's recursion limit."""


def join(path: Path) -> PathStr:
    """``('fc1', 'kernel') -> 'fc1/kernel'``; the root prints as ``'<root>'``."""
    return "/".join(path) if path else "<root>"


def flatten(
    tree: Mapping[str, Any], is_leaf: Callable[[Any], bool], *, what: str = "tree"
) -> dict[Path, Any]:
    """Flattens nested mappings to ``{path: leaf}``, checking every key and leaf.

    Raises:
      InvalidTreeError: for a non-mapping top level, an illegal key, or a leaf
        for which ``is_leaf`` is false (a ``str``, ``None``, a ``list``...).
      DeletedParamError: for arrays that were deleted or donated.
      InvalidTreeError: also for a mapping that contains itself, or nesting
        deeper than :data:`MAX_DEPTH`.
    """
    if not isinstance(tree, Mapping):
        raise InvalidTreeError(
            f"The {what} must be a mapping of names to arrays or sub-mappings, "
            f"got {type(tree).__name__}. Pass a nested dict such as the one li.dry_run returns."
        )
    out: dict[Path, Any] = {}
    bad: list[str] = []

    def walk(node: Mapping[str, Any], prefix: Path, above: tuple[int, ...] = ()) -> None:
        if id(node) in above or len(prefix) >= MAX_DEPTH:
            cycle = id(node) in above
            raise InvalidTreeError(
                f"The {what} {'contains itself' if cycle else f'nests deeper than {MAX_DEPTH} levels'}"
                f" at {join(prefix)!r}: a parameter tree is a finite nesting of mappings. "
                + ("Break the cycle." if cycle else "Flatten it, or check how it was built.")
            )
        for key, value in node.items():
            if not isinstance(key, str) or not key or "/" in key:
                bad.append(
                    f"key {key!r} under {join(prefix)!r}: names must be non-empty strings "
                    "without '/' (it separates path components)"
                )
                continue
            path = (*prefix, key)
            if isinstance(value, Mapping):
                walk(value, path, (*above, id(node)))
            elif is_leaf(value):
                out[path] = value
            else:
                bad.append(f"{join(path)!r}: expected an array, got {type(value).__name__}")

    walk(tree, ())
    if bad:
        raise InvalidTreeError(f"The {what} cannot be addressed by path:\n  " + "\n  ".join(bad))
    gone = [join(p) for p, v in out.items() if is_deleted(v)]
    if gone:
        raise deleted_error(what, gone)
    return out


def flatten_state(tree: Any, what: str) -> dict[Path, Any]:
    """A state as ``{path: leaf}``: :func:`flatten` with :func:`is_leaf`, and a root placeholder
    of unknown structure as the one entry ``{(): placeholder}``."""
    if isinstance(tree, Uninitialized):
        return {(): tree}
    return flatten(tree, is_leaf, what=what)


def nodes(tree: Mapping[str, Any]) -> list[tuple[Path, Mapping[str, Any]]]:
    """Every mapping in ``tree`` with its path, the root ``()`` first, in order (unchecked)."""
    out: list[tuple[Path, Mapping[str, Any]]] = []

    def walk(node: Mapping[str, Any], prefix: Path) -> None:
        out.append((prefix, node))
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, (*prefix, key))

    walk(tree, ())
    return out


def subtrees(tree: Mapping[str, Any]) -> list[Path]:
    """Paths of every mapping in ``tree``, the root's ``()`` first, in order."""
    return [path for path, _ in nodes(tree)]


def leaves(tree: Any) -> list[tuple[Path, Any]]:
    """``[(path, leaf), ...]`` depth first, without :func:`flatten`'s checks: the cheap walk
    that a checked call does on every eager call."""
    out: list[tuple[Path, Any]] = []

    def walk(node: Any, prefix: Path) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, (*prefix, key))
        else:
            out.append((prefix, node))

    walk(tree, ())
    return out


def unflatten(flat: Mapping[Path, Any], skeleton: Iterable[Path] = ()) -> dict[str, Any]:
    """The inverse of :func:`flatten`; ``skeleton`` adds sub-dicts first, in its order."""
    root: dict[str, Any] = {}
    for path in skeleton:
        node = root
        for key in path:
            node = node.setdefault(key, {})
    for path, leaf in flat.items():
        node = root
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
    return root


Shape = tuple[int | None, ...]


def near_miss(
    path: Path, candidates: list[Path], shapes: Mapping[Path, Shape | None] | None = None
) -> Path | None:
    """The candidate a user most likely meant by ``path``, or None (see :func:`near_misses`)."""
    return near_misses([path], candidates, shapes).get(path)


def near_misses(
    wanted: list[Path], offered: list[Path], shapes: Mapping[Path, Shape | None] | None = None
) -> dict[Path, Path]:
    """Pairs paths ``wanted`` on one side with the ``offered`` ones most likely meant, each once.

    The evidence, strongest first: the only candidate under the same parent
    (``fc1/weight`` -> ``fc1/kernel``); the shapes (``shapes``, where known), the
    same or the same sizes in another order (``in_proj_weight (24, 8)`` ->
    ``c_attn.weight (8, 24)``, not the closer spelt ``c_proj.weight (8, 8)``);
    the same last name; the spelling; the position in call order (the first of
    several equal candidates pairs with the first). A candidate whose known shape
    is unrelated is never suggested, unless it is the only one under the same
    parent; one related by spelling alone must be close.
    """
    shapes = shapes or {}
    siblings: dict[Path, int] = {}
    for c in offered:
        siblings[c[:-1]] = siblings.get(c[:-1], 0) + 1
    scored = []
    for i, w in enumerate(wanted):
        for j, o in enumerate(offered):
            only_sibling = w[:-1] == o[:-1] and siblings[o[:-1]] == 1
            fit = _shape_fit(shapes.get(w), shapes.get(o))
            spelling = difflib.SequenceMatcher(None, join(w), join(o)).ratio()
            if not only_sibling and (fit == 0 or (fit == 1 and spelling < 0.6)):
                continue
            order = abs(i / max(len(wanted), 1) - j / max(len(offered), 1))
            scored.append(((only_sibling, fit, w[-1] == o[-1], spelling, -order), w, o))
    scored.sort(key=lambda s: s[0], reverse=True)
    pairs: dict[Path, Path] = {}
    taken: set[Path] = set()
    for _, w, o in scored:
        if w not in pairs and o not in taken:
            pairs[w] = o
            taken.add(o)
    return pairs


def _shape_fit(a: Shape | None, b: Shape | None) -> int:
    """4: the same shape; 3: the same sizes in another order; 2: as many elements; 1: unknown;
    0: unrelated."""
    if a is None or b is None or None in a or None in b:
        return 1
    if tuple(a) == tuple(b):
        return 4
    if sorted(a) == sorted(b):  # type: ignore[type-var]
        return 3
    return 2 if math.prod(a) == math.prod(b) else 0  # type: ignore[arg-type]


def resolve(choice: PerPath, path: Path, default: Any = None) -> Any:
    """The value ``choice`` gives the parameter at ``path`` (see :data:`PerPath`)."""
    if not isinstance(choice, Mapping):
        return default if choice is None else choice
    name = "/".join(path)
    best, best_len = default, -1
    for pattern, value in choice.items():
        if pattern == "*":
            hit = 0
        elif (
            name == pattern or name.startswith(pattern + "/") or fnmatch.fnmatchcase(name, pattern)
        ):
            hit = len(pattern) + 1
        else:
            continue
        if hit > best_len:
            best, best_len = value, hit
    return best


def nest(flat: Mapping[str, Any], *, sep: str = "/") -> dict[str, Any]:
    """A flat mapping of joined names (``'fc1/kernel'``) as lazyinit's nested tree.

    The route for files that store a tree flat, lazyinit's own checkpoints
    and foreign safetensors files alike: ``li.load_state(li.lazy_state(model),
    li.nest(safetensors.numpy.load_file(path)))``. ``sep='.'`` splits PyTorch-style
    names (``'fc1.weight'``) instead; only the nesting changes, not the names
    or the layouts (``lazyinit.interop.torch`` converts those).

    Raises:
      InvalidTreeError: for a non-mapping, a name that is not a string, an
        empty component (``'fc1//kernel'``), or a name that is both a leaf and
        a prefix of others (``'fc1'`` and ``'fc1/kernel'``), listing every one.

    Examples:
        >>> import numpy as np, lazyinit as li
        >>> tree = li.nest({"fc1/kernel": np.zeros((3, 4)), "fc1/bias": np.zeros(4)})
        >>> {k: {n: v.shape for n, v in sub.items()} for k, sub in tree.items()}
        {'fc1': {'kernel': (3, 4), 'bias': (4,)}}
        >>> sorted(li.nest({"0.weight": 1.0, "0.bias": 2.0}, sep=".")["0"])
        ['bias', 'weight']
    """
    if not isinstance(flat, Mapping):
        raise InvalidTreeError(
            f"li.nest takes a flat mapping of names to arrays, got {type(flat).__name__}."
        )
    if not isinstance(sep, str) or not sep:
        raise InvalidTreeError(f"li.nest: `sep`={sep!r} must be a non-empty string.")
    bad: list[str] = []
    paths: dict[Path, str] = {}
    for name in flat:
        parts = tuple(name.split(sep)) if isinstance(name, str) else ()
        if not parts or not all(parts) or any("/" in p for p in parts):
            bad.append(
                f"name {name!r}: names must be non-empty strings of non-empty components "
                f"separated by {sep!r}, without '/' inside a component"
            )
        else:
            paths[parts] = name
    for parts, name in paths.items():
        for i in range(1, len(parts)):
            if parts[:i] in paths:
                bad.append(
                    f"{paths[parts[:i]]!r} is a leaf and also the parent of {name!r}; "
                    "rename or drop one of them"
                )
                break
    if bad:
        raise InvalidTreeError("The flat mapping cannot be nested:\n  " + "\n  ".join(bad))
    return unflatten({parts: flat[name] for parts, name in paths.items()})
