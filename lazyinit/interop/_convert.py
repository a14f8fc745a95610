"""The machinery shared by the PyTorch and flax converters: rules, planning, all-or-nothing conversion.

A *rule* ties some parameters of one lazyinit layer to some entries of the
other library's state, with a function each way (a transpose, a split, a
reshape). Rules come from a converter registered per layer type; a layer
without one maps each of its parameters to an entry of the same name, as is.

*Planning* finds which layer owns which parameter: from ``li.trace(model,
*sample)`` when a sample is given (its calls name every layer, its params
give every shape), else by walking ``layer.children()`` with the shapes of
the params being exported. A registered layer claims every parameter below
its path, so a converter may regroup its children's parameters (attention's
packed ``in_proj_weight``).

Conversion validates everything first (missing and unexpected entries, and
each entry's shape against what the rule expects, derived by
``jax.eval_shape`` of the rule's export function) and raises one
:class:`~lazyinit.ConvertStateError` listing every problem; only then does it
build a new tree. The caller's data is only ever read.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _paths
from .._errors import ConvertStateError
from .._spec import Uninitialized
from .._state import Report, _own_specs
from .._tracer import trace
from .._typing import Path

__all__ = ["Rule", "Leaf", "Framework", "same", "permute", "extra", "import_state", "export_state"]

Convert = Callable[..., Any]


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
    """

    name: str
    noun: str
    entry: str
    registry: dict[type, Callable[[Any, dict[Path, Leaf]], list[Rule]]]
    default: Callable[[str, Leaf], Rule]
    locate: Callable[[Path, Path], Path]
    show: Callable[[Path], str]
    split: Callable[[str], Path]
    hint: Callable[[tuple, tuple], str]

    def converter(self, layer: Any) -> Callable[[Any, dict[Path, Leaf]], list[Rule]] | None:
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


def _walk(model: Any) -> dict[Path, Any]:
    layers: dict[Path, Any] = {}

    def visit(layer: Any, path: Path) -> None:
        layers.setdefault(path, layer)
        for name, child in layer.children().items():
            visit(child, (*path, name))

    visit(model, ())
    return layers


def _leaves_from_trace(model: Any, args: tuple, kwargs: dict) -> tuple[dict, dict]:
    t = trace(model, *args, **kwargs)
    layers: dict[Path, Any] = {}
    for call in t.calls:
        layers.setdefault(call.path, call.layer)
    leaves = {
        p: Leaf(param.shape, np.dtype(param.dtype or np.float32), param.trainable)
        for p, param in t.params.items()
    }
    return layers, leaves


def _leaves_from_params(model: Any, params: Mapping) -> tuple[dict, dict]:
    layers = _walk(model)
    frozen = set()
    for path, layer in layers.items():
        own = _own_specs(layer) or {}
        frozen.update((*path, n) for n, p in own.items() if not p.trainable)
    flat = _paths.flatten(params, lambda x: hasattr(x, "shape"), what="params")
    leaves = {p: Leaf(tuple(v.shape), np.dtype(v.dtype), p not in frozen) for p, v in flat.items()}
    return layers, leaves


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


def plan(
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
        for rule in fw.converter(layer)(layer, group):
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


def _expected(item: _Planned) -> tuple[tuple[int, ...], ...]:
    """The shapes ``item``'s entries must have in the other library, from its export function."""
    if not item.leaves:
        return tuple(tuple(np.shape(v)) for v in item.rule.to_other())
    avals = [jax.ShapeDtypeStruct(l.shape, l.dtype) for l in item.leaves]
    return tuple(tuple(o.shape) for o in jax.eval_shape(item.rule.to_other, *avals))


def _raise(what: str, problems: list[str]) -> None:
    if problems:
        raise ConvertStateError(
            f"Cannot convert {what} ({len(problems)} problem(s)); nothing was converted and "
            "the input is unchanged:\n  " + "\n  ".join(problems),
            tuple(problems),
        )


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

    ``problems`` may already hold lines found while reading ``state``; they
    are reported together with the rest.
    """
    layers, leaves = _leaves_from_trace(model, args, kwargs)
    planned = plan(fw, model, leaves, layers, rename)
    used: set[Path] = set()
    ready: list[_Planned] = []
    missing: list[Path] = []
    absent: list[tuple[Path, _Planned, tuple]] = []
    for item in planned:
        expected = _expected(item)
        used.update(o for o in item.other if o in state)
        gone = [(o, item, e) for o, e in zip(item.other, expected) if o not in state]
        if gone:
            missing.extend(item.lazy)
            absent.extend(gone)
            continue
        ok = True
        for o, e in zip(item.other, expected):
            found = tuple(np.shape(state[o]))
            if found != e:
                ok = False
                problems.append(
                    f"size mismatch for {fw.show(o)!r} ({_for(item)}): found shape {found}, "
                    f"expected {e}{fw.hint(found, e)}"
                )
        if ok:
            ready.append(item)
    unexpected = [k for k in state if k not in used]
    if strict:
        problems.extend(
            f"missing {fw.entry} {fw.show(o)!r} for {_for(item)}, expected shape {e}"
            f"{_near(fw, o, unexpected)}"
            for o, item, e in absent
        )
        problems.extend(
            f"unexpected {fw.entry} {fw.show(k)!r}: the lazyinit model has no parameter for it"
            f"{_near(fw, k, [o for o, _, _ in absent])}"
            for k in unexpected
        )
    _raise(f"{fw.noun} into {type(model).__name__}", problems)

    flat: dict[Path, Any] = {}
    for item in ready:
        values = item.rule.to_lazy(*(jnp.asarray(state[o]) for o in item.other))
        flat.update(zip(item.lazy, values))
    params = _paths.unflatten({p: flat[p] for p in leaves if p in flat})
    report = Report(
        loaded=tuple(sorted(_paths.join(p) for p in flat)),
        missing=tuple(sorted(_paths.join(p) for p in missing)),
        unexpected=tuple(sorted(fw.show(k) for k in unexpected)),
    )
    return params, report


def _for(item: _Planned) -> str:
    if not item.lazy:
        return f"{item.layer} (an entry lazyinit does not keep)"
    return f"{item.layer}, parameter {', '.join(repr(_paths.join(p)) for p in item.lazy)}"


def _near(fw: Framework, key: Path, candidates: list[Path]) -> str:
    names = [fw.show(c) for c in candidates]
    close = difflib.get_close_matches(fw.show(key), names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
    flat = _paths.flatten(params, lambda x: hasattr(x, "shape"), what="params")
    problems: list[str] = []
    for p, v in flat.items():
        if isinstance(v, jax.ShapeDtypeStruct):
            problems.append(f"{_paths.join(p)!r} is abstract (a ShapeDtypeStruct), not an array")
        elif isinstance(v, Uninitialized):
            problems.append(
                f"{_paths.join(p)!r} is uninitialized: run li.dry_run(model, key, sample) first"
            )
    _raise(f"{type(model).__name__}'s params to {fw.noun}", problems)
    if args or kwargs:
        layers, leaves = _leaves_from_trace(model, args, kwargs)
        for p, leaf in leaves.items():
            if p not in flat:
                problems.append(f"missing parameter {_paths.join(p)!r} {leaf.shape}")
            elif tuple(flat[p].shape) != leaf.shape:
                problems.append(
                    f"size mismatch for {_paths.join(p)!r}: found shape {tuple(flat[p].shape)}, "
                    f"the model needs {leaf.shape} for this sample"
                )
        problems.extend(
            f"unexpected parameter {_paths.join(p)!r}: the model has no such parameter"
            for p in flat
            if p not in leaves
        )
        _raise(f"{type(model).__name__}'s params to {fw.noun}", problems)
    else:
        layers, leaves = _leaves_from_params(model, params)

    out: dict[Path, jax.Array] = {}
    for item in plan(fw, model, leaves, layers, rename):
        values = item.rule.to_other(*(flat[p] for p in item.lazy))
        for o, v in zip(item.other, values):
            if o in out:
                problems.append(
                    f"{fw.show(o)!r} would be written twice (by {item.layer} and another "
                    "layer): give the layers distinct names, or pass rename="
                )
            out[o] = v
    _raise(f"{type(model).__name__}'s params to {fw.noun}", problems)
    return out
