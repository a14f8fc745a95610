"""The machinery shared by the PyTorch and flax converters: rules, planning, all-or-nothing conversion.

A *rule* ties some parameters of one lazyinit layer to some entries of the
other library's state, with a function each way (a transpose, a split, a
reshape). Rules come from a converter registered per layer type; a layer
without one maps each of its parameters to an entry of the same name, as is.

*Planning* finds which layer owns which parameter from the model's trace
(:mod:`lazyinit._structure`): on the sample when one is given, else the trace
a dry run cached. Importing without either (PyTorch's own flow: a full state
loaded into a lazy model) uses the structure derived from the layers' specs
and fields when it is complete, and the shapes of the incoming entries for
the dims that depend on the input; a later dry run checks it against the
trace. A registered layer claims every parameter below
its path, so a converter may regroup its children's parameters (attention's
packed ``in_proj_weight``).

Conversion validates everything first (missing and unexpected entries, and
each entry's shape against what the rule expects, derived by
``jax.eval_shape`` of the rule's export function) and raises one
:class:`~lazyinit.errors.StateMismatchError` listing every problem; only then does it
build a new tree. The caller's data is only ever read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _match, _paths, _structure
from .._match import Report
from .._recorder import Trace
from .._spec import Uninitialized
from .._tracer import trace
from .._typing import Path
from ..errors import InferShapeError

__all__ = ["Rule", "Leaf", "Framework", "same", "permute", "extra", "import_state", "export_state"]

Convert = Callable[..., Any]
Shape = tuple[int | None, ...]
Converter = Callable[..., list["Rule"]]
"""``converter(layer, leaves) -> list[Rule]``: how one layer type's parameters map to entries."""


@dataclasses.dataclass(frozen=True)
class Leaf:
    """What a converter knows of one parameter: its shape, dtype and whether it is trainable."""

    shape: tuple[int, ...]
    dtype: Any
    trainable: bool = True


@dataclasses.dataclass(frozen=True)
class Rule:
    """Parameters ``lazy`` of a layer correspond to entries ``other`` of the other library.

    Paths are relative to the layer (lazyinit) and to its module (the other
    library). ``to_lazy(*other_arrays)`` and ``to_other(*lazy_arrays)`` each
    return a tuple, in the order of the paths. A rule with no ``lazy`` paths
    is an entry lazyinit does not keep (PyTorch's ``num_batches_tracked``):
    it is checked on import and written by ``to_other()`` on export.
    """

    lazy: tuple[Path, ...]
    other: tuple[Path, ...]
    to_lazy: Convert
    to_other: Convert


def same(name: str, other: str | Path | None = None) -> Rule:
    """Parameter ``name`` is entry ``other`` (default: the same name), in the same layout."""
    return permute(name, other or name, None)


def permute(name: str, other: str | Path, perm: tuple[int, ...] | None) -> Rule:
    """Parameter ``name`` is entry ``other`` with its axes transposed by ``perm`` (lazyinit -> other)."""
    target = (other,) if isinstance(other, str) else tuple(other)
    if perm is None:
        return Rule(((name,),), (target,), lambda a: (a,), lambda a: (a,))
    back = tuple(int(i) for i in np.argsort(perm))
    return Rule(
        ((name,),),
        (target,),
        lambda a: (jnp.transpose(a, back),),
        lambda a: (jnp.transpose(a, perm),),
    )


def extra(other: str | Path, value: Callable[[], Any]) -> Rule:
    """An entry of the other library that lazyinit does not keep; ``value()`` is written on export."""
    target = (other,) if isinstance(other, str) else tuple(other)
    return Rule((), (target,), lambda a: (), lambda: (value(),))


@dataclasses.dataclass(frozen=True)
class Framework:
    """How one library addresses its state.

    Attributes:
      name: ``'PyTorch'``, ``'flax'``: how messages name the library.
      noun: how messages name its state (``'a PyTorch state dict'``).
      entry: how messages name one entry of it (``'PyTorch entry'``).
      registry: layer type -> ``converter(layer, leaves) -> list[Rule]``, where
        ``leaves`` maps each parameter path below the layer (relative) to a :class:`Leaf`.
      default: the rule for a parameter of a layer that has no converter.
      locate: ``(module_path, rel) -> path`` of an entry in the other library's state.
      show: how an entry's path prints (``'fc1.weight'``, ``'params/fc1/kernel'``).
      split: how a module path written by the user splits into names (``rename=``).
      hint: ``(found_shape, expected_shape) -> str``, a hint for a size mismatch.
      module_of: the module path of an entry's path (for the ``rename=`` hint).
      importer, exporter: the public functions' names, for messages.
    """

    name: str
    noun: str
    entry: str
    registry: dict[type, Converter]
    default: Callable[[str, Leaf], Rule]
    locate: Callable[[Path, Path], Path]
    show: Callable[[Path], str]
    split: Callable[[str], Path]
    hint: Callable[[Shape | None, Shape | None], str]
    module_of: Callable[[Path], Path] = lambda path: path[:-1]
    importer: str = "the import"
    exporter: str = "the export"

    def converter(self, layer: Any) -> Converter | None:
        for cls in type(layer).__mro__:
            if cls in self.registry:
                return self.registry[cls]
        return None


# ---------------------------------------------------------------------------
# Planning: which layer owns which parameter, and the rules that convert them.


@dataclasses.dataclass(frozen=True)
class _Planned:
    rule: Rule
    lazy: tuple[Path, ...]  # absolute lazyinit paths
    other: tuple[Path, ...]  # absolute paths in the other library's state
    leaves: tuple[Leaf, ...]  # of ``lazy``
    layer: str  # e.g. "Linear at 'fc1'"


def _leaves_from_trace(t: Trace) -> tuple[dict, dict]:
    layers: dict[Path, Any] = {}
    for call in t.calls:
        layers.setdefault(call.path, call.layer)
    leaves = {
        p: Leaf(param.shape, _match.param_dtype(param), param.trainable)
        for p, param in t.params.items()
    }
    return layers, leaves


def _leaves(model: Any, args: tuple, kwargs: dict, example: str) -> tuple[dict, dict]:
    """The layers and parameters of ``model``: traced on the sample, else derived from what
    its layers declare (dims that depend on the input are ``None``), never from a trace that
    happened to run earlier.

    Raises:
      InferShapeError: no sample, and a layer names its parameters only when traced.
    """
    if args or kwargs:
        return _leaves_from_trace(trace(model, *args, **kwargs))
    specs = _structure.derived_specs(model)
    unknown = [p for p, spec in specs.items() if spec is None]
    if unknown:
        layers = _structure.derived_layers(model)
        where = ", ".join(
            f"{type(layers[p]).__name__} at {_paths.join(p)!r}" if p in layers else repr(p)
            for p in unknown
        )
        raise InferShapeError(
            f"Without a sample, lazyinit cannot know the parameter paths of {where} (its "
            "children are built inside __call__, or its specs need the input to name them). "
            f"Pass a sample as for li.dry_run: {example}."
        )
    leaves = {
        p: Leaf(spec.shape, _match.param_dtype(spec), spec.trainable)
        for p, spec in specs.items()
        if spec is not None
    }
    return _structure.derived_layers(model), leaves


def _module_path(rename: Any, split: Callable[[str], Path], path: Path) -> Path:
    if rename is None:
        return path
    if callable(rename):
        return split(rename(_paths.join(path) if path else ""))
    for i in range(len(path), -1, -1):
        key = "/".join(path[:i])
        if key in rename:
            return (*split(rename[key]), *path[i:])
    return path


def _describe(layer: Any, path: Path) -> str:
    return f"{type(layer).__name__} at {_paths.join(path)!r}"


def rules_for(
    fw: Framework,
    model: Any,
    leaves: dict[Path, Leaf],
    layers: dict[Path, Any],
    rename: Any = None,
) -> list[_Planned]:
    """Every rule of ``model``, with absolute paths on both sides."""
    claimed: dict[Path, tuple[Path, Any]] = {}
    for path in leaves:
        for i in range(len(path)):
            layer = layers.get(path[:i])
            if layer is not None and fw.converter(layer) is not None:
                claimed[path] = (path[:i], layer)
                break
    groups: dict[Path, dict[Path, Leaf]] = {}
    for path, (at, _) in claimed.items():
        groups.setdefault(at, {})[path[len(at) :]] = leaves[path]

    out: list[_Planned] = []
    covered: set[Path] = set()

    def emit_group(at: Path) -> None:
        layer, group = layers[at], groups[at]
        module = _module_path(rename, fw.split, at)
        convert = fw.converter(layer)
        assert convert is not None  # only claimed layers have groups
        if getattr(convert, "takes_layers", False):  # li.Repeat: converts by its block's layers
            n = len(at)
            below = {p[n:]: l for p, l in layers.items() if p[:n] == at and len(p) > n}
            rules = convert(layer, group, {(): layer.stacked_layer, **below})
        else:
            rules = convert(layer, group)
        for rule in rules:
            lazy = tuple((*at, *p) for p in rule.lazy)
            covered.update(lazy)
            other = tuple(fw.locate(module, o) for o in rule.other)
            leaves_of = tuple(group[p] for p in rule.lazy)
            out.append(_Planned(rule, lazy, other, leaves_of, _describe(layer, at)))

    for path, leaf in leaves.items():  # in call order, each layer's rules in its converter's order
        if path in claimed and claimed[path][0] in groups:
            emit_group(claimed[path][0])
            del groups[claimed[path][0]]
        if path in covered:
            continue
        at = path[:-1]
        module = _module_path(rename, fw.split, at)
        rule = fw.default(path[-1], leaf)
        owner = layers.get(at)
        where = _describe(owner, at) if owner is not None else f"layer {_paths.join(at)!r}"
        other = tuple(fw.locate(module, o) for o in rule.other)
        out.append(_Planned(rule, (path,), other, (leaf,), where))
    return out


def _expected(item: _Planned, state: Mapping[Path, Any]) -> tuple[tuple[int, ...] | None, ...]:
    """The shapes ``item``'s entries must have in the other library, from its export function.

    Where a leaf's shape still has unknown dims (a structure derived without a
    sample), they are read off the entries themselves: the import function turns
    the found entries into the layer's params, whose unknown dims are taken from
    them, and the export function says what the entries must then be. ``None`` where
    even that is impossible (an entry of another rank than the rule converts).
    """
    if not item.leaves:
        return tuple(tuple(np.shape(v)) for v in item.rule.to_other())
    if all(d is not None for l in item.leaves for d in l.shape):
        avals = [jax.ShapeDtypeStruct(l.shape, l.dtype) for l in item.leaves]
        return tuple(tuple(o.shape) for o in jax.eval_shape(item.rule.to_other, *avals))
    if any(o not in state for o in item.other):
        return tuple(None for _ in item.other)  # missing: reported as such
    try:
        avals = [jax.ShapeDtypeStruct(np.shape(state[o]), np.float32) for o in item.other]
        lazy = jax.eval_shape(item.rule.to_lazy, *avals)
        filled = [
            jax.ShapeDtypeStruct(
                tuple(k if k is not None else d for k, d in zip(l.shape, o.shape)), l.dtype
            )
            for l, o in zip(item.leaves, lazy)
            if len(l.shape) == len(o.shape)
        ]
        if len(filled) != len(item.leaves):
            return tuple(None for _ in item.other)
        return tuple(tuple(o.shape) for o in jax.eval_shape(item.rule.to_other, *filled))
    except Exception:
        return tuple(None for _ in item.other)


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
) -> tuple[dict, Report]:
    """``state`` (flat, other-library paths -> numpy arrays) converted into a lazyinit params tree.

    The entries each rule expects are the targets of lazyinit's load rules
    (:mod:`lazyinit._match`), named by the other library's keys: every missing,
    unexpected and mis-shaped entry is worded as every other entry point words it.
    ``problems`` may already hold lines found while reading ``state``; they are
    reported together with the rest.
    """
    example = f"{fw.importer}(model, state, x)"
    layers, leaves = _leaves(model, args, kwargs, example)
    planned = rules_for(fw, model, leaves, layers, rename)
    targets: dict[Path, _match.Target] = {}
    about: dict[Path, str] = {}
    for item in planned:
        for o, e in zip(item.other, _expected(item, state)):
            if e is None and o in state:  # cannot be turned into the layer's params
                problems.append(
                    _match.size_mismatch(
                        f"{fw.show(o)!r} ({_for(item)})",
                        tuple(np.shape(state[o])),
                        tuple(l.shape for l in item.leaves)[0],
                        " (it does not convert to the layer's parameter)",
                    )
                )
                e = tuple(np.shape(state[o]))
            targets[o] = _match.Target(e)
            about[o] = _for(item)
    incoming = {k: jax.ShapeDtypeStruct(np.shape(v), v.dtype) for k, v in state.items()}
    m = _match.match(targets, incoming, abstract=True, show=fw.show, about=about, hint=fw.hint)
    problems += _match.judge(m, missing=strict, unexpected=strict)
    if strict and rename is None:
        problems += _rename_hint(fw, m.missing, m.unexpected, set(m.taken))
    elif not strict and m.unexpected and not (args or kwargs):
        problems.append(
            f"{len(m.unexpected)} {fw.entry}(s) have no place in the structure derived without a "
            f"sample ({', '.join(repr(fw.show(k)) for k in m.unexpected[:3])}...): the model may "
            f"build children inside __call__. Pass a sample, {example}, so that the trace says "
            "where they go."
        )
    _match.refuse(
        f"Cannot convert {fw.noun} into {type(model).__name__}",
        problems,
        "The input is unchanged.",
    )
    taken = set(m.taken)
    flat: dict[Path, Any] = {}
    missing: list[Path] = []
    for item in planned:
        if all(o in taken for o in item.other):
            values = item.rule.to_lazy(*(jnp.asarray(state[o]) for o in item.other))
            flat.update(zip(item.lazy, values))
        else:
            missing.extend(item.lazy)
    params = _paths.unflatten({p: flat[p] for p in leaves if p in flat})
    report = Report(
        loaded=tuple(sorted(_paths.join(p) for p in flat)),
        missing=tuple(sorted(_paths.join(p) for p in missing)),
        unexpected=tuple(sorted(fw.show(k) for k in m.unexpected)),
    )
    return params, report


def _for(item: _Planned) -> str:
    if not item.lazy:
        return f"{item.layer} (an entry lazyinit does not keep)"
    return f"{item.layer}, parameter {', '.join(repr(_paths.join(p)) for p in item.lazy)}"


def _rename_hint(
    fw: Framework, missing: list[Path], unexpected: list[Path], used: set[Path]
) -> list[str]:
    """A ``rename=`` suggestion when whole modules are missing and others are unexpected
    (``fc1.weight`` against ``0.weight``): the names differ in structure, not spelling."""
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
) -> dict[Path, jax.Array]:
    """``params`` converted into the other library's entries (flat, by path), in plan order."""
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
    layers, leaves = _leaves(model, args, kwargs, f"{fw.exporter}(model, params, x)")
    # The params must be the model's: the load rules, on shapes (unknown dims take any size).
    m = _match.match(
        {p: _match.Target(leaf.shape) for p, leaf in leaves.items()},
        {p: jax.ShapeDtypeStruct(np.shape(v), v.dtype) for p, v in flat.items()},
        abstract=True,
    )
    _match.refuse(what, _match.judge(m, missing=True, unexpected=True))
    leaves = {
        p: Leaf(tuple(np.shape(flat[p])), leaf.dtype, leaf.trainable) for p, leaf in leaves.items()
    }
    out: dict[Path, jax.Array] = {}
    for item in rules_for(fw, model, leaves, layers, rename):
        values = item.rule.to_other(*(flat[p] for p in item.lazy))
        for o, v in zip(item.other, values):
            if o in out:
                problems.append(
                    f"{fw.show(o)!r} would be written twice (by {item.layer} and another "
                    "layer): give the layers distinct names, or pass rename="
                )
            out[o] = v
    _match.refuse(what, problems)
    return out
