"""Display: a model's repr with the sizes a dry run inferred, and notebook renderings.

PyTorch's lazy modules *change* after the first forward: ``LazyLinear(in_features=0,
out_features=10)`` becomes ``Linear(in_features=10, out_features=10)``. lazyinit's
layers are immutable configuration, and one ``Linear(10)`` may be used at
several places with different input sizes, so the sizes cannot live on the
layer (a global registry keyed by layer would be ambiguous: equal layers are
the same key). They belong to *a model on a sample input*, which is what
:func:`lazyinit.trace` sees, so :func:`describe` is a view computed from a trace:
it costs a (cached) abstract trace and allocates nothing.

Notebook renderings: params trees and lazy states are plain dicts, which
treescope (``treescope.basic_interactive_setup()``) renders as foldable trees
with array summaries; :class:`lazyinit.Uninitialized` implements treescope's
``__treescope_repr__`` hook, so each placeholder shows as its repr, highlighted
(an ``_repr_html_`` would make treescope append a second, HTML rendering). A
:class:`lazyinit.Summary` renders as an HTML table (``_repr_html_``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import _channels, _match, _structure
from ._layer import Layer
from ._recorder import Call
from ._spec import Param
from ._tracer import trace
from ._typing import Path

__all__ = ["describe", "Described", "INFERRED"]

INFERRED: dict[str, str] = {
    "Linear": "in_features",
    "Conv": "in_channels",
    "ConvTranspose": "in_channels",
    "BatchNorm": "num_features",
    "LayerNorm": "num_features",
    "RMSNorm": "num_features",
    "GroupNorm": "num_channels",
}
"""The size each layer type infers, by type name: the size PyTorch's lazy module fills in.

It is read off the first input's channel axis (the last, or axis 1 for a layer with
``channels_first=True``). Layers not listed show their parameters' shapes instead.
"""


def _inferred(call: Call | None) -> str:
    """The size :data:`INFERRED` names, from the call's first input (``?`` without one)."""
    if call is None:
        return "?"
    args, _ = call.inputs
    shape = getattr(args[0], "shape", None) if args else None
    axis = 1 if getattr(call.layer, "channels_first", False) else -1
    return str(shape[axis]) if shape and len(shape) > axis else "?"


class Described(str):
    """A model's description: a ``str`` that prints as itself in a REPL and a notebook."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        inner = ", ".join(_show(v) for v in value)
        if isinstance(value, list):
            return f"[{inner}]"
        return f"({inner}{',' if len(value) == 1 else ''})"
    if callable(value) and hasattr(value, "__name__") and not dataclasses.is_dataclass(value):
        return value.__name__
    return repr(value)


def _config(layer: Any) -> dict[str, str]:
    """The layer's non-default fields that are not layers, formatted."""
    out = {}
    for f in dataclasses.fields(layer):
        value = getattr(layer, f.name)
        if isinstance(value, Layer) or (
            isinstance(value, tuple | list) and any(isinstance(v, Layer) for v in value)
        ):
            continue
        if f.default is not dataclasses.MISSING:
            try:
                if bool(value == f.default):
                    continue
            except Exception:
                pass
        out[f.name] = _show(value)
    return out


def describe(model: Any, /, *args: Any, **kwargs: Any) -> Described:
    """The model's repr with the sizes inferred from a sample, like PyTorch after a dry run.

    Composite layers print their children as PyTorch does (``(fc1): ...``);
    leaves print their configuration, preceded by the inferred sizes that
    :data:`INFERRED` names (``in_features=``) or followed by a comment with their
    parameters' shapes. A child the sample never reached keeps its plain repr.
    Without a sample, the sizes that depend on the input print as ``?`` (PyTorch
    prints a lazy module's as 0), from what the layers declare. The first layer that
    seems to have read a channels-first sample as channels-last (``(2, 3, 32, 32)``:
    32 channels from the width) says so in a comment, naming
    :func:`lazyinit.channels_first`.

    Examples:
        >>> import jax.numpy as jnp, lazyinit as li
        >>> model = li.Sequential([li.Linear(8), li.nn.relu, li.Linear(1)])
        >>> model
        Sequential(layers=(Linear(out_features=8), relu, Linear(out_features=1)))
        >>> li.describe(model, jnp.ones((4, 3)))
        Sequential(
          (0): Linear(in_features=3, out_features=8)
          (1): relu
          (2): Linear(in_features=8, out_features=1)
        )
        >>> li.describe(model)
        Sequential(
          (0): Linear(in_features=?, out_features=8)
          (1): relu
          (2): Linear(in_features=?, out_features=1)
        )
    """
    calls: dict[Path, Call] = {}
    specs: dict[Path, dict[str, Any]] = {}
    misread = None
    if args or kwargs:
        t = trace(model, *args, **kwargs)
        for call in t.calls:  # a wrapper's internal layers are not shown: the wrapper is
            if not getattr(type(call.layer), "summary_internal", False):
                calls.setdefault(call.path, call)
        # The first layer that read a channels-first-looking input as channels-last, if any
        # (lazyinit._channels); the layers after it only inherit the mix-up.
        misread = next(
            ((c.path, m) for c in t.calls if (m := _channels.misread(c.layer, c.inputs[0]))), None
        )
        owned: dict[Path, Any] = dict(t.params)
    else:
        owned = {p: s for p, s in _structure.derived_specs(model).items() if s is not None}
    for path, param in owned.items():  # on the deepest layer shown above it, by the rest
        n = max((n for n in range(len(path)) if path[:n] in calls), default=len(path) - 1)
        specs.setdefault(path[:n], {})["/".join(path[n:])] = param
    traced = bool(args or kwargs)

    def leaf(layer: Any, path: Path) -> str:
        call = calls.get(path)
        fields = _config(layer)
        own = specs.get(path, {})
        comment = ""
        name = INFERRED.get(type(layer).__name__)
        if name is not None and (call is not None or not traced):
            fields = {name: _inferred(call), **fields}
        elif own:
            comment = "  # " + ", ".join(f"{n}: {_shape(p)}" for n, p in own.items())
        elif traced and call is None and path != ():
            comment = "  # not reached by this sample"
        if misread is not None and misread[0] == path:
            shape, channels, _ = misread[1]
            comment += f"{'; ' if comment else '  # '}{channels} channels from the last axis of "
            comment += f"{shape}: a channels-first sample? li.channels_first(model)"
        body = ", ".join(f"{k}={v}" for k, v in fields.items())
        return f"{type(layer).__name__}({body}){comment}"

    def render(layer: Any, path: Path, indent: str) -> str:
        entries = _entries(layer)
        known = {name for name, _ in entries}
        entries += [
            (p[-1], calls[p].layer)
            for p in calls
            if len(p) == len(path) + 1 and p[: len(path)] == path and p[-1] not in known
        ]
        if not entries:
            return leaf(layer, path)
        inner = indent + "  "
        config = _config(layer)
        lines = [inner + ", ".join(f"{k}={v}" for k, v in config.items())] if config else []
        for name, child in entries:
            if hasattr(child, "specs") and hasattr(child, "children"):
                text = render(child, (*path, name), inner)
            else:
                text = _show(child)
            lines.append(f"{inner}({name}): {text}")
        return f"{type(layer).__name__}(\n" + "\n".join(lines) + f"\n{indent})"

    return Described(render(model, (), ""))


def _entries(layer: Any) -> list[tuple[str, Any]]:
    """A layer's children to print: a ``layers`` sequence (``Sequential``, ``Parallel``) entry by
    entry, functions included; else what ``children()`` declares."""
    seq = getattr(layer, "layers", None)
    if isinstance(seq, tuple):
        return [(str(i), e) for i, e in enumerate(seq)]
    return list(layer.children().items()) if hasattr(layer, "children") else []


def _shape(param: Param) -> str:
    dims = ",".join("?" if d is None else str(d) for d in param.shape)
    return f"{_match.param_dtype(param).name}[{dims}]"
