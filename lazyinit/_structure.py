"""A model's structure: the paths of its parameters, from its trace or derived without one.

The trace is the source of truth: it records the paths ``__call__`` really
indexes ``params`` with, whatever the style (children as fields, children
built inside ``__call__``, wrappers, transforms). Without a sample, a structure
can only be *derived*, as PyTorch's ``state_dict()`` of a lazy module is, from
what a layer declares:

* a layer that defines ``specs`` has those parameters (dims that depend on the
  input are unknown), plus its children;
* a layer that defines ``children()`` (``Sequential``), or holds layers in its
  fields, has its children under those names: the convention
  ``self.fc1(params["fc1"], x)``. A child under the name ``""`` shares its
  parent's params (``self.inner(params, x)``, flax's ``share_scope``);
* a layer that stacks ``n`` copies of another (``stacked_layer``, ``n``:
  ``li.Repeat``, ``li.Ensemble``) has that layer's parameters with a leading
  axis of ``n``;
* any other layer (children built inside ``__call__``, layers in a list field)
  shows as one placeholder of unknown structure (``shape=?``).

A derivation is a claim that the trace checks, on every trace
(:func:`check_derivation`): a field child called with another sub-dict than its
name says is a :class:`~lazyinit.errors.DeriveStructureError` naming the fix,
never a silent disagreement between ``li.lazy_state(model)`` and the dry run.

Functions that get no sample work from this derivation and what they were
given, never from a trace that happened to run earlier in the process: a cache
may make a call faster, never change its answer.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator, Mapping
from typing import Any

from . import _match, _paths
from ._recorder import Trace
from ._spec import Param, Uninitialized
from ._typing import Path, PerPath, State
from .errors import DeriveStructureError

__all__ = [
    "derive",
    "derived_specs",
    "declares_structure",
    "derived_layers",
    "contradictions",
    "check_derivation",
    "unknown_below",
]


class _UnknownDim:
    """A dimension that depends on an input not seen yet; arithmetic keeps it unknown."""

    def _same(self, *args: Any) -> _UnknownDim:
        return self

    def _unknowable(self, *args: Any) -> Any:
        raise _Unknowable  # a branch on an unknown dim: the specs are not known without input

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _same
    __floordiv__ = __rfloordiv__ = __truediv__ = __mod__ = __neg__ = _same
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = __index__ = _unknowable
    __int__ = __hash__ = _unknowable


class _Unknowable(Exception):
    pass


class _UnknownShape(tuple):
    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, int):
            return _UnknownDim()
        raise _Unknowable

    def __len__(self) -> int:
        raise _Unknowable


class _UnknownInput:
    """What ``specs`` sees when asked before any input exists."""

    shape = _UnknownShape()
    dtype = None

    @property
    def ndim(self) -> int:
        raise _Unknowable


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


def _overrides(layer: Any, name: str) -> bool:
    method = getattr(type(layer), name, None)
    return method is not None and not getattr(method, "_lazyinit_default", False)


def _holds_layer_sequence(layer: Any) -> bool:
    if not dataclasses.is_dataclass(layer):
        return False
    for f in dataclasses.fields(layer):
        value = getattr(layer, f.name)
        if isinstance(value, Mapping):
            value = list(value.values())
        if isinstance(value, (list, tuple)) and any(hasattr(v, "specs") for v in value):
            return True
    return False


def _stacked(layer: Any) -> tuple[Any, int] | None:
    """``(layer copied, n)`` for a layer that stacks ``n`` copies of another, else None."""
    block = getattr(layer, "stacked_layer", None)
    return None if block is None else (block, int(layer.n))


def declares_structure(layer: Any) -> bool:
    """Whether ``layer``'s parameter paths can be known without tracing it (see module doc)."""
    if _stacked(layer) is not None:
        return True
    if _overrides(layer, "specs") or _overrides(layer, "children"):
        return True
    return bool(layer.children()) and not _holds_layer_sequence(layer)


def _child_path(path: Path, name: str) -> Path:
    return (*path, name) if name else path  # "": the child shares its parent's params


def _children(layer: Any) -> Iterator[tuple[str, Any]]:
    """The layer's children as the derivation sees them (a stacked layer's copy under ``""``)."""
    stacked = _stacked(layer)
    if stacked is not None:
        yield "", stacked[0]
        return
    yield from layer.children().items()


def derived_layers(model: Any) -> dict[Path, Any]:
    """``{path: layer}`` as the derivation sees it (unknown subtrees stop the walk); where a
    child shares its parent's path, the parent is listed."""
    layers: dict[Path, Any] = {}

    def visit(layer: Any, path: Path) -> None:
        layers.setdefault(path, layer)
        if declares_structure(layer):
            for name, child in _children(layer):
                visit(child, _child_path(path, name))

    visit(model, ())
    return layers


def derived_specs(model: Any) -> dict[Path, Param | None]:
    """``{path: spec}`` as far as known without a sample: dims that depend on the input are
    ``None``; a path whose whole structure is unknown maps to ``None``."""
    out: dict[Path, Param | None] = {}

    def walk(layer: Any, path: Path, copies: tuple[int, ...]) -> None:
        own = _own_specs(layer) if _overrides(layer, "specs") else {}
        if not declares_structure(layer) or own is None:
            out[path] = None
            return
        for name, p in own.items():
            shape = tuple(None if isinstance(d, _UnknownDim) else int(d) for d in p.shape)
            out[(*path, name)] = dataclasses.replace(p, shape=(*copies, *shape))
        stacked = _stacked(layer)
        for name, child in _children(layer):
            more = (stacked[1],) if stacked is not None else ()
            walk(child, _child_path(path, name), (*copies, *more))

    walk(model, (), ())
    return out


def unknown_below(specs: Mapping[Path, Param | None], path: Path) -> Path | None:
    """The path of a derived subtree of unknown structure that holds ``path``, or None."""
    for i in range(len(path), -1, -1):
        if path[:i] in specs and specs[path[:i]] is None:
            return path[:i]
    return None


def derive(model: Any, *, dtype: PerPath = None, device: PerPath = None) -> State:
    """The lazy state derived without a sample: placeholders with the dims known so far.

    Returns a nested dict, or one placeholder of unknown structure when the
    model itself cannot say.
    """
    flat: dict[Path, Uninitialized] = {}
    for path, p in derived_specs(model).items():
        device_choice = _paths.resolve(device, path)
        if p is None:
            hole = Uninitialized(
                None, _paths.resolve(dtype, path), device_choice, _paths.join(path)
            )
            flat[path] = hole
        else:
            chosen = _match.param_dtype(p, dtype, path)
            flat[path] = Uninitialized(p.shape, chosen, device_choice, _paths.join(path))
    if () in flat:
        return flat[()]
    return _paths.unflatten(flat, list(derived_layers(model)))


def _elsewhere(model: Any, t: Trace) -> list[tuple[Path, Any, list[Path]]]:
    """Field children the trace saw called, but not at the path their name derives:
    ``(derived path, layer, the paths it was called at)``."""
    called = set(t.layers)
    derived = derived_layers(model)
    out = []
    for path, layer in derived.items():
        if not path or path in called or path[:-1] not in called:
            continue
        at = [
            c.path
            for c in t.calls
            if c.layer == layer and c.path != path and not _same_layer(derived.get(c.path), layer)
        ]
        if at:
            out.append((path, layer, list(dict.fromkeys(at))))
    return out


def _same_layer(a: Any, b: Any) -> bool:
    try:
        return a is not None and bool(a == b)
    except Exception:
        return False


def check_derivation(model: Any, t: Trace) -> None:
    """Refuses a model whose trace has parameters where its declarations do not put them.

    Every traced parameter must be at a derived path, or under a layer whose structure
    is unknown without a sample; a derived path the sample never reached is fine (a
    branch not taken). A field child called with the params of another path (a wrapper
    handing on its whole ``params``, a field called under a computed key) is named with
    the way to write it.

    Raises:
      DeriveStructureError: naming each such child, where it was called, and how to write it.
    """
    specs = derived_specs(model)
    stray = [p for p in t.params if p not in specs and unknown_below(specs, p) is None]
    if not stray:
        return
    lines = []
    derived = derived_layers(model)
    for path, layer, at in _elsewhere(model, t):
        parent = derived.get(path[:-1])
        shown = ", ".join(repr(_paths.join(p)) for p in at)
        name = path[-1]
        how = (
            f"call it with params[{name!r}], or, if it shares its parent's params on purpose, "
            f"say so: def children(self): return {{'': self.{name}}}"
            if path[:-1] in at
            else f"call it with params[{name!r}], or declare where its params are in "
            "children() (a child per key it is called with)"
        )
        lines.append(
            f"field {name!r} of {type(parent).__name__} at {_paths.join(path[:-1])!r} "
            f"({type(layer).__name__}) was called with the params at {shown}, not at "
            f"{_paths.join(path)!r}: {how}"
        )
    if not lines:
        shown = ", ".join(repr(_paths.join(p)) for p in stray[:5])
        lines.append(
            f"the parameters {shown}{' ...' if len(stray) > 5 else ''} are not where the "
            "layers' fields and children() put them: declare the children by the keys "
            "__call__ indexes params with (children()), or build them inside __call__"
        )
    raise DeriveStructureError(
        f"{type(model).__name__}: without a sample lazyinit derives a field child's params "
        "under the field's name, and this model's __call__ puts them elsewhere, so "
        "li.lazy_state(model) and the dry run would disagree:\n  " + "\n  ".join(lines)
    )


def contradictions(model: Any, t: Trace) -> list[str]:
    """Field children the sample never reached: lines explaining the derived paths a state
    holds for them (a dry run adds them when such a state's paths are unexpected)."""
    called = set(t.layers)
    lines: list[str] = []
    derived = derived_layers(model)
    for path in derived:
        if not path or path in called or path[:-1] not in called:
            continue
        parent = type(derived[path[:-1]]).__name__
        lines.append(
            f"field {path[-1]!r} of {parent} at {_paths.join(path[:-1])!r} was never called "
            "on this sample: without a sample, lazyinit derives this layer's params at "
            f"{_paths.join(path)!r}, but the model's trace does not put them there (pass a "
            "sample to li.lazy_state to get the traced paths)"
        )
    return lines
