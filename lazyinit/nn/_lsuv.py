"""Data-dependent initialization, a phase after the dry run: ``lsuv`` and ``warmup_stats``.

Both are pure (params in, params out) and refuse placeholders: they compute on the
parameters' values, so the dry run (or a load) comes first.

* :func:`lsuv` is layer-sequential unit-variance init (Mishkin & Matas, 2016): in
  call order, each layer with a ``kernel`` has it rescaled until the layer's output
  has unit variance on the batch. A layer's output variance is one jit-compiled
  function per layer (the model's forward, cut at that layer by XLA's dead-code
  elimination); no randomness, so the result is deterministic.
* :func:`warmup_stats` recomputes ``BatchNorm`` / ``InstanceNorm`` running statistics
  from a few batches (PyTorch's ``torch.optim.swa_utils.update_bn``): the equally
  weighted average of each batch's mean and unbiased variance. No trainable
  parameter changes.

:func:`lsuv` finds a layer's output by watching, while its function is being
traced, the layer calls return (``lazyinit._layer.watch_calls``, a context
variable read by every real layer call): the call whose layer is the one being
rescaled and whose ``params`` is its sub-dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _paths
from .._buffers import apply
from .._layer import watch_calls
from .._recorder import Trace
from .._reinit import select
from .._trace_cache import is_abstract
from .._tracer import needs_sample, no_sample, trace
from .._typing import Params, Path
from ..errors import InvalidArgumentError, RescaleLayerError, UninitializedParamError
from ._batch_norm import BatchNorm, InstanceNorm

__all__ = ["lsuv", "warmup_stats"]


def _refuse_holes(params: Params, what: str) -> dict[Path, Any]:
    whole = _paths.is_hole(params)  # the lazy state of a model that names params only from input
    flat: dict[Path, Any] = (
        {(): params} if whole else _paths.flatten(params, _paths.is_leaf, what="params")
    )
    holes = [_paths.join(p) for p, v in flat.items() if _paths.is_hole(v)]
    if holes:
        raise UninitializedParamError(
            f"{what} computes on the parameters' values, but {', '.join(holes)} hold no values "
            "(placeholders or ShapeDtypeStructs). Run li.dry_run(model, key, batch) with an "
            "array batch (or load a state) first and pass the params it returns."
        )
    return flat


def _kernel_layers(t: Trace) -> list[tuple[Path, Any]]:
    """``(path, layer)`` of each layer owning a trainable ``kernel``, in call order."""
    owners = {
        p[:-1]: t.owners[p] for p, spec in t.params.items() if p[-1] == "kernel" and spec.trainable
    }
    order: dict[Path, Any] = {}
    for call in t.calls:
        if call.path in owners and call.path not in order and call.layer == owners[call.path]:
            order[call.path] = call.layer
    return list(order.items())


def _walk(tree: Mapping[str, Any], prefix: Path = ()) -> Any:
    yield prefix, tree
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _walk(value, (*prefix, key))


def _output_of(model: Any, params: Params, args: tuple, kw: dict, path: Path, layer: Any) -> Any:
    """Runs ``model`` and returns what the call of ``layer`` on ``params`` at ``path`` returned."""
    where = {id(sub): p for p, sub in _walk(params)}
    seen: list[Any] = []

    def watch(called: Any, sub: Any, out: Any) -> None:
        if not seen and called == layer and where.get(id(sub)) == path:
            seen.append(out)

    with watch_calls(watch):
        model(params, *args, **kw)
    if not seen:
        raise RescaleLayerError(
            f"li.lsuv cannot see the output of {type(layer).__name__} at {_paths.join(path)!r}: it "
            "is called on a slice of its params (inside li.Repeat, li.Ensemble, jax.vmap or "
            "jax.lax.scan), and LSUV rescales layers called with their own sub-dict. Apply "
            "li.lsuv to the unrolled model (li.unstack_layers), then stack the result back."
        )
    return seen[0]


def _variance(model: Any, kw: dict, path: Path, layer: Any) -> Any:
    """The jit-compiled ``(params, args) -> variance of the output of layer at path``."""

    @jax.jit
    def variance(params: Params, args: tuple) -> jax.Array:
        out = _output_of(model, params, args, kw, path, layer)
        return jnp.var(jnp.asarray(out, jnp.float32))

    return variance


def _scaled(flat: dict[Path, Any], path: Path, factor: Any) -> dict[Path, Any]:
    kernel = flat[path]
    return {**flat, path: (kernel * factor).astype(kernel.dtype)}


def lsuv(
    model: Any,
    params: Params,
    /,
    *batch: Any,
    target: float = 1.0,
    tol: float = 0.01,
    max_iters: int = 10,
    paths: str | Iterable[str] | None = None,
    **kw: Any,
) -> Params:
    """Layer-sequential unit-variance init: rescales each ``kernel`` for unit output variance.

    In the order the layers are called, each layer that owns a trainable
    ``kernel`` (``Linear``, ``Conv``, ``ConvTranspose``...) has it multiplied by
    ``sqrt(target / var)``, where ``var`` is the variance of the layer's output
    (over all its elements) on ``batch``, until ``|var / target - 1| <= tol``.
    Earlier layers are rescaled first, so each layer sees its final inputs.
    Every other leaf is kept as it is (the same objects).

    Args:
      model: the :class:`lazyinit.Layer`.
      params: its materialized params.
      *batch: what the model is called with after ``params``.
      **kw: keywords the model is called with (``train=False``...).
      target: the output variance to reach.
      tol: the relative tolerance on it.
      max_iters: rescalings per layer before giving up.
      paths: path patterns (the ``dtype=`` syntax: ``'head'``, ``'encoder/*'``)
        of the layers to rescale; default: every layer with a kernel.

    Raises:
      UninitializedParamError: ``params`` holds placeholders or ``ShapeDtypeStruct``s.
      InferShapeError: no batch.
      InvalidArgumentError: an abstract batch, or a pattern of ``paths`` matching no layer.
      RescaleLayerError: a layer's output is constant on the batch, or does
        not reach the target within ``max_iters`` rescalings.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> model = li.Sequential([li.Linear(8), li.nn.tanh, li.Linear(8)])
        >>> x = jax.random.normal(jax.random.key(1), (64, 4))
        >>> params = li.lsuv(model, li.dry_run(model, jax.random.key(0), x), x)
        >>> round(float(jnp.var(model(params, x))), 2)
        1.0
    """
    flat = _refuse_holes(params, "li.lsuv")
    if no_sample(batch, kw):
        raise needs_sample(
            model,
            why="li.lsuv rescales each layer for its output's variance on a batch of data",
            example="li.lsuv(model, params, x)",
        )
    if is_abstract((batch, kw)):
        raise InvalidArgumentError(
            "li.lsuv needs a batch of data (arrays, not jax.ShapeDtypeStruct): "
            "li.lsuv(model, params, x)."
        )
    t = trace(model, *batch, **kw)
    chosen = None if paths is None else set(select(t, paths, what="li.lsuv(paths=...)"))
    skeleton = _paths.subtrees(params)
    for path, layer in _kernel_layers(t):
        if chosen is not None and (*path, "kernel") not in chosen:
            continue
        variance = _variance(model, kw, path, layer)
        kernel = (*path, "kernel")
        where = f"{type(layer).__name__} at {_paths.join(path)!r}"
        for _ in range(max_iters + 1):
            var = float(variance(_paths.unflatten(flat, skeleton), batch))
            if not np.isfinite(var) or var <= 0:
                raise RescaleLayerError(
                    f"li.lsuv: the output of {where} has variance {var} on the batch, so no "
                    "rescaling of its kernel reaches the target. Use a batch of varied inputs "
                    "(not all equal), or leave this layer out with paths=."
                )
            if abs(var / target - 1) <= tol:
                break
            flat = _scaled(flat, kernel, np.sqrt(target / var))
        else:
            raise RescaleLayerError(
                f"li.lsuv: the output of {where} still has variance {var:.4g} after {max_iters} "
                f"rescalings (target {target}, tol {tol}): its bias or a normalization inside it "
                "dominates. Raise max_iters or tol, or zero its bias."
            )
    return _paths.unflatten(flat, skeleton)


def warmup_stats(model: Any, params: Params, /, batches: Iterable[Any], **kw: Any) -> Params:
    """Recomputes BatchNorm / InstanceNorm running statistics from a few batches.

    Each statistics layer's ``mean`` and ``var`` become the equal-weight
    average, over the batches, of the batch mean and unbiased variance it sees
    in a training-mode forward (PyTorch's ``update_bn``); a ``count`` buffer
    (``momentum=None``) becomes the number of batches. Trainable parameters and
    other buffers are kept as they are (the same objects).

    Args:
      model: the :class:`lazyinit.Layer`.
      params: its materialized params.
      batches: an iterable of batches; a batch is an array or a tuple of the
        model's positional inputs.
      **kw: keywords the model is called with (besides ``train=True``).

    Raises:
      UninitializedParamError: ``params`` holds placeholders or ``ShapeDtypeStruct``s.
      InferShapeError: no batch.
      InvalidArgumentError: an abstract batch, or a model without running statistics.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> model = li.Sequential([li.Linear(3), li.BatchNorm()])
        >>> x = jnp.arange(12.0).reshape(4, 3)
        >>> params = li.dry_run(model, jax.random.key(0), x)
        >>> new = li.warmup_stats(model, params, [x[:2], x[2:]])
        >>> new["0"] is params["0"]
        False
        >>> new["0"]["kernel"] is params["0"]["kernel"]
        True
    """
    flat = _refuse_holes(params, "li.warmup_stats")
    batches = [b if isinstance(b, tuple) else (b,) for b in batches]
    if not batches:
        raise needs_sample(
            model,
            why="li.warmup_stats averages the statistics of at least one batch of data",
            example="li.warmup_stats(model, params, [x1, x2, ...])",
        )
    if is_abstract(batches):
        raise InvalidArgumentError(
            "li.warmup_stats needs batches of data (arrays, not jax.ShapeDtypeStruct): it "
            "averages statistics of their values."
        )
    t = trace(model, *batches[0], **kw)
    layers = {
        p[:-1]: t.owners[p]
        for p in t.params
        if p[-1] == "mean" and isinstance(t.owners[p], BatchNorm | InstanceNorm)
    }
    if not layers:
        raise InvalidArgumentError(
            f"li.warmup_stats: {type(model).__name__} has no BatchNorm or InstanceNorm with "
            "running statistics (track_running_stats=True) to recompute."
        )
    bad = [_paths.join(p) for p, layer in layers.items() if layer.momentum == 0]
    if bad:
        raise InvalidArgumentError(
            f"li.warmup_stats: {', '.join(bad)} have momentum=0 and never take in a batch's "
            "statistics; give them a positive momentum (or None for a cumulative average)."
        )
    # With the running statistics at zero, a training step's update is momentum * the
    # batch statistic (momentum 1 for a cumulative average whose count is zero).
    zeroed = dict(flat)
    for path in layers:
        for name in ("mean", "var", "count"):
            if (*path, name) in flat:
                zeroed[(*path, name)] = jnp.zeros_like(flat[(*path, name)])
    skeleton = _paths.subtrees(params)
    call = {k: v for k, v in kw.items() if k != "train"}

    @jax.jit
    def updates(params: Params, args: tuple) -> Any:
        return apply(model, params, *args, train=True, mutable=True, **call)[1]

    sums: dict[Path, Any] = {}
    for args in batches:
        new = _paths.flatten(updates(_paths.unflatten(zeroed, skeleton), args), _paths.is_leaf)
        for path, layer in layers.items():
            m = 1.0 if layer.momentum is None else layer.momentum
            for name in ("mean", "var"):
                stat = new[(*path, name)] / m
                sums[(*path, name)] = sums.get((*path, name), 0.0) + stat
    out = dict(flat)
    for p, total in sums.items():
        out[p] = (total / len(batches)).astype(flat[p].dtype)
    for path in layers:
        if (*path, "count") in flat:
            out[(*path, "count")] = jnp.full_like(flat[(*path, "count")], len(batches))
    return _paths.unflatten(out, skeleton)
