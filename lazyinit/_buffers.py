"""Non-trainable state (PyTorch's buffers): kept apart from the optimizer, updated functionally.

A layer declares a buffer as ``li.Param(..., trainable=False)``; the dry run
materializes it with the rest, at its path. :func:`partition` splits a params
tree into what the optimizer trains and what it must not touch, and
:func:`merge` joins them again. A layer that updates its buffers during a call
(BatchNorm's running statistics in training mode) hands the new values to
:func:`update_buffers`; :func:`apply` with ``mutable=True`` collects them and
returns them beside the output, so a jit-compiled train step threads them
explicitly::

    trainable, buffers = li.partition(model, params)

    def loss_fn(trainable, buffers, x, y):
        out, new = li.apply(model, li.merge(trainable, buffers), x, train=True, mutable=True)
        return loss(out, y), new

    (l, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, buffers, x, y)
    buffers = li.merge(buffers, new)
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping
from typing import Any

from . import _match, _paths, _structure
from ._recorder import is_tracing
from ._spec import Param
from ._tracer import trace
from ._typing import Params, Path
from .errors import InferShapeError, UpdateBuffersError

__all__ = [
    "apply",
    "update_buffers",
    "partition",
    "merge",
    "collecting",
    "collect_per_copy",
    "report_stacked",
]


_COLLECTOR: contextvars.ContextVar[tuple[dict[int, Path], dict[Path, Any]] | None] = (
    contextvars.ContextVar("lazyinit_buffer_updates", default=None)
)


def apply(model: Any, params: Params, /, *args: Any, mutable: bool = False, **kwargs: Any) -> Any:
    """``model(params, *args, **kwargs)``; with ``mutable=True``, returns ``(out, updates)``.

    ``updates`` is a nested dict of the buffers the call updated, by path;
    ``li.merge(params, updates)`` applies them.
    """
    if not mutable:
        return model(params, *args, **kwargs)
    where = {id(sub): path for path, sub in _paths.nodes(params)}
    updates: dict[Path, Any] = {}
    token = _COLLECTOR.set((where, updates))
    try:
        out = model(params, *args, **kwargs)
    finally:
        _COLLECTOR.reset(token)
    return out, _paths.unflatten(updates)


def update_buffers(params: Any, **values: Any) -> None:
    """Reports new values for buffers of the layer that was given ``params``.

    Call it from a layer's ``__call__`` with the ``params`` it received. During
    a dry run it does nothing.

    Raises:
      UpdateBuffersError: when no ``li.apply(..., mutable=True)`` is collecting.
    """
    if is_tracing(params):
        return
    active = _COLLECTOR.get()
    if active is None:
        raise UpdateBuffersError(
            f"A layer updated its buffers {sorted(values)} outside a mutable call. Call "
            "li.apply(model, params, x, train=True, mutable=True), which returns (out, updates), "
            "or call the model in evaluation mode (train=False)."
        )
    where, updates = active
    path = where.get(id(params))
    if path is None:
        raise UpdateBuffersError(
            f"Buffers {sorted(values)} were updated from a params dict that is not part of the "
            "tree given to li.apply: pass each child layer its sub-dict params[name] unchanged."
        )
    for name, value in values.items():
        updates[(*path, name)] = value


def collecting() -> bool:
    """Whether a ``li.apply(..., mutable=True)`` is collecting buffer updates now."""
    return _COLLECTOR.get() is not None


def collect_per_copy(step: Callable[..., Any]) -> Callable[..., Any]:
    """``step(p, *a)`` -> ``(out, updates)``: the buffer updates ``p``'s layers report.

    For a combinator that maps one layer over stacked params (``li.Repeat``'s scan,
    ``li.Ensemble``'s vmap): inside ``li.apply(..., mutable=True)`` each copy's
    ``li.update_buffers`` calls are collected per copy, so that the scan or vmap stacks
    them; outside one, ``updates`` is ``{}`` and an update is the usual error.
    """

    def run(p: Params, *args: Any) -> tuple[Any, Params]:
        if _COLLECTOR.get() is None:
            return step(p, *args), {}
        where = {id(sub): path for path, sub in _paths.nodes(p)}
        updates: dict[Path, Any] = {}
        token = _COLLECTOR.set((where, updates))
        try:
            out = step(p, *args)
        finally:
            _COLLECTOR.reset(token)
        return out, _paths.unflatten(updates)

    return run


def report_stacked(params: Params, updates: Params) -> None:
    """Hands the stacked updates :func:`collect_per_copy` returned to the enclosing
    ``li.apply``, under ``params``'s path."""
    flat = _paths.flatten(updates, lambda x: not isinstance(x, Mapping), what="updates")
    if not flat:
        return
    active = _COLLECTOR.get()
    base = None if active is None else active[0].get(id(params))
    if active is None or base is None:
        update_buffers(params, **{_paths.join(p): v for p, v in flat.items()})
        return  # (it raised: no collector, or params not part of the tree given to li.apply)
    collected = active[1]
    for rel, value in flat.items():
        collected[(*base, *rel)] = value


def partition(
    model: Any, params: Params, *sample: Any, **sample_kwargs: Any
) -> tuple[Params, Params]:
    """Splits ``params`` into ``(trainable, buffers)`` by the specs' ``trainable`` flags.

    Both halves keep the nesting; a leaf is in exactly one; :func:`merge`
    undoes it. The flags come from the model's trace on the sample when one is
    given (``li.partition(model, params, x)``); without one, from what the layers
    declare (their ``specs`` and child fields, as ``li.lazy_state(model)`` derives
    them), never from whatever ran earlier in the process.

    Raises:
      InferShapeError: no sample was given and a layer holding some of ``params``
        names its parameters only when traced (children built inside ``__call__``).
      StateMismatchError: ``params`` holds paths the model does not have.
    """
    flat = _paths.flatten(params, lambda x: True, what="params")
    trainable_at = _trainable(model, flat, sample, sample_kwargs)
    skeleton = _paths.subtrees(params)
    trainable = {p: v for p, v in flat.items() if trainable_at[p]}
    buffers = {p: v for p, v in flat.items() if not trainable_at[p]}
    return _paths.unflatten(trainable, skeleton), _paths.unflatten(buffers, skeleton)


def _trainable(model: Any, flat: dict[Path, Any], sample: tuple, kw: dict) -> dict[Path, bool]:
    """Whether each path of ``flat`` is trainable: from the trace on the sample, else from the
    derived structure; a path the model lacks is an error, one it cannot know a refusal."""
    if sample or kw:
        specs: dict[Path, Param | None] = dict(trace(model, *sample, **kw).params)
    else:
        specs = _structure.derived_specs(model)
    unknown = [p for p in flat if p not in specs and _structure.unknown_below(specs, p) is not None]
    if unknown:
        at = {q for p in unknown if (q := _structure.unknown_below(specs, p)) is not None}
        raise InferShapeError(
            f"li.partition needs the structure of {type(model).__name__} at "
            f"{', '.join(repr(_paths.join(p)) for p in sorted(at))}, which names its parameters "
            "only when traced (children built inside __call__, or specs that need the input). "
            "Pass a sample as for li.dry_run: li.partition(model, params, x)."
        )
    known = [p for p, s in specs.items() if s is not None]
    _match.refuse(
        f"li.partition: the params do not fit {type(model).__name__}",
        [
            _match.unexpected_key(repr(_paths.join(p)), _match.near_hint(p, known))
            for p in flat
            if p not in specs and _structure.unknown_below(specs, p) is None
        ],
        "Pass this model's params (li.dry_run's result for it).",
    )
    return {p: bool(getattr(specs.get(p), "trainable", True)) for p in flat}


def merge(*trees: Mapping[str, Any]) -> Params:
    """Deep-merges nested dicts; where two trees hold the same leaf, the later one wins."""
    out: dict[str, Any] = {}
    for tree in trees:
        for key, value in tree.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = merge(out[key], value)
            elif isinstance(value, Mapping):
                out[key] = merge(value)
            else:
                out[key] = value
    return out
