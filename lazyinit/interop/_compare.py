"""The divergence locator: a port's per-layer outputs against the PyTorch module's.

:func:`compare` runs both models on one sample and pairs each lazyinit
layer's output (seen through ``lazyinit._layer.watch_calls``, as ``li.lsuv``
sees it) with the output of the torch module at the same path (a forward
hook), through the converters' own name mapping (``rename=``; copy ``i`` of
``li.Repeat`` at ``h`` is module ``h.i``). The report lists, in the order the
calls finished (a layer after the layers inside it), each pair's largest
absolute and relative difference, and names the first pair beyond tolerance
by its path on both sides: the first wrong layer of a port.
"""

from __future__ import annotations

import dataclasses
import html
import io
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _paths, _structure, nn
from .._layer import watch_calls
from .._tracer import trace
from .._typing import Path
from ..errors import InvalidArgumentError
from ._planning import module_path
from ._torch_state import split

__all__ = ["compare", "Comparison", "LayerDiff"]


@dataclasses.dataclass(frozen=True)
class LayerDiff:
    """One lazyinit layer's output against its torch module's.

    Attributes:
      path: the lazyinit layer's path (``'h/0/attn'``; the model is ``'<root>'``).
      torch_path: the torch module's (``'h.0.attn'``; the model is ``'<root>'``).
      layer, module: their types' names.
      shape: the lazyinit output's shape (its first array).
      max_abs: the largest ``|lazyinit - torch|``.
      max_rel: ``max_abs`` over the largest ``|torch|``.
      within: whether every element is within ``atol + rtol * |torch|``.
      note: why a pair could not be compared element by element (shapes differ), or ``''``.
    """

    path: str
    torch_path: str
    layer: str
    module: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    within: bool
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Comparison:
    """What :func:`compare` found: one :class:`LayerDiff` per paired call, in call order.

    ``first`` is the first pair beyond tolerance (the first wrong layer), or
    ``None``. Prints as a table (``print``, ``rich.print``) and renders as one
    in Jupyter.
    """

    rows: tuple[LayerDiff, ...]
    rtol: float
    atol: float
    unpaired: tuple[str, ...] = ()

    @property
    def first(self) -> LayerDiff | None:
        """The first layer whose output is beyond tolerance, or None."""
        return next((r for r in self.rows if not r.within), None)

    @property
    def ok(self) -> bool:
        """Whether every paired output is within tolerance."""
        return self.first is None

    def headline(self) -> str:
        tol = f"rtol={self.rtol:g}, atol={self.atol:g}"
        first = self.first
        if first is None:
            return f"{len(self.rows)} layers compared: all within {tol}"
        return (
            f"{len(self.rows)} layers compared: the first beyond {tol} is {first.path!r} "
            f"(lazyinit {first.layer}) <-> {first.torch_path!r} (torch {first.module})"
        )

    def _cells(self, i: int, r: LayerDiff) -> list[str]:
        return [
            str(i),
            r.path,
            r.torch_path,
            f"{r.layer} / {r.module}",
            _shape(r.shape),
            f"{r.max_abs:.2e}",
            f"{r.max_rel:.2e}",
            "ok" if r.within else (r.note or "DIFFERS"),
        ]

    _COLUMNS = ("#", "lazyinit", "torch", "layer / module", "shape", "max abs", "max rel", "")

    def __rich__(self) -> Any:
        return self._table(self.headline())

    def _table(self, title: str | None) -> Any:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
        for col in self._COLUMNS:
            table.add_column(col, justify="right" if col.startswith(("max", "#")) else "left")
        for i, r in enumerate(self.rows):
            style = "" if r.within else ("bold red" if r is self.first else "red")
            table.add_row(*(Text(c) for c in self._cells(i, r)), style=style)
        return table

    def __str__(self) -> str:
        from rich.console import Console

        buffer = io.StringIO()
        console = Console(
            file=buffer, width=1000, color_system=None, soft_wrap=False, force_jupyter=False
        )
        console.print(self._table(None))  # the headline apart: a title wraps at the table's width
        lines = [self.headline(), *(line.rstrip() for line in buffer.getvalue().splitlines())]
        return "\n".join(lines).strip("\n")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self._COLUMNS)
        body = "".join(
            f'<tr style="{"" if r.within else "color:#c00"}'
            f'{";font-weight:bold" if r is self.first else ""}">'
            + "".join(f"<td><code>{html.escape(c)}</code></td>" for c in self._cells(i, r))
            + "</tr>"
            for i, r in enumerate(self.rows)
        )
        return (
            '<table class="lazyinit-compare"><caption style="caption-side:top;text-align:left">'
            f"<b>{html.escape(self.headline())}</b></caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )


def _shape(shape: tuple[int, ...]) -> str:
    return f"({', '.join(map(str, shape))}{',' if len(shape) == 1 else ''})"


# ---------------------------------------------------------------------------
# Running both models.


def _unrolled(model: Any, params: Any) -> tuple[Any, Any]:
    """``model`` with each ``li.Repeat`` its fields declare as ``li.Sequential([block] * n)``,
    and ``params`` unstacked to match: copy ``i``'s layers are then called with their own
    sub-dict (``h/i/...``), where a watch sees them; the values are the same."""
    while True:
        layers = _structure.derived_layers(model)
        at = next((p for p, l in layers.items() if isinstance(l, nn.Repeat)), None)
        if at is None or not isinstance(params, Mapping):
            return model, params
        target = layers[at]
        model = _replace(model, target, nn.Sequential([target.block] * target.n))
        params = nn.unstack_layers(dict(params), "/".join(at) or None)


def _replace(value: Any, target: Any, new: Any) -> Any:
    if value is target:
        return new
    if isinstance(value, (list, tuple)):
        items = [_replace(v, target, new) for v in value]
        changed = any(a is not b for a, b in zip(items, value))
        return type(value)(items) if changed else value
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    changes = {
        f.name: _replace(getattr(value, f.name), target, new) for f in dataclasses.fields(value)
    }
    changes = {k: v for k, v in changes.items() if v is not getattr(value, k)}
    return dataclasses.replace(value, **changes) if changes else value


def _first_array(out: Any) -> Any:
    """The first array in a layer's output (a tensor, a tuple, a dict, a ModelOutput), or None."""
    if hasattr(out, "shape") and hasattr(out, "dtype"):
        return out
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        for item in out:
            found = _first_array(item)
            if found is not None:
                return found
    return None


def _host(x: Any) -> np.ndarray:
    if type(x).__module__.split(".")[0] == "torch":
        x = x.detach().cpu()
        if x.is_floating_point() or x.is_complex():
            x = x.double()
        return x.numpy()
    return np.asarray(x, dtype=np.float64 if jnp.issubdtype(x.dtype, jnp.floating) else None)


def _lazy_outputs(
    model: Any, params: Any, args: tuple, kwargs: dict
) -> list[tuple[Path, Any, Any]]:
    """``(path, layer, output)`` of every layer call with its own sub-dict, in finishing order.

    Every layer the trace saw called gets a sub-dict of its own first (``{}`` for a layer
    without params, which ``params.get(name, {})`` would otherwise make anonymous)."""
    layers = trace(model, *args, **kwargs).layers
    params = _paths.unflatten(dict(_paths.leaves(params)), layers)
    where = {id(sub): path for path, sub in _paths.nodes(params)}
    seen: list[tuple[Path, Any, Any]] = []

    def watch(layer: Any, sub: Any, out: Any) -> None:
        path = where.get(id(sub))
        first = _first_array(out)
        if path is not None and first is not None and not isinstance(first, jax.core.Tracer):
            seen.append((path, layer, first))

    with watch_calls(watch):
        model(params, *args, **kwargs)
    return seen


def _torch_outputs(module: Any, inputs: tuple, kwargs: Mapping) -> dict[str, list[Any]]:
    import torch

    outs: dict[str, list[Any]] = {}

    def hook(name: str) -> Any:
        def record(_: Any, __: Any, out: Any) -> None:
            first = _first_array(out)
            if first is not None:  # a copy: a later in-place op (ReLU(inplace=True), +=) edits it
                outs.setdefault(name, []).append(first.detach().clone())

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in module.named_modules()]
    try:
        with torch.no_grad():
            module(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return outs


def _as_torch(x: Any) -> Any:
    import torch

    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        return x
    array = np.asarray(x)
    if array.dtype.kind in "iu":
        return torch.from_numpy(array.astype(np.int64))
    if array.dtype.kind == "b":
        return torch.from_numpy(array)
    return torch.from_numpy(np.array(array, dtype=np.float32))


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _diff(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> tuple[float, float, bool, str]:
    if a.shape != b.shape and _squeezed(a.shape) == _squeezed(b.shape):
        a = np.reshape(a, b.shape)  # (6, 16) against (1, 6, 16), (2, 16) against (2, 16, 1, 1)
    if a.shape != b.shape and a.ndim >= 3 and np.moveaxis(a, -1, 1).shape == b.shape:
        a = np.moveaxis(a, -1, 1)  # a channels-last output against PyTorch's channels-first
    if a.shape != b.shape:
        return math.inf, math.inf, False, f"shapes {_shape(a.shape)} vs {_shape(b.shape)}"
    if a.size == 0:
        return 0.0, 0.0, True, ""
    a, b = a.astype(np.float64), b.astype(np.float64)
    err = np.abs(a - b)
    max_abs = float(np.max(err))
    scale = float(np.max(np.abs(b)))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    within = bool(np.all(err <= atol + rtol * np.abs(b)))
    return max_abs, max_rel, within, "" if within or math.isfinite(max_abs) else "not finite"


def compare(
    model: Any,
    params: Any,
    module: Any,
    /,
    *sample: Any,
    torch_sample: tuple | None = None,
    rename: Any = None,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    **kwargs: Any,
) -> Comparison:
    """Runs ``model`` and the torch ``module`` on ``sample`` and compares them layer by layer.

    Each lazyinit layer called with its own params is paired with the torch
    module at its path, mapped as the converters map it (``rename=``; copy ``i``
    of ``li.Repeat`` at ``h`` with module ``h.i``); the first array of each
    output is compared. Put both in evaluation mode first (``module.eval()``).

    Args:
      model: the lazyinit model.
      params: its params.
      module: the torch ``nn.Module`` it ports.
      *sample: the model's inputs; the torch module gets the same values as tensors
        (integers as int64), unless ``torch_sample`` (a tuple) gives its own (an
        NCHW image for a channels-last port: outputs channels-last are compared
        with the channel axis moved).
      rename: as for :func:`~lazyinit.interop.torch.from_torch_state_dict`.
      rtol: relative tolerance: a pair is within tolerance when every element is
        within ``atol + rtol * |torch|``.
      atol: absolute tolerance (see ``rtol``).
      **kwargs: call-time options of the lazyinit model.

    Returns:
      A :class:`Comparison`: ``rows`` in call order, ``first`` the first wrong layer.

    Examples:
        >>> import jax, jax.numpy as jnp, torch, lazyinit as li
        >>> from lazyinit.interop.torch import compare, from_torch_state_dict
        >>> torch_mlp = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> model = li.Sequential([li.Linear(4), li.nn.tanh, li.Linear(2)])
        >>> params, _ = from_torch_state_dict(model, torch_mlp, jnp.ones((2, 3)))
        >>> report = compare(model, params, torch_mlp, jnp.ones((2, 3)))
        >>> [(r.path, r.torch_path, r.within) for r in report.rows]
        [('0', '0', True), ('2', '2', True), ('<root>', '<root>', True)]
        >>> report.first is None
        True
    """
    if not callable(getattr(module, "named_modules", None)):
        raise InvalidArgumentError(
            f"compare takes the torch nn.Module that the model ports, got {type(module).__name__}."
        )
    if torch_sample is not None and not isinstance(torch_sample, tuple):
        raise InvalidArgumentError(
            f"compare: torch_sample must be a tuple of the torch module's inputs, got "
            f"{type(torch_sample).__name__}."
        )
    unrolled, flat_params = _unrolled(model, params)
    lazy = _lazy_outputs(unrolled, flat_params, sample, kwargs)
    inputs = torch_sample if torch_sample is not None else tuple(_as_torch(x) for x in sample)
    theirs = _torch_outputs(module, inputs, {})
    modules = dict(module.named_modules())
    rows: list[LayerDiff] = []
    unpaired: list[str] = []
    calls: dict[Path, int] = {}
    for path, layer, out in lazy:
        k = calls[path] = calls.get(path, -1) + 1
        name = ".".join(module_path(rename, split, path)) if path else ""  # the models
        if len(theirs.get(name, ())) <= k:
            unpaired.append(_paths.join(path))
            continue
        a, b = _host(out), _host(theirs[name][k])
        max_abs, max_rel, within, note = _diff(a, b, rtol, atol)
        rows.append(
            LayerDiff(
                _paths.join(path),
                name or "<root>",
                type(layer).__name__,
                type(modules[name]).__name__,
                tuple(a.shape),
                max_abs,
                max_rel,
                within,
                note,
            )
        )
    return Comparison(tuple(rows), rtol, atol, tuple(dict.fromkeys(unpaired)))
