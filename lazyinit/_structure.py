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
  ``self.fc1(params["fc1"], x)``;
* any other layer (children built inside ``__call__``, layers in a list field)
  shows as one placeholder of unknown structure (``shape=?``).

A derivation is a claim that the trace checks: :func:`contradictions` says, by
path, where a field child was called under another key or never called.
Functions that need the structure and get no sample (``li.partition``,
``li.summary``, ``li.describe``) use the model's cached trace, never the
derivation; without either they refuse (:func:`trace_for`).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _paths
from ._errors import InferShapeError
from ._recorder import Trace
from ._spec import Param, Uninitialized
from ._trace_cache import traces_of
from ._tracer import trace
from ._typing import Path, PerPath, State

__all__ = [
    "derive",
    "derived_specs",
    "declares_structure",
    "derived_layers",
    "contradictions",
    "trace_for",
    "param_dtype",
    "forced_dtype",
    "fixed_dtype",
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


def declares_structure(layer: Any) -> bool:
    """Whether ``layer``'s parameter paths can be known without tracing it (see module doc)."""
    if _overrides(layer, "specs") or _overrides(layer, "children"):
        return True
    return bool(layer.children()) and not _holds_layer_sequence(layer)


def derived_layers(model: Any) -> dict[Path, Any]:
    """``{path: layer}`` as the derivation sees it (unknown subtrees stop the walk)."""
    layers: dict[Path, Any] = {}

    def visit(layer: Any, path: Path) -> None:
        layers.setdefault(path, layer)
        if declares_structure(layer):
            for name, child in layer.children().items():
                visit(child, (*path, name))

    visit(model, ())
    return layers


def derived_specs(model: Any) -> dict[Path, Param | None]:
    """``{path: spec}`` as far as known without a sample: dims that depend on the input are
    ``None``; a path whose whole structure is unknown maps to ``None``."""
    out: dict[Path, Param | None] = {}

    def walk(layer: Any, path: Path) -> None:
        own = _own_specs(layer) if _overrides(layer, "specs") else {}
        if not declares_structure(layer) or own is None:
            out[path] = None
            return
        for name, p in own.items():
            shape = tuple(None if isinstance(d, _UnknownDim) else int(d) for d in p.shape)
            out[(*path, name)] = dataclasses.replace(p, shape=shape)
        for name, child in layer.children().items():
            walk(child, (*path, name))

    walk(model, ())
    return out


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
            chosen = param_dtype(p, dtype, path)
            flat[path] = Uninitialized(p.shape, chosen, device_choice, _paths.join(path))
    if () in flat:
        return flat[()]
    skeleton = [p for p in derived_layers(model)]
    return _paths.unflatten(flat, skeleton)


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


def param_dtype(param: Param, dtype: PerPath, path: Path) -> np.dtype:
    """The dtype a parameter materializes in: forced, else the spec's, else float32."""
    return forced_dtype(param, dtype, path) or np.dtype(param.dtype or np.float32)


def contradictions(model: Any, t: Trace) -> list[str]:
    """Where the trace contradicts the derivation: a field child called elsewhere or never."""
    called = set(t.layers)
    derived = derived_layers(model)
    lines: list[str] = []
    for path, layer in derived.items():
        if not path or path in called or path[:-1] not in called:
            continue
        parent = type(derived[path[:-1]]).__name__
        at = [c.path for c in t.calls if c.layer is layer] or [
            c.path for c in t.calls if c.layer == layer and c.path not in derived
        ]
        where = (
            f"was called at {_paths.join(at[0])!r}, not under its field name"
            if at
            else "was never called"
        )
        lines.append(
            f"field {path[-1]!r} of {parent} at {_paths.join(path[:-1])!r} {where}: without a "
            "sample, lazyinit derives this layer's params at "
            f"{_paths.join(path)!r}, but the model's trace does not put them there (pass a "
            "sample to li.lazy_state to get the traced paths)"
        )
    return lines


def trace_for(
    model: Any,
    args: tuple,
    kwargs: dict,
    *,
    what: str,
    example: str,
    params: Mapping[str, Any] | None = None,
) -> Trace:
    """The trace on the sample, else a cached trace of ``model`` (matching ``params``'s paths).

    Raises:
      InferShapeError: no sample and no cached trace fits: the structure would be a guess.
    """
    if args or kwargs:
        return trace(model, *args, **kwargs)
    paths = set(_paths.flatten(params, _paths.is_leaf, what="params")) if params else None
    candidates = traces_of(model)
    for t in candidates:
        if paths is None or set(t.params) == paths:
            return t
    seen = (
        "its cached traces have other paths than these params"
        if candidates
        else "it has not been traced yet"
    )
    raise InferShapeError(
        f"{what} needs the structure of {type(model).__name__}, and {seen}: lazyinit does not "
        "guess it from the dataclass fields. Pass a sample as for li.dry_run, "
        f"{example}, or dry-run the model first."
    )
