"""Planning a conversion: which layer owns which parameter, and the rules that convert them.

The layers and parameters come from the model's trace on the sample when one
is given, else from what its layers declare (:mod:`lazyinit._structure`; dims
that depend on the input are ``None``, and the converter reads them off the
incoming entries), never from a trace that happened to run earlier.

A layer with a converter claims every parameter below its path, so a
converter may regroup its children's parameters (attention's packed
``in_proj_weight``). A stacked layer (``li.Repeat``, ``li.Ensemble``) is, where
the library stacks (:attr:`Framework.stacks`), the other library's modules
``0 .. n-1``, each converted by the block's own rules. Every other parameter is
the entry of the same name (:attr:`Framework.default`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from .. import _match, _paths, _structure
from .._recorder import Trace
from .._tracer import trace
from .._typing import Path
from ..errors import InferShapeError
from ._registry import Framework, Kinds, NoRule, kind_name
from ._rules import Leaf, Rule

__all__ = ["Planned", "Structure", "structure", "plan", "module_path", "stacked"]


@dataclasses.dataclass(frozen=True)
class Structure:
    """A model's layers and parameters by path, and each layer's first input (None without a
    sample)."""

    layers: dict[Path, Any]
    leaves: dict[Path, Leaf]
    inputs: dict[Path, Any]


@dataclasses.dataclass(frozen=True)
class Planned:
    """One rule of the plan, with absolute paths on both sides and what messages need."""

    rule: Rule
    lazy: tuple[Path, ...]  # absolute lazyinit paths
    other: tuple[Path, ...]  # absolute paths in the other library's state
    leaves: tuple[Leaf, ...]  # of ``lazy``
    layer: Any  # the lazyinit layer whose rule it is (None for a bare parameter)
    at: Path  # its path
    kind: Any = None  # the other library's module type there, when known
    input: Any = None  # the layer's first input (shape and dtype), when traced

    @property
    def where(self) -> str:
        """``Linear at 'fc1'``."""
        if self.layer is None:
            return f"layer {_paths.join(self.at)!r}"
        return f"{type(self.layer).__name__} at {_paths.join(self.at)!r}"


def _from_trace(t: Trace) -> Structure:
    layers: dict[Path, Any] = {}
    inputs: dict[Path, Any] = {}
    for call in t.calls:
        layers.setdefault(call.path, call.layer)
        args = call.inputs[0] if isinstance(call.inputs, tuple) else ()
        inputs.setdefault(call.path, args[0] if args else None)
    leaves = {
        p: Leaf(param.shape, _match.param_dtype(param), param.trainable)
        for p, param in t.params.items()
    }
    return Structure(layers, leaves, inputs)


def structure(model: Any, args: tuple, kwargs: dict, example: str) -> Structure:
    """The layers and parameters of ``model``: traced on the sample, else derived.

    Raises:
      InferShapeError: no sample, and a layer names its parameters only when traced.
    """
    if args or kwargs:
        return _from_trace(trace(model, *args, **kwargs))
    specs = _structure.derived_specs(model)
    unknown = [p for p, spec in specs.items() if spec is None]
    layers = _structure.derived_layers(model)
    if unknown:
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
    return Structure(layers, leaves, {})


def module_path(rename: Any, split: Callable[[str], Path], path: Path) -> Path:
    """The other library's module path of lazyinit layer path ``path`` (``rename=``: longest
    prefix wins; a function of the ``/``-joined path)."""
    if rename is None:
        return path
    if callable(rename):
        return split(rename(_paths.join(path) if path else ""))
    for i in range(len(path), -1, -1):
        key = "/".join(path[:i])
        if key in rename:
            return (*split(rename[key]), *path[i:])
    return path


def stacked(layer: Any) -> tuple[Any, int] | None:
    """``(block, n)`` of a layer that stacks ``n`` copies of a block, else None."""
    block = getattr(layer, "stacked_layer", None)
    return None if block is None else (block, int(layer.n))


def plan(
    fw: Framework,
    s: Structure,
    *,
    rename: Any = None,
    kinds: Kinds | None = None,
    problems: list[str],
) -> list[Planned]:
    """Every rule of the model, in call order, with absolute paths on both sides.

    A module type without a rule for its layer is a line in ``problems``.
    """
    kinds = kinds or Kinds()

    def where(at: Path) -> Path:
        return module_path(rename, fw.split, at)

    def kind_of(at: Path, module: Path) -> tuple[Any, str | None]:
        return kinds.of(at, fw.show(module))

    return _plan(fw, s, where, kind_of, kinds.used, problems)


KindOf = Callable[[Path, Path], tuple[Any, str | None]]
"""``(layer path, module path) -> (module type or None, the layouts= pattern that said it)``."""


def _plan(
    fw: Framework,
    s: Structure,
    where: Callable[[Path], Path],
    kind_of: KindOf,
    used: set[str],
    problems: list[str],
) -> list[Planned]:
    """:func:`plan` with module paths given by ``where`` and module types by ``kind_of``, in
    the coordinates of ``s`` (a stacked layer's block: paths relative to it and to a copy)."""
    claimed: dict[Path, Path] = {}
    for path in s.leaves:
        for i in range(len(path)):
            layer = s.layers.get(path[:i])
            if layer is not None and (
                fw.registry.knows(layer) or (fw.stacks and stacked(layer) is not None)
            ):
                claimed[path] = path[:i]
                break
    groups: dict[Path, dict[Path, Leaf]] = {}
    for path, at in claimed.items():
        groups.setdefault(at, {})[path[len(at) :]] = s.leaves[path]

    out: list[Planned] = []
    covered: set[Path] = set()

    def emit_group(at: Path) -> None:
        layer, group = s.layers[at], groups[at]
        module = where(at)
        if fw.stacks and stacked(layer) is not None:
            items = _per_copy(fw, s, at, module, group, kind_of, used, problems)
            out.extend(items)
            covered.update(p for item in items for p in item.lazy)
            return
        kind, pattern = kind_of(at, module)
        try:
            convert = fw.registry.find(layer, kind)
        except NoRule as e:
            if pattern is not None:  # a declaration for a subtree that this layer type ignores
                convert = fw.registry.find(layer, None)
                kind = None
            else:
                problems.append(_no_rule(fw, e, at, module))
                covered.update((*at, *p) for p in group)
                return
        else:
            if pattern is not None:
                used.add(pattern)
        assert convert is not None  # a claimed layer is known to the registry
        for rule in convert(layer, group):
            lazy = tuple((*at, *p) for p in rule.lazy)
            covered.update(lazy)
            other = tuple(fw.locate(module, o) for o in rule.other)
            leaves_of = tuple(group[p] for p in rule.lazy)
            out.append(Planned(rule, lazy, other, leaves_of, layer, at, kind, s.inputs.get(at)))

    # In call order, each layer's rules in its converter's order.
    for path, leaf in s.leaves.items():
        if path in claimed and claimed[path] in groups:
            emit_group(claimed[path])
            del groups[claimed[path]]
        if path in covered:
            continue
        at = path[:-1]
        rule = fw.default(path[-1], leaf)
        other = tuple(fw.locate(where(at), o) for o in rule.other)
        owner = s.layers.get(at)
        out.append(Planned(rule, (path,), other, (leaf,), owner, at, None, s.inputs.get(at)))
    return out


def _no_rule(fw: Framework, e: NoRule, at: Path, module: Path) -> str:
    layer = type(e.layer).__name__
    known = ", ".join(kind_name(k) for k in e.known)
    if e.kind is None:
        return (
            f"{layer} at {_paths.join(at)!r} converts only beside a known module type ({known}) "
            f"and none is known for {fw.show(module)!r}: pass the {fw.name} module itself, or "
            f"declare it with layouts={{{_paths.join(at)!r}: {kind_name(e.known[0])!r}}}"
        )
    name = kind_name(e.kind)
    return (
        f"the {fw.name} module at {fw.show(module)!r} is a {name}, which no rule converts into "
        f"the {layer} at {_paths.join(at)!r} (its rules are for {known}): register one, "
        f"@{fw.register}(li.{layer}, {name!r}) on a function (layer, leaves) -> list of "
        "lazyinit.interop rules, or make the lazyinit layer the one its rules are for"
    )


def _per_copy(
    fw: Framework,
    s: Structure,
    at: Path,
    module: Path,
    group: dict[Path, Leaf],
    kind_of: KindOf,
    used: set[str],
    problems: list[str],
) -> list[Planned]:
    """A stacked layer's rules: its block's, planned once (by copy ``0``'s module types), each
    applied to every copy ``i`` of the other library (module ``i``) and stacked."""
    block, n = stacked(s.layers[at])  # type: ignore[misc]
    inside = {p[len(at) :]: l for p, l in s.layers.items() if p[: len(at)] == at and p != at}
    one = Structure(
        {(): block, **inside},
        {p: Leaf(leaf.shape[1:], leaf.dtype, leaf.trainable) for p, leaf in group.items()},
        {p[len(at) :]: v for p, v in s.inputs.items() if p[: len(at)] == at},
    )
    seen: dict[tuple[Path, Path], Any] = {}

    def first_copy(rel: Path, rel_module: Path) -> tuple[Any, str | None]:
        kind, pattern = kind_of((*at, *rel), (*module, "0", *rel_module))
        seen[(rel, rel_module)] = kind
        return kind, pattern

    inner = _plan(fw, one, lambda rel: rel, first_copy, used, problems)
    for (rel, rel_module), kind in seen.items():
        for i in range(1, n):
            copy = (*module, str(i), *rel_module)
            other, _ = kind_of((*at, *rel), copy)
            if other != kind:
                problems.append(
                    f"copy {i} of {type(s.layers[at]).__name__} at {_paths.join(at)!r} is a "
                    f"{kind_name(other) if other else 'missing module'} at {fw.show(copy)!r} "
                    f"where copy 0 is a {kind_name(kind) if kind else 'missing module'}: the "
                    "copies of a stacked layer are converted alike, so their modules must be of "
                    "one type"
                )
                break
    items = []
    for item in inner:  # its paths are relative to the stacked layer, and to copy i's module
        rule = _stack(item.rule, item.other, n)
        lazy = tuple((*at, *p) for p in item.lazy)
        other = tuple((*module, *o) for o in rule.other)
        leaves = tuple(group[p] for p in item.lazy)
        items.append(
            dataclasses.replace(
                item, rule=rule, lazy=lazy, other=other, leaves=leaves, at=(*at, *item.at)
            )
        )
    return items


def _stack(rule: Rule, located: tuple[Path, ...], n: int) -> Rule:
    """``rule`` (its entries at ``located``) for ``n`` copies: entry ``i/<entry>`` of copy
    ``i``, the params stacked on a leading axis."""
    k = len(rule.other)

    def to_lazy(*arrays: Any) -> tuple[Any, ...]:
        copies = [rule.to_lazy(*arrays[i * k : (i + 1) * k]) for i in range(n)]
        return tuple(jax.numpy.stack(parts) for parts in zip(*copies))

    def to_other(*stacked_params: Any) -> tuple[Any, ...]:
        return tuple(a for i in range(n) for a in rule.to_other(*(s[i] for s in stacked_params)))

    other = tuple((str(i), *o) for i in range(n) for o in located)
    return Rule(rule.lazy, other, to_lazy, to_other)


def expected(item: Planned, state: Mapping[Path, Any]) -> tuple[tuple[int, ...] | None, ...]:
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
