"""``load`` and ``check_checkpoint``: a file written by ``save``, restored against a template.

The file is safetensors with lazyinit's metadata (see
:mod:`lazyinit.checkpoint._format`): arrays under their ``/``-joined paths,
placeholders with their known dimensions and dtype, a format version and
digests. Loading never unpickles and never runs code from the file. Loading
against a ``like`` tree checks every path, shape and dtype from the header
before reading any tensor and reports every problem at once; then it reads
each tensor (or, for a sharded template, each of this process's pieces of it)
straight into the buffer that becomes its array (``_pieces.py``,
``_transfer.py``), checking every byte against its digest (``_read.py``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from .. import _match, _paths, _progress
from .._match import Report
from .._match import report as _report
from .._materialize import placement
from .._spec import Uninitialized
from .._state import lazy_state
from .._typing import Params, Path
from ..errors import InvalidArgumentError
from . import _format, _gc, _pieces, _read, _transfer

__all__ = ["load", "check_checkpoint", "CheckReport"]


# ---------------------------------------------------------------------------
# Loading against a template.


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
        return placement(want.device)
    if isinstance(want, (jax.Array, jax.ShapeDtypeStruct)):
        return getattr(want, "sharding", None)
    return None


def _needs_x64(dtype: np.dtype) -> bool:
    """float64, int64, uint64 and complex128 exist in JAX only with 64-bit types on."""
    return (dtype.itemsize == 8 and dtype.kind in "fiu") or (
        dtype.kind == "c" and dtype.itemsize == 16
    )


class _Decisions:
    """What loading the entries of a file against ``like`` does to each path, checked first."""

    def __init__(self, want: dict[Path, Any] | None, entries: dict[Path, Any], cast: bool):
        self.want, self.entries = want, entries
        if want is None:  # as saved: no template, so no rule to apply
            m = _match.Matched(
                values={p: e for p, e in entries.items() if not isinstance(e, Uninitialized)},
                holes={
                    p: _match.Hole(p, _match.Target.of(e), e.shape, e.dtype, None)
                    for p, e in entries.items()
                    if isinstance(e, Uninitialized)
                },
            )
        else:  # the load rules, as every entry point applies them (lazyinit._match)
            structs = {  # one per (dtype, shape), shared: a ShapeDtypeStruct is immutable
                e: jax.ShapeDtypeStruct(e[1], e[0])
                for e in set(e for e in entries.values() if not isinstance(e, Uninitialized))
            }
            saved = {
                p: e if isinstance(e, Uninitialized) else structs[e] for p, e in entries.items()
            }
            targets = {p: _match.Target.of(w) for p, w in want.items()}
            m = _match.match(targets, saved, cast=cast, abstract=True)
        self.matched = m
        self.problems: list[str] = list(m.problems)
        self.how: dict[Path, Any] = {}  # path -> the placeholder to return or the dtype to read in
        for p in entries:
            if p in m.holes:
                self.how[p] = m.holes[p].placeholder()
            elif p in m.values:
                value = m.values[p]
                dtype = np.dtype(value[0] if isinstance(value, tuple) else value.dtype)
                if _needs_x64(dtype) and not jax.config.read("jax_enable_x64"):
                    self.problems.append(
                        f"{_paths.join(p)!r} is {dtype.name} but 64-bit types are off: run "
                        "jax.config.update('jax_enable_x64', True), or load with a 32-bit "
                        "template and cast=True"
                    )
                self.how[p] = dtype
        self.missing: list[Path] = list(m.missing)
        self.unexpected: list[Path] = list(m.unexpected)
        self.casts: list[Path] = list(m.cast)
        self.covered: dict[Path, Path] = {} if want is None else _covered(want, entries)

    def refused(self, strict: bool) -> list[str]:
        """Every line a load with this ``strict`` refuses: the rule problems, and with
        ``strict=True`` (and a template) every missing and every unexpected path."""
        strict = strict and self.want is not None
        lines = _match.judge(self.matched, missing=strict, unexpected=strict)
        return lines + self.problems[len(self.matched.problems) :]

    def report(self) -> dict[str, list[Path]]:
        """The report's groups: loaded, left for a dry run to initialize, kept, and so on."""
        want = self.want or {}
        holes = [p for p, h in self.how.items() if isinstance(h, Uninitialized)]
        return dict(
            loaded=[p for p, h in self.how.items() if h is not None and p not in holes],
            initialized=holes + [p for p in self.missing if isinstance(want[p], Uninitialized)],
            kept=[p for p in self.missing if not isinstance(want[p], Uninitialized)],
            missing=self.missing,
            unexpected=self.unexpected,
            cast=self.casts,
        )


@dataclasses.dataclass(frozen=True)
class CheckReport(Report):
    """:func:`check_checkpoint`'s answer: the :class:`Report` a load would give, plus why not,
    and the memory the load will take.

    Attributes:
      mismatched: one line per path whose saved size or dtype does not fit
        (or a placeholder where an array is wanted), as the load's error words it.
      ok: whether ``li.load`` with the same ``strict`` and ``cast`` would succeed.
      device_bytes: ``{device: bytes}``, what the loaded arrays will take on each
        device (``'cpu:0'``, ``'cuda:3'``), of every process.
      process_bytes: ``{process index: bytes}``, each process's peak host memory
        during the load: the arrays of its CPU devices (their memory is the
        host's) plus the largest buffer the load holds at once, beyond what the
        process held before.
    """

    mismatched: tuple[str, ...] = ()
    ok: bool = True
    device_bytes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    process_bytes: Mapping[int, int] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        groups = [f.name for f in dataclasses.fields(Report)]
        rows = [f"{name}: {', '.join(getattr(self, name)) or '-'}" for name in groups]
        rows.append(f"mismatched: {'; '.join(self.mismatched) or '-'}")
        rows.append(f"ok: {self.ok}")
        rows.append(f"memory per device: {_sizes(self.device_bytes)}")
        rows.append(f"memory per process: {_sizes(self.process_bytes)}")
        return "\n".join(rows)


def _sizes(by: Mapping[Any, int]) -> str:
    return ", ".join(f"{k}: {_mib(n)}" for k, n in by.items()) or "-"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def check_checkpoint(
    path: str | os.PathLike[str] | bytes,
    model_or_like: Any,
    *sample: Any,
    strict: bool = True,
    cast: bool = False,
    **kwargs: Any,
) -> CheckReport:
    """Whether a checkpoint fits a model, from the file's header alone.

    Reads only the header (its time does not grow with the file's size) and
    returns the report :func:`load` would give against the same template:
    what would be loaded, left for a dry run to initialize, kept, missing,
    unexpected or cast, and every size or dtype mismatch, each by path; and
    the memory the load will take, on each device and at its peak in each
    process (``device_bytes``, ``process_bytes``), before a byte moves. The
    tensor bytes and their digests are not read, so a file whose data is
    corrupt passes here and fails in :func:`load`.

    Args:
      path: the checkpoint.
      model_or_like: a model (its template is ``li.lazy_state(model, *sample,
        **kwargs)``) or a template tree, as :func:`load`'s ``like``.
      *sample: the model's sample inputs (arrays or ``jax.ShapeDtypeStruct``).
      strict: as for :func:`load`; it decides ``ok``.
      cast: as for :func:`load`; it decides ``ok``.

    Raises:
      ReadCheckpointError: the header is malformed or it is not a lazyinit checkpoint.
      InvalidArgumentError: a template tree was given with sample inputs.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "linear.safetensors")
        >>> li.save(path, li.dry_run(li.Linear(4), jax.random.key(0), jnp.ones((2, 3))))
        >>> report = li.check_checkpoint(path, {"kernel": jax.ShapeDtypeStruct((5, 4), jnp.float32)})
        >>> report.ok, report.unexpected, report.mismatched
        (False, ('bias',), ("size mismatch for 'kernel': found shape (3, 4), expected (5, 4)",))
    """
    path = os.fsdecode(path)
    if isinstance(model_or_like, (Mapping, Uninitialized)):
        if sample or kwargs:
            raise InvalidArgumentError(
                "check_checkpoint got a template tree and sample inputs or keywords: pass "
                "either a model with its sample inputs, or a template tree (like=) alone."
            )
        like = model_or_like
    else:
        like = lazy_state(model_or_like, *sample, **kwargs)
    with _gc.paused():
        want = _paths.flatten_state(like, "like tree")
        header = _format.read_header(path)
        decided = _Decisions(want, header.entries, cast)
        needs = _pieces.memory(_moves(decided, header), min(header.chunk, header.data_size))
    groups = decided.report()
    refused = decided.refused(strict)
    return CheckReport(
        **{k: tuple(sorted(_paths.join(p) for p in v)) for k, v in groups.items()},
        mismatched=tuple(decided.problems),
        ok=not refused,
        device_bytes=needs.device_bytes,
        process_bytes=needs.process_bytes,
    )


def load(
    path: str | os.PathLike[str] | bytes,
    like: Params | None = None,
    *,
    strict: bool = True,
    cast: bool = False,
    progress: bool | None = None,
) -> tuple[Params, Report]:
    """Loads a file written by :func:`save`, checked against ``like``, all or nothing.

    Args:
      path: the file. It is read as data only: never unpickled, never executed.
        Only a regular file is read, header first; a file whose size disagrees
        with its header is refused before its tensors are read.
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
        leaf stays where the file has none, extra entries are ignored, and the
        report says so.
      cast: convert saved dtypes to the template's instead of refusing.
      progress: show a progress bar (``True``), never (``False``), or, by default,
        on a terminal or in Jupyter when the load moves about a gigabyte or more.

    Each tensor is read straight into the buffer that becomes its array (on a
    CPU device, without a copy); with a template sharded over several devices,
    each process reads only the pieces its own devices keep. Every byte read is
    checked against its digest first.

    Returns:
      Always ``(tree, report)``. ``tree`` is a new nested dict shaped like
      ``like`` (or as saved): ``jax.Array`` leaves, and
      :class:`~lazyinit.Uninitialized` for placeholders, which
      ``li.dry_run(model, key, x, state=tree)`` initializes while keeping every
      loaded array bit for bit. ``report`` is a :class:`~lazyinit.Report` of
      what was loaded, left to initialize, kept, missing, unexpected and cast;
      :func:`check_checkpoint` gives the same report from the header alone.

    Raises:
      ReadCheckpointError: the file is truncated, corrupt, not a regular file or
        not a lazyinit checkpoint (:class:`~lazyinit.errors.ReadPickleError` for pickle-based
        files, :class:`~lazyinit.errors.ReadVersionError` for a newer format version).
      StateMismatchError: the file does not fit ``like``; lists every path.
      InvalidTreeError: ``like`` holds something other than arrays,
        ``ShapeDtypeStruct``s and placeholders.
      InvalidArgumentError: ``progress`` is not True, False or None.
      OSError: the file cannot be opened.
    """
    path = os.fsdecode(path)
    _progress.check(progress, "li.load")  # a bad progress= is refused before reading
    with _gc.paused():
        return _load(path, like, strict, cast, progress)


def _load(
    path: str, like: Params | None, strict: bool, cast: bool, progress: bool | None
) -> tuple[Params, Report]:
    want = _paths.flatten_state(like, "like tree") if like is not None else None
    with _format.opened(path) as (fd, header):
        data = _read.Data(path, fd, header)  # a version 1 file is read and checked here, first
        decided = _Decisions(want, header.entries, cast)
        _match.refuse(
            f"Cannot load {path!r}",
            decided.refused(strict),
            "Load a checkpoint made for this model and input size"
            + ("." if not strict else ", or pass strict=False to load what fits and get a report."),
        )
        moves = _moves(decided, header)
        with _progress.bar("li.load", sum(m.nbytes for m in moves), progress) as advance:
            out: dict[Path, Any] = _transfer.transfer(data, moves, advance)
    out.update((p, h) for p, h in decided.how.items() if isinstance(h, Uninitialized))
    covered = decided.covered
    if want is None:
        tree = _unflatten_layout(header.layout, out)
    else:
        flat: dict[Path, Any] = {}
        for p, w in want.items():
            if p in covered.values():  # the placeholder gives way to the subtree it stood for
                flat.update({q: out[q] for q, owner in covered.items() if owner == p})
            else:
                flat[p] = out[p] if p in out else decided.matched.values.get(p, w)
        tree = _tree(flat, like, header.layout)
    return tree, _report(**decided.report())


def _moves(decided: _Decisions, header: _format.Header) -> list[_pieces.Move]:
    """How each loaded tensor reaches its template's placement (the default device without one)."""
    moves = []
    for p, how in decided.how.items():
        if isinstance(how, Uninitialized):
            continue
        template = None if decided.want is None else decided.want[decided.covered.get(p, p)]
        moves.append(_pieces.plan(p, "/".join(p), how, _placement(template), header))
    return moves


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
