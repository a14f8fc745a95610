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
from collections.abc import Mapping
from typing import Any

from . import _paths
from ._errors import UpdateBuffersError
from ._recorder import _Node
from ._structure import trace_for
from ._typing import Params, Path

__all__ = ["apply", "update_buffers", "partition", "merge"]


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
    if isinstance(params, _Node):
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


def partition(
    model: Any, params: Params, *sample: Any, **sample_kwargs: Any
) -> tuple[Params, Params]:
    """Splits ``params`` into ``(trainable, buffers)`` by the specs' ``trainable`` flags.

    Both halves keep the nesting; a leaf is in exactly one; :func:`merge`
    undoes it. The flags come from the model's trace: on the sample when one
    is given (``li.partition(model, params, x)``), else from the trace its dry
    run cached, whose paths must be those of ``params``.

    Raises:
      InferShapeError: no sample was given and no cached trace of the model has
        these params' paths (the structure would be a guess).
    """
    t = trace_for(
        model,
        sample,
        sample_kwargs,
        what="li.partition",
        example="li.partition(model, params, x)",
        params=params,
    )
    frozen = {p for p, spec in t.params.items() if not spec.trainable}
    flat = _paths.flatten(params, lambda x: True, what="params")
    skeleton = _paths.subtrees(params)
    trainable = {p: v for p, v in flat.items() if p not in frozen}
    buffers = {p: v for p, v in flat.items() if p in frozen}
    return _paths.unflatten(trainable, skeleton), _paths.unflatten(buffers, skeleton)


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
