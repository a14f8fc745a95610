"""``save`` and ``load``: one portable, safe file per parameter tree, restored against a template.

The file is safetensors with lazyinit's metadata (see
:mod:`lazyinit._checkpoint_format`): arrays under their ``/``-joined paths,
placeholders with their known dimensions and dtype, a format version and a
checksum. Loading never unpickles and never runs code from the file. Saving
is atomic. Loading against a ``like`` tree checks every path, shape and dtype
before building anything and reports every problem at once.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from . import _checkpoint_format as _format
from . import _paths
from ._errors import StateMismatchError, WriteCheckpointError
from ._spec import Uninitialized
from ._state import Report, _report, describe_mismatch, is_leaf
from ._typing import Params, Path

__all__ = ["save", "load"]


def save(
    path: str | os.PathLike[str], tree: Params | Uninitialized, *, overwrite: bool = False
) -> None:
    """Saves a parameter tree, a lazy state or any nested dict of arrays to one file, atomically.

    Leaves may be arrays (``jax.Array``, numpy) of any dtype safetensors
    stores (floats incl. bfloat16 and float8, ints, bool, complex64), of any
    shape including scalars and zero-size ones, and
    :class:`~lazyinit.Uninitialized` placeholders, whose known dimensions
    and dtype are kept (their device is not: it belongs to the machine).

    Args:
      path: the file to write, conventionally ``*.safetensors``.
      tree: a nested dict with string keys, or a lone placeholder: the lazy
        state of a layer that names its parameters only from its input (a
        ``Conv`` with an int ``kernel_size``), which loads back as itself.
      overwrite: replace ``path`` if it exists. Either way, the replacement is
        atomic: readers see the old file or the new one, never a mix.

    Raises:
      OverwriteCheckpointError: ``path`` exists and ``overwrite`` is false.
      WriteCheckpointError: a leaf cannot be saved (abstract, unsupported
        dtype), listing every one; nothing is written.
      DeletedParamError: a leaf was deleted or donated to a jit-compiled call.
      InvalidTreeError: a leaf is not an array or a key is not a plain string.

    >>> import jax, jax.numpy as jnp, lazyinit as li, tempfile, os
    >>> model = li.Linear(4)
    >>> params = li.dry_run(model, jax.random.key(0), jnp.ones((2, 3)))
    >>> path = os.path.join(tempfile.mkdtemp(), "linear.safetensors")
    >>> li.save(path, params)
    >>> jax.tree.map(jnp.shape, li.load(path, like=li.lazy_state(model)))
    {'bias': (4,), 'kernel': (3, 4)}
    """
    path = os.fspath(path)
    if path.lower().endswith(_format.PICKLE_SUFFIXES):
        raise WriteCheckpointError(
            f"Refusing to write {path!r}: its suffix says pickle, which li.save does not write. "
            "Name it *.safetensors."
        )
    if os.path.exists(path) and not overwrite:
        raise _format.exists_error(path)
    flat = _flatten(tree, "tree to save")
    data = _format.encode(path, flat, tree)
    _format.write_atomic(path, data, overwrite)


def _flatten(tree: Any, what: str) -> dict[Path, Any]:
    """``{path: leaf}``; a root placeholder of unknown structure is the root's one leaf."""
    if isinstance(tree, Uninitialized):
        return {(): tree}
    return _paths.flatten(tree, is_leaf, what=what)


# ---------------------------------------------------------------------------
# Loading against a template.


def _found(entry: Any) -> Any:
    return entry if isinstance(entry, Uninitialized) else jax.ShapeDtypeStruct(entry[1], entry[0])


def _merge_placeholders(path: Path, want: Uninitialized, got: Uninitialized) -> Any:
    """Two placeholders for one path: the union of what each knows, or None if they disagree."""
    if want.shape is None or got.shape is None:
        shape = want.shape if got.shape is None else got.shape
    elif len(want.shape) != len(got.shape) or any(
        a is not None and b is not None and a != b for a, b in zip(want.shape, got.shape)
    ):
        return None
    else:
        shape = tuple(a if a is not None else b for a, b in zip(want.shape, got.shape))
    return Uninitialized(shape, want.dtype or got.dtype, want.device)


def _check(
    path: Path, want: Any, got: Any, cast: bool, problems: list[str], casts: list[Path]
) -> Any:
    """What ``path`` becomes: the placeholder to return, the dtype to read in, or None (a problem)."""
    where = _paths.join(path)
    if isinstance(got, Uninitialized):
        if isinstance(want, Uninitialized):
            merged = _merge_placeholders(path, want, got)
            if merged is None:
                problems.append(describe_mismatch(path, got, want, "saved placeholder", "expected"))
            return merged
        problems.append(
            f"{where!r} was saved as a placeholder {got!r} with no value, but the template "
            "wants an array. Dry-run the model with this state to initialize it, or load it "
            "into a lazy state."
        )
        return None
    dtype, shape = got
    if isinstance(want, Uninitialized):
        if not want.matches(shape):
            problems.append(describe_mismatch(path, _found(got), want, "saved", "expected"))
            return None
        want_dtype = want.dtype
    else:
        if tuple(want.shape) != shape:
            problems.append(describe_mismatch(path, _found(got), want, "saved", "expected"))
            return None
        want_dtype = np.dtype(want.dtype)
    if want_dtype is not None and np.dtype(want_dtype) != np.dtype(dtype):
        if not cast:
            problems.append(
                f"dtype mismatch for {where!r}: saved {dtype}, expected {np.dtype(want_dtype).name} "
                "(pass cast=True to convert it)"
            )
            return None
        casts.append(path)
        dtype = np.dtype(want_dtype).name
    if np.dtype(dtype).itemsize == 8 and np.dtype(dtype).kind in "fiuc":
        if not jax.config.jax_enable_x64:
            problems.append(
                f"{where!r} is {dtype} but 64-bit types are off: run "
                "jax.config.update('jax_enable_x64', True), or load with a 32-bit template "
                "and cast=True"
            )
            return None
    return np.dtype(dtype)


def _covered(want: dict[Path, Any], entries: dict[Path, Any]) -> dict[Path, Path]:
    """Saved paths that a template placeholder of unknown structure stands for, and its path.

    A lazy state shows a layer whose specs need the input to name its
    parameters (a ``Conv`` before it knows its input's rank) as one
    ``Uninitialized(shape=?)``; it takes whatever subtree the file holds there.
    When that layer is the whole model, the placeholder is the root ``()``.
    """
    out = {}
    for p in entries:
        for i in range(len(p) - 1, -1, -1):
            leaf = want.get(p[:i])
            if isinstance(leaf, Uninitialized) and leaf.shape is None and p not in want:
                out[p] = p[:i]
                break
    return out


def _placement(want: Any) -> Any:
    if isinstance(want, Uninitialized):
        from ._materialize import placement

        return placement(want.device)
    if isinstance(want, (jax.Array, jax.ShapeDtypeStruct)):
        return getattr(want, "sharding", None)
    return None


def load(
    path: str | os.PathLike[str],
    like: Params | None = None,
    *,
    strict: bool = True,
    cast: bool = False,
) -> Params | tuple[Params, Report]:
    """Loads a file written by :func:`save`, checked against ``like``, all or nothing.

    Args:
      path: the file. It is read as data only: never unpickled, never executed.
      like: the tree to restore against: arrays, ``jax.ShapeDtypeStruct``s
        (e.g. from an abstract ``li.dry_run``) or a lazy state from
        :func:`lazyinit.lazy_state` (placeholders match any size in their
        unknown dimensions; one of unknown structure, ``shape=?``, takes
        whatever subtree the file holds at its path, and as the whole
        ``like`` it takes the whole file). Every path, shape and dtype of the file is checked
        against it before any array is built, and every problem is reported at
        once. Arrays land on the template's sharding or device. Without
        ``like``, the tree comes back as it was saved.
      strict: paths of ``like`` missing from the file, and paths of the file
        missing from ``like``, are errors. With ``strict=False`` the template's
        leaf stays where the file has none, extra entries are ignored, and a
        report says so.
      cast: convert saved dtypes to the template's instead of refusing.

    Returns:
      A new nested dict shaped like ``like`` (or as saved): ``jax.Array``
      leaves, and :class:`~lazyinit.Uninitialized` for placeholders, which
      ``li.dry_run(model, key, x, state=tree)`` initializes while keeping every
      loaded array bit for bit. With ``strict=False`` or ``cast=True``,
      ``(tree, report)``: a :class:`~lazyinit.Report` of what was loaded,
      missing, unexpected and cast.

    Raises:
      ReadCheckpointError: the file is truncated, corrupt or not a lazyinit
        checkpoint (:class:`ReadPickleError` for pickle-based files,
        :class:`ReadVersionError` for a newer format version).
      StateMismatchError: the file does not fit ``like``; lists every path.
      InvalidTreeError: ``like`` holds something other than arrays,
        ``ShapeDtypeStruct``s and placeholders.
      OSError: the file cannot be opened.
    """
    path = os.fspath(path)
    want = _flatten(like, "like tree") if like is not None else None
    entries, layout, arrays = _format.read(path)  # a corrupt file is reported as such first
    problems: list[str] = []
    plan: dict[Path, Any] = {}
    missing, unexpected, casts = [], [], []
    covered: dict[Path, Path] = {}
    if want is None:
        for p, e in entries.items():
            as_saved = e if isinstance(e, Uninitialized) else Uninitialized(e[1], e[0])
            plan[p] = _check(p, as_saved, e, False, problems, casts)
    else:
        covered = _covered(want, entries)
        for p, w in want.items():
            if p in entries:
                plan[p] = _check(p, w, entries[p], cast, problems, casts)
            elif p not in covered.values():
                missing.append(p)
        for p, owner in covered.items():
            plan[p] = _check(p, want[owner], entries[p], cast, problems, casts)
        unexpected = [p for p in entries if p not in want and p not in covered]
        if strict:
            problems += [
                f"missing key {_paths.join(p)!r}{_paths.near_miss(p, list(entries))}"
                for p in missing
            ]
            problems += [
                f"unexpected key {_paths.join(p)!r}{_paths.near_miss(p, list(want))}"
                for p in unexpected
            ]
    if problems:
        raise StateMismatchError(
            f"Cannot load {path!r} ({len(problems)} problem(s)); nothing was loaded:\n  "
            + "\n  ".join(problems)
            + "\nLoad a checkpoint made for this model and input size"
            + ("." if not strict else ", or pass strict=False to load what fits and get a report."),
            tuple(problems),
        )
    out: dict[Path, Any] = {}
    for p, how in plan.items():
        if isinstance(how, Uninitialized):
            out[p] = how
            continue
        host = arrays["/".join(p)].astype(how, copy=False)
        template = None if want is None else want[covered.get(p, p)]
        out[p] = jax.device_put(host, _placement(template))
    if want is None:
        tree = _unflatten_layout(layout, out)
    else:
        flat: dict[Path, Any] = {}
        for p, w in want.items():
            if p in covered.values():  # the placeholder gives way to the subtree it stood for
                flat.update({q: out[q] for q, owner in covered.items() if owner == p})
            else:
                flat[p] = out.get(p, w)
        tree = _tree(flat, like, layout)
    if strict and not cast:
        return tree
    return tree, _report(
        loaded=[p for p in plan if not isinstance(plan[p], Uninitialized)],
        missing=missing,
        unexpected=unexpected,
        cast=casts,
    )


def _tree(flat: dict[Path, Any], like: Any, layout: Any) -> Any:
    """The loaded tree, nested like ``like``; under a root placeholder, like the file."""
    if () in flat:  # the root placeholder, merged with the file's root placeholder
        return flat[()]
    if isinstance(like, Uninitialized):  # it gave way to the whole saved tree
        return _paths.unflatten(flat, _paths.subtrees(layout))
    return _paths.unflatten(flat, _paths.subtrees(like))


def _unflatten_layout(layout: Any, flat: dict[Path, Any], prefix: Path = ()) -> Any:
    if not isinstance(layout, dict):  # the file holds a root placeholder
        return flat[()]
    return {
        k: _unflatten_layout(v, flat, (*prefix, k)) if isinstance(v, dict) else flat[(*prefix, k)]
        for k, v in layout.items()
    }
