"""Converting another library's state into lazyinit params and back: checked, all or nothing.

Import plans the rules (:mod:`lazyinit.interop._planning`), then makes the
entries each rule expects the targets of lazyinit's load rules
(:mod:`lazyinit._match`), named by the other library's keys, so that every
missing, unexpected and mis-shaped entry is worded as every other entry point
words it, and one :class:`~lazyinit.errors.StateMismatchError` lists them all before
anything is converted. Tied entries (one tensor under two names) are resolved
first: a copy the model has no place for is checked equal to its source.

Then each rule converts its entries one at a time, from a view of the caller's
memory into a new array, and drops its references before the next: the peak is
the params plus about one tensor, never a second copy of the whole state. The
caller's data is only ever read, and no param shares memory with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _match, _paths
from .._match import Report
from .._spec import Uninitialized
from .._typing import Path
from ._planning import Planned, expected, plan, structure
from ._registry import Framework, Kinds
from ._rules import Leaf

__all__ = ["import_state", "export_state", "tie_groups"]

Ties = Iterable[tuple[Path, ...]]


def tie_groups(pairs: Iterable[tuple[Path, Path]]) -> list[tuple[Path, ...]]:
    """Groups of entries that hold one tensor, from ``(copy, source)`` pairs (transitively)."""
    groups: list[set[Path]] = []
    for a, b in pairs:
        hit = [g for g in groups if a in g or b in g]
        merged = {a, b}.union(*hit)
        groups = [g for g in groups if g not in hit] + [merged]
    return [tuple(sorted(g)) for g in groups]


def _entries_of(fw: Framework, item: Planned) -> str:
    if not item.lazy:
        return f"{item.where} (an entry lazyinit does not keep)"
    return f"{item.where}, parameter {', '.join(repr(_paths.join(p)) for p in item.lazy)}"


def _declared_unused(kinds: Kinds | None, noun: str) -> list[str]:
    if kinds is None or not kinds.declared:
        return []
    return [
        f"layouts={{{p!r}: {v!r}}} applies to no layer: no layer at a path it matches, and "
        f"without a module in {noun}, has a rule for {v!r} (patterns are lazyinit layer paths, "
        "'/'-joined, as for dtype=)"
        for p, v in kinds.declared.items()
        if p not in kinds.used
    ]


# ---------------------------------------------------------------------------
# The other library's state -> lazyinit params.


def import_state(
    fw: Framework,
    model: Any,
    state: Mapping[Path, Any],
    args: tuple,
    kwargs: dict,
    *,
    strict: bool,
    rename: Any,
    problems: list[str],
    kinds: Kinds | None = None,
    ties: Ties = (),
    fetch: Callable[[Any], Any] = lambda v: v,
) -> tuple[dict, Report]:
    """``state`` (flat, other-library paths -> entries) converted into a lazyinit params tree.

    ``state``'s values need only a ``shape`` and a ``dtype`` until converted; ``fetch``
    turns one into an array (a numpy view of the caller's memory, or a ``jax.Array``).
    ``problems`` may already hold lines found while reading ``state``; they are reported
    together with the rest. ``ties`` are groups of entries that hold one tensor.
    """
    example = f"{fw.importer}(model, state, x)"
    s = structure(model, args, kwargs, example)
    planned = plan(fw, s, rename=rename, kinds=kinds, problems=problems)
    problems += _declared_unused(kinds, "the state")
    targets: dict[Path, _match.Target] = {}
    about: dict[Path, str] = {}
    owner: dict[Path, Planned] = {}
    state, tied = _resolve_ties(fw, list(ties), planned, state, fetch, problems)
    for item in planned:
        for o, e in zip(item.other, expected(item, state)):
            if e is None and o in state:  # cannot be turned into the layer's params
                problems.append(
                    _match.size_mismatch(
                        f"{fw.show(o)!r} ({_entries_of(fw, item)})",
                        tuple(np.shape(state[o])),
                        tuple(l.shape for l in item.leaves)[0],
                        " (it does not convert to the layer's parameter)",
                    )
                )
                e = tuple(np.shape(state[o]))
            targets[o] = _match.Target(e)
            about[o] = _entries_of(fw, item)
            owner[o] = item
    incoming = {k: jax.ShapeDtypeStruct(np.shape(v), v.dtype) for k, v in state.items()}
    m = _match.match(
        targets,
        incoming,
        abstract=True,
        show=fw.show,
        about=about,
        hint=lambda found, want, path: fw.hint(found, want, owner.get(path)),
    )
    problems += _match.judge(m, missing=strict, unexpected=strict)
    found = {o: tuple(np.shape(v)) for o, v in state.items()}
    problems += fw.notes(
        planned, {o: t.shape for o, t in targets.items() if t.shape is not None}, found
    )
    if strict:
        problems += _tie_hints(fw, m.unexpected, m.taken, state, fetch)
        if rename is None:
            problems += _rename_hint(fw, m.missing, m.unexpected, set(m.taken))
    elif m.unexpected and not (args or kwargs):
        problems.append(
            f"{len(m.unexpected)} {fw.entry}(s) have no place in the structure derived without a "
            f"sample ({', '.join(repr(fw.show(k)) for k in m.unexpected[:3])}...): the model may "
            f"build children inside __call__. Pass a sample, {example}, so that the trace says "
            "where they go."
        )
    _match.refuse(
        f"Cannot convert {fw.noun} into {type(model).__name__}", problems, "The input is unchanged."
    )
    taken = set(m.taken)
    flat: dict[Path, Any] = {}
    missing: list[Path] = []
    for item in planned:
        if all(o in taken for o in item.other):
            flat.update(zip(item.lazy, _to_lazy(item, state, fetch)))
        else:
            missing.extend(item.lazy)
    # Every layer's sub-dict, param-less ones too (``{}``), in call order: a dry run's tree.
    params = _paths.unflatten({p: flat[p] for p in s.leaves if p in flat}, list(s.layers))
    report = Report(
        loaded=tuple(sorted(_paths.join(p) for p in flat)),
        missing=tuple(sorted(_paths.join(p) for p in missing)),
        unexpected=tuple(sorted(fw.show(k) for k in m.unexpected)),
        tied=tuple(sorted(fw.show(k) for k in tied)),
    )
    return params, report


def _to_lazy(item: Planned, state: Mapping[Path, Any], fetch: Callable[[Any], Any]) -> tuple:
    """One rule's params, from views of its entries: the entries are not copied first (a host
    array is aliased by the device array, where the backend allows), and a param that is still
    such a view is copied, so that none shares memory with the caller's data."""
    views = []
    for o in item.other:
        value = fetch(state[o])
        if isinstance(value, (np.ndarray, np.generic)):
            value = jax.device_put(np.asarray(value), may_alias=True)
        views.append(value)
    return tuple(_owned(v, views) for v in item.rule.to_lazy(*views))


def _owned(value: Any, views: list[Any]) -> Any:
    if any(value is v or _same_buffer(value, v) for v in views):
        return jnp.array(value, copy=True)
    return value


def _same_buffer(a: Any, b: Any) -> bool:
    try:
        return bool(a.unsafe_buffer_pointer() == b.unsafe_buffer_pointer())
    except Exception:  # a sharded or deleted array, or not a jax.Array
        return False


def _equal(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(np.array_equal(a.flat[:16], b.flat[:16]) and np.array_equal(a, b))


def _resolve_ties(
    fw: Framework,
    ties: list[tuple[Path, ...]],
    planned: list[Planned],
    state: Mapping[Path, Any],
    fetch: Callable[[Any], Any],
    problems: list[str],
) -> tuple[dict[Path, Any], list[Path]]:
    """``state`` with each group of tied entries resolved: a wanted entry that is absent is
    filled from a present one; a present one the model has no place for is checked equal to
    the one loaded and dropped. Returns the new state and the entries not loaded under their
    own name."""
    wanted = {o for item in planned for o in item.other}
    out = dict(state)
    tied: list[Path] = []
    for group in ties:
        present = [p for p in group if p in state]
        if not present:
            continue
        source = next((p for p in present if p in wanted), present[0])
        for p in group:
            if p in wanted and p not in state:
                out[p] = state[source]
        for p in present:
            if p in wanted:
                continue
            if p != source and not _equal(fetch(state[p]), fetch(state[source])):
                problems.append(
                    f"{fw.show(p)!r} is tied to {fw.show(source)!r} (one tensor under two "
                    "names), but their values differ: the model keeps one of them. Pass the "
                    "state in which they are one tensor, or give the model a parameter of "
                    "its own for each"
                )
            del out[p]
            tied.append(p)
    return out, tied


def _tie_hints(
    fw: Framework,
    unexpected: list[Path],
    taken: list[Path],
    state: Mapping[Path, Any],
    fetch: Callable[[Any], Any],
) -> list[str]:
    """An unexpected entry equal to a loaded one is probably a tied copy: say how to declare it.
    Only entries with varied values count (a fresh LayerNorm's ones equal every other's)."""
    lines = []
    for u in unexpected[:32]:  # a bound: a state of another model has many, none tied
        shape = tuple(np.shape(state[u]))
        mine = np.asarray(fetch(state[u]))
        if mine.size < 2 or bool(np.all(mine == mine.flat[0])):
            continue
        for t in taken:
            if tuple(np.shape(state[t])) == shape and _equal(mine, fetch(state[t])):
                lines.append(
                    f"{fw.show(u)!r} holds the same values as {fw.show(t)!r}: if they are tied "
                    "(one tensor under two names, as a language model's output layer and its "
                    f"embedding), pass ties={{{fw.show(u)!r}: {fw.show(t)!r}}}, or the "
                    f"{fw.name} module itself, whose ties are found"
                )
                break
    return lines


def _rename_hint(
    fw: Framework, missing: list[Path], unexpected: list[Path], used: set[Path]
) -> list[str]:
    """A ``rename=`` suggestion: one prefix for everything (DataParallel's ``module.``), or,
    when whole modules are missing and others are unexpected (``fc1.weight`` against
    ``0.weight``), the pairs: the names differ in structure, not spelling."""
    prefixed = _prefix_hint(fw, missing, unexpected)
    if prefixed is not None:
        return [prefixed]
    matched = {fw.module_of(k) for k in used}
    ours = list(dict.fromkeys(m for m in map(fw.module_of, missing) if m not in matched))
    theirs = list(dict.fromkeys(m for m in map(fw.module_of, unexpected) if m not in matched))
    if not ours or not theirs or set(ours) & set(theirs):
        return []
    if len(ours) == len(theirs):
        pairs = ", ".join(f"{'/'.join(a)!r}: {fw.show(b)!r}" for a, b in zip(ours, theirs))
        example = f"rename={{{pairs}}}"
    else:
        example = f"rename={{{'/'.join(ours[0])!r}: {fw.show(theirs[0])!r}, ...}}"
    return [
        f"the model's layers ({', '.join(repr('/'.join(a)) for a in ours)}) have no entries and "
        f"the state has entries under other modules ({', '.join(repr(fw.show(b)) for b in theirs)}): "
        f"if they are the same layers under other names, map lazyinit layer paths to {fw.name} "
        f"module paths with {example} (in call order; check the pairs)"
    ]


def _prefix_hint(fw: Framework, missing: list[Path], unexpected: list[Path]) -> str | None:
    """One ``rename=`` when the state's entries are the model's under a prefix (or the reverse)."""
    if not missing or not unexpected:
        return None
    for longer, shorter, extra_in_state in (
        (unexpected, missing, True),
        (missing, unexpected, False),
    ):
        short = set(shorter)
        counts: dict[Path, int] = {}
        for p in longer:
            for k in range(1, len(p)):
                if p[k:] in short:
                    counts[p[:k]] = counts.get(p[:k], 0) + 1
                    break
        if not counts:
            continue
        prefix, n = max(counts.items(), key=lambda c: c[1])
        if n < len(shorter):  # the prefix must explain every entry of the shorter side
            continue
        shown = fw.show(prefix)
        if not extra_in_state:
            return (
                f"every missing entry is an unexpected one under {shown!r}: the model's layers "
                f"are under {'/'.join(prefix)!r} and the state's are not; pass "
                f"rename={{{'/'.join(prefix)!r}: ''}}"
            )
        if all(p[: len(prefix)] == prefix for p in unexpected):
            return (
                f"every entry of the state is under {shown!r} (as DataParallel and "
                "DistributedDataParallel save them) and the model's are not: pass "
                f"rename={{'': {shown!r}}}"
            )
        tops = list(dict.fromkeys(p[0] for p in shorter))
        pairs = ", ".join(f"{t!r}: {fw.show((*prefix, t))!r}" for t in tops)
        return f"the model's entries are in the state under {shown!r}: pass rename={{{pairs}}}"
    return None


# ---------------------------------------------------------------------------
# lazyinit params -> the other library's state.


def export_state(
    fw: Framework,
    model: Any,
    params: Mapping,
    args: tuple,
    kwargs: dict,
    *,
    rename: Any,
    kinds: Kinds | None = None,
    ties: Ties = (),
) -> dict[Path, jax.Array]:
    """``params`` converted into the other library's entries (flat, by path), in plan order;
    every entry of a group of ``ties`` is written when one of them is."""
    flat = _paths.flatten(params, _paths.is_leaf, what="params")
    problems: list[str] = []
    for p, v in flat.items():
        if isinstance(v, jax.ShapeDtypeStruct):
            problems.append(f"{_paths.join(p)!r} is abstract (a ShapeDtypeStruct), not an array")
        elif isinstance(v, Uninitialized):
            problems.append(
                f"{_paths.join(p)!r} is uninitialized: run li.dry_run(model, key, sample) first"
            )
    what = f"Cannot convert {type(model).__name__}'s params to {fw.noun}"
    _match.refuse(what, problems)
    s = structure(model, args, kwargs, f"{fw.exporter}(model, params, x)")
    # The params must be the model's: the load rules, on shapes (unknown dims take any size).
    m = _match.match(
        {p: _match.Target(leaf.shape) for p, leaf in s.leaves.items()},
        {p: jax.ShapeDtypeStruct(np.shape(v), v.dtype) for p, v in flat.items()},
        abstract=True,
    )
    _match.refuse(what, _match.judge(m, missing=True, unexpected=True))
    leaves = {
        p: Leaf(tuple(np.shape(flat[p])), leaf.dtype, leaf.trainable)
        for p, leaf in s.leaves.items()
    }
    planned = plan(
        fw, dataclasses.replace(s, leaves=leaves), rename=rename, kinds=kinds, problems=problems
    )
    problems += _declared_unused(kinds, "the module given")
    _match.refuse(what, problems)
    out: dict[Path, jax.Array] = {}
    for item in planned:
        values = item.rule.to_other(*(flat[p] for p in item.lazy))
        for o, v in zip(item.other, values):
            if o in out:
                problems.append(
                    f"{fw.show(o)!r} would be written twice (by {item.where} and another "
                    "layer): give the layers distinct names, or pass rename="
                )
            out[o] = v
    for group in ties:
        written = [p for p in group if p in out]
        for p in written[1:]:
            if not _equal(out[p], out[written[0]]):
                problems.append(
                    f"{fw.show(p)!r} and {fw.show(written[0])!r} are tied (one tensor under two "
                    f"names in {fw.noun}) but the params give them different values: "
                    f"{fw.name} would keep only one. Tie them in the model (one parameter), or "
                    "export without the tie"
                )
        for p in group:
            if written and p not in out:
                out[p] = out[written[0]]
    _match.refuse(what, problems)
    return out
