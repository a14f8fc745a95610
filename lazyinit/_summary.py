"""``summary``: a per-layer table of shapes, parameters and their status, computed abstractly.

``li.summary(model, *sample)`` is flax's ``tabulate`` and torchinfo's
``summary`` for lazyinit. It is built on :func:`lazyinit.trace`, so it costs a
trace and allocates nothing: the summary of a 7B-parameter decoder on a
``jax.ShapeDtypeStruct`` sample runs on a laptop. Given a params tree (or a
lazy state), it also says which parameters are uninitialized, abstract,
initialized or loaded, and which disagree with what the model needs.

The :class:`Summary` renders three ways: ``rich`` (``rich.print(s)``, and in a
terminal via the CLI), plain text (``str(s)``, also its ``repr``) and an
HTML table in notebooks (``_repr_html_``).

Layers read a few class attributes here, so that the core never tests for a type:
``summary_label()`` names the row (``Block x12``), ``stacked_layer`` folds the
copies of ``li.Repeat`` into its row, and ``summary_internal = True`` marks a layer
that is a wrapper's inner machinery (the ``DeclaredVariables`` through which a
wrapped flax or nnx module declares its variables): it gets no row, and its
parameters are listed on the row of the layer above it, by their path from there.
"""

from __future__ import annotations

import dataclasses
import html
import io
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from . import _match, _paths
from ._match import Report, Target
from ._spec import Uninitialized
from ._tracer import needs_sample, no_sample, trace
from ._typing import Params, Path, PerPath, Shape

__all__ = ["summary", "Summary", "Row", "ParamInfo", "STATUSES"]

STATUSES = ("uninitialized", "abstract", "initialized", "loaded", "missing", "mismatch")
"""What a parameter can be when a params tree is given:

* ``uninitialized``: a placeholder (:class:`lazyinit.Uninitialized`), before a dry run;
* ``abstract``: a ``jax.ShapeDtypeStruct`` from an abstract dry run: planned, not allocated;
* ``initialized``: an array (drawn by a dry run, or of unknown origin);
* ``loaded``: an array the given :class:`lazyinit.Report` lists as loaded or kept;
* ``missing``: the tree has no leaf at this path;
* ``mismatch``: the leaf's shape differs from the inferred one.
"""


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    """One parameter: where, its inferred shape and dtype, size, and status (None without params)."""

    path: Path
    shape: Shape
    dtype: np.dtype
    trainable: bool
    status: str | None = None
    found: tuple[int | None, ...] | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


@dataclasses.dataclass(frozen=True)
class Row:
    """One layer call: its path, type, input and output shapes, and the parameters counted on it.

    ``params`` are the layer's own parameters (a wrapper's include those its internal
    layers declare), then, when ``depth`` hides the layers below, theirs: the last
    ``below`` of them.
    """

    path: Path
    layer: Any
    inputs: Any
    outputs: Any
    params: tuple[ParamInfo, ...]
    below: int = 0
    shared: bool = False

    @property
    def count(self) -> int:
        return sum(p.size for p in self.params)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.params)


@dataclasses.dataclass(frozen=True)
class Summary:
    """What :func:`summary` returns: rows per layer call and totals; print it or display it.

    Attributes:
      title: the model's type name.
      rows: one :class:`Row` per layer call shown, in call order.
      params: every parameter once, by path (shared weights count once).
      unexpected: paths of the given params tree that the model has no place for.
    """

    title: str
    rows: tuple[Row, ...]
    params: dict[Path, ParamInfo]
    unexpected: tuple[Path, ...] = ()
    with_status: bool = False

    @property
    def total_params(self) -> int:
        return sum(p.size for p in self.params.values())

    @property
    def total_bytes(self) -> int:
        return sum(p.nbytes for p in self.params.values())

    @property
    def trainable_params(self) -> int:
        return sum(p.size for p in self.params.values() if p.trainable)

    def counts(self) -> dict[str, int]:
        """How many parameter arrays have each status (empty without a params tree)."""
        out: dict[str, int] = {}
        for p in self.params.values():
            if p.status is not None:
                out[p.status] = out.get(p.status, 0) + 1
        return out

    def caption(self) -> list[str]:
        """The lines under the table: totals, trainable split, statuses, unexpected paths."""
        total, trainable = self.total_params, self.trainable_params
        lines = [
            f"{total:,} parameters in {len(self.params)} arrays, {human_bytes(self.total_bytes)}; "
            f"{trainable:,} trainable, {total - trainable:,} non-trainable"
        ]
        if self.with_status:
            counts = self.counts()
            lines.append(", ".join(f"{counts[s]} {s}" for s in STATUSES if s in counts) or "-")
        if self.unexpected:
            lines.append(
                "unexpected in params (the model has no such parameter): "
                + ", ".join(_paths.join(p) for p in self.unexpected)
            )
        return lines

    # -- rendering -----------------------------------------------------------

    def _cells(self, row: Row) -> dict[str, str]:
        own, rest = (
            row.params[: len(row.params) - row.below],
            row.params[len(row.params) - row.below :],
        )
        lines = [f"{_paths.join(p.path[len(row.path) :])}: {_sds(p.shape, p.dtype)}" for p in own]
        if row.below:
            lines.append(f"{row.below} arrays in layers below")
        if row.shared:
            lines.append("(shares the params above)")
        status = [_status(p) for p in own]
        if row.below:
            status.append(", ".join(sorted(set(p.status for p in rest if p.status))))
        return {
            "path": _paths.join(row.path),
            "layer": getattr(row.layer, "summary_label", lambda: type(row.layer).__name__)(),
            "inputs": fmt_tree(_call_args(row.inputs)),
            "outputs": fmt_tree(row.outputs),
            "params": "\n".join(lines),
            "count": f"{row.count:,}" if row.params else "",
            "bytes": human_bytes(row.nbytes) if row.params else "",
            "status": "\n".join(status),
        }

    def _columns(self) -> list[str]:
        cols = ["path", "layer", "inputs", "outputs", "params", "count", "bytes"]
        return [*cols, "status"] if self.with_status else cols

    def _footer(self) -> dict[str, str]:
        return {
            "path": "Total",
            "count": f"{self.total_params:,}",
            "bytes": human_bytes(self.total_bytes),
        }

    def __rich__(self) -> Any:
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table = Table(
            title=f"{self.title} summary",
            caption="\n".join(self.caption()),
            box=box.SIMPLE_HEAD,
            show_footer=True,
            caption_justify="left",
        )
        footer = self._footer()
        for col in self._columns():
            right = col in _NUMERIC
            table.add_column(
                col, Text(footer.get(col, "")), justify="right" if right else "left", no_wrap=right
            )
        for row in self.rows:
            cells = self._cells(row)
            table.add_row(*(Text(cells[c]) for c in self._columns()))
        return table

    def __str__(self) -> str:
        from rich.console import Console

        buffer = io.StringIO()
        # force_jupyter=False: in a notebook rich would otherwise display the table itself
        # (a second copy) and leave the buffer, so str() and text/plain, empty.
        console = Console(
            file=buffer, width=1000, color_system=None, soft_wrap=False, force_jupyter=False
        )
        console.print(self.__rich__())
        return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()).strip("\n")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        cols = self._columns()

        def td(col: str, inner: str, tag: str = "td") -> str:
            align = "right" if col in _NUMERIC else "left"
            return f'<{tag} style="text-align:{align};vertical-align:top">{inner}</{tag}>'

        head = "".join(td(c, html.escape(c), "th") for c in cols)
        body = "".join(
            "<tr>" + "".join(td(c, f"<code>{_html(cells[c])}</code>") for c in cols) + "</tr>"
            for cells in map(self._cells, self.rows)
        )
        footer = self._footer()
        foot = "".join(td(c, f"<b>{_html(footer.get(c, ''))}</b>") for c in cols)
        caption = "<br>".join(_html(line) for line in self.caption())
        return (
            '<table class="lazyinit-summary"><caption style="caption-side:top;text-align:left">'
            f"<b>{_html(self.title)} summary</b></caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody><tfoot><tr>{foot}</tr></tfoot></table>"
            f'<div style="font-size:smaller">{caption}</div>'
        )


_NUMERIC = ("count", "bytes")


def _html(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


# ---------------------------------------------------------------------------
# Formatting helpers (shared with the display module).


def human_bytes(n: int) -> str:
    """``1536 -> '1.5 KiB'``: binary units, one decimal above bytes."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _sds(shape: Shape, dtype: Any) -> str:
    return f"{np.dtype(dtype).name}[{','.join(map(str, shape))}]"


def fmt_tree(x: Any) -> str:
    """Abstract values as ``float32[8,10]``; tuples, lists and dicts of them in brackets."""
    if isinstance(x, jax.ShapeDtypeStruct) or (hasattr(x, "shape") and hasattr(x, "dtype")):
        return _sds(tuple(x.shape), x.dtype)
    if isinstance(x, Mapping):
        return "{" + ", ".join(f"{k}: {fmt_tree(v)}" for k, v in x.items()) + "}"
    if isinstance(x, tuple | list):
        inner = ", ".join(fmt_tree(v) for v in x)
        return f"[{inner}]" if isinstance(x, list) else f"({inner})"
    return repr(x)


def _call_args(inputs: Any) -> Any:
    """A call's ``(args, kwargs)`` as what reads best: the lone input, or a tuple of them."""
    args, kwargs = inputs
    if not kwargs and len(args) == 1:
        return args[0]
    return _Args(args, kwargs)


class _Args:
    def __init__(self, args: tuple, kwargs: dict):
        self.args, self.kwargs = args, kwargs

    def __repr__(self) -> str:
        parts = [fmt_tree(a) for a in self.args]
        parts += [f"{k}={fmt_tree(v)}" for k, v in self.kwargs.items()]
        return ", ".join(parts)


def _stacked(layer: Any) -> Any:
    """The layer that ``li.Repeat``/``li.Ensemble`` copies (its params are theirs, stacked)."""
    return getattr(layer, "stacked_layer", None)


def _status(p: ParamInfo) -> str:
    if p.status == "mismatch" and p.found is not None:
        dims = ", ".join("?" if d is None else str(d) for d in p.found)
        return f"mismatch: found ({dims}{',' if len(p.found) == 1 else ''})"
    return p.status or ""


# ---------------------------------------------------------------------------
# Building a summary.


def summary(
    model: Any,
    /,
    *args: Any,
    params: Params | None = None,
    report: Report | None = None,
    dtype: PerPath = None,
    depth: int | None = None,
    **kwargs: Any,
) -> Summary:
    """A table of every layer call: type, input and output shapes, parameters, counts and bytes.

    Runs :func:`lazyinit.trace` on the sample (arrays or ``jax.ShapeDtypeStruct``
    s: only shapes and dtypes matter) and allocates no parameter.

    Args:
      model: a :class:`lazyinit.Layer`.
      *args: a sample of what the model is called with after ``params``.
      params: optional params tree or lazy state; adds a status column
        (see :data:`STATUSES`) and counts each leaf's dtype as it is.
      report: the :class:`lazyinit.Report` of the load or dry run that made
        ``params``; its ``loaded`` and ``kept`` paths show as ``loaded``.
      dtype: the dtype to count bytes in where ``params`` does not say, as in
        :func:`lazyinit.dry_run` (one dtype or a mapping of path patterns).
      depth: show layers down to this many path components (``0``: the model
        only); the parameters of hidden layers count on their shown ancestor.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> model = li.Sequential([li.Linear(4), li.nn.relu, li.Linear(1)])
        >>> s = li.summary(model, jnp.ones((8, 3)))
        >>> s.total_params, s.total_bytes
        (21, 84)
        >>> [("/".join(r.path), type(r.layer).__name__, r.count) for r in s.rows]
        [('', 'Sequential', 0), ('0', 'Linear', 16), ('2', 'Linear', 5)]
        >>> print(s.caption()[0])
        21 parameters in 4 arrays, 84 B; 21 trainable, 0 non-trainable
    """
    if no_sample(args, kwargs):
        raise needs_sample(
            model,
            why="li.summary shows each layer call's input and output shapes",
            example="li.summary(model, x), where a jax.ShapeDtypeStruct is enough (without a "
            "sample, li.describe(model) shows what the layers declare)",
        )
    t = trace(model, *args, **kwargs)
    with_status = params is not None
    flat = _paths.flatten_state(params, "params") if with_status else {}
    loaded = set()
    if report is not None:
        loaded = {tuple(p.split("/")) for p in (*report.loaded, *report.kept)}
    # The statuses are the load rules' decisions (lazyinit._match), as a dry run would take them.
    m = _match.match(
        {
            path: Target(param.shape, None, _match.param_dtype(param, dtype, path))
            for path, param in t.params.items()
        },
        {
            p: jax.ShapeDtypeStruct(v.shape, v.dtype) if _paths.is_value(v) else v
            for p, v in flat.items()
        },
        abstract=True,  # shapes only: nothing is copied, a dtype is shown as it is
        cast=True,
    )

    infos: dict[Path, ParamInfo] = {}
    for path, param in t.params.items():
        leaf = m.values.get(path, m.holes.get(path))
        chosen = _match.param_dtype(param, dtype, path)
        status = found = None
        if with_status:
            if path in m.missing:
                status = "missing"
            elif path in m.holes:
                status = "uninitialized"
            elif path in m.values:
                leaf = flat[path]
                chosen = np.dtype(leaf.dtype)
                status = (
                    "abstract"
                    if isinstance(leaf, jax.ShapeDtypeStruct)
                    else "loaded"
                    if path in loaded
                    else "initialized"
                )
            else:
                status, found = "mismatch", tuple(getattr(flat[path], "shape", None) or ())
        if isinstance(leaf, Uninitialized) and leaf.dtype is not None:
            chosen = np.dtype(leaf.dtype)
        infos[path] = ParamInfo(path, param.shape, np.dtype(chosen), param.trainable, status, found)
    unexpected = tuple(m.unexpected)

    visible = [c for c in t.calls if not getattr(type(c.layer), "summary_internal", False)]
    shown = [c for c in visible if depth is None or len(c.path) <= depth]
    seen_paths: set[Path] = set()
    rows: list[Row] = []
    for call in shown:
        if rows and rows[-1].path == call.path and call.layer is _stacked(rows[-1].layer):
            continue  # li.Repeat / li.Ensemble: one row, "Block xn", for the n copies
        if call.path in seen_paths:
            rows.append(Row(call.path, call.layer, call.inputs, call.outputs, (), shared=True))
            continue
        seen_paths.add(call.path)
        rows.append(Row(call.path, call.layer, call.inputs, call.outputs, ()))
    # Each parameter counts on the deepest shown row whose path is a prefix of its own; it is
    # listed there if that row's layer is its owner, the deepest visible layer above it.
    by_path = {r.path: i for i, r in enumerate(rows) if not r.shared}
    layers = {c.path for c in visible}
    mine: dict[int, tuple[list[ParamInfo], list[ParamInfo]]] = {}
    for path, info in infos.items():
        above = [path[:n] for n in range(len(path) - 1, -1, -1)]
        owner = next((p for p in above if p in layers), None)
        i = next((by_path[p] for p in above if p in by_path), None)
        if i is not None:
            mine.setdefault(i, ([], []))[rows[i].path != owner].append(info)
    for i, (own, below) in mine.items():
        rows[i] = dataclasses.replace(rows[i], params=(*own, *below), below=len(below))
    return Summary(type(model).__name__, tuple(rows), infos, unexpected, with_status)
