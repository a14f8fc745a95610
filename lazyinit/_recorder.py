"""What a dry run's trace records, and ``params`` as a layer sees it during one.

:class:`Trace` and :class:`Call` are the results; ``Recorder`` collects, for
one layer call, what the layers below it declare; ``ParamsStandIn`` stands in for
``params`` and records the path of every key a layer indexes it with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _paths
from ._materialize import Stacked
from ._spec import Param
from ._typing import Path, Specs
from .errors import DuplicateParamError, InferShapeError

__all__ = [
    "Call",
    "Trace",
    "Recorder",
    "ParamsStandIn",
    "is_tracing",
    "cast_reads",
    "record_stacked",
]

DEFAULT_DTYPE = np.dtype("float32")


@dataclasses.dataclass(frozen=True)
class Call:
    """One layer call seen by a trace: where, which layer, and the shapes in and out."""

    path: Path
    layer: Any
    inputs: Any
    outputs: Any


@dataclasses.dataclass(frozen=True)
class Trace:
    """What a dry run learns about a model from a sample input, before materializing.

    Attributes:
      params: ``{path: Param}`` for every parameter, with concrete shapes.
      owners: ``{path: layer}``, the layer that declared each parameter.
      layers: the path of every layer that was called, in call order (empty ones included).
      calls: every layer call in order, with input and output shapes.
      outputs: the model's output, as ``jax.ShapeDtypeStruct``s.
    """

    params: dict[Path, Param]
    owners: dict[Path, Any]
    layers: tuple[Path, ...]
    calls: tuple[Call, ...]
    outputs: Any

    @property
    def specs(self) -> Specs:
        """The specs as a nested dict shaped like the params."""
        return _paths.unflatten(self.params, self.layers)


# ---------------------------------------------------------------------------
# The stand-in for ``params`` during a trace.


class Recorder:
    """Collects, relative to ``base``, what the layers called below it declare."""

    def __init__(self, base: Path):
        self.base = base
        self.params: dict[Path, Param] = {}
        self.owners: dict[Path, Any] = {}
        self.values: dict[Path, jax.Array] = {}
        self.layers: dict[Path, None] = {}
        self.calls: list[Call] = []

    def declare(self, rel: Path, specs: Mapping[str, Param], layer: Any) -> None:
        for name, param in specs.items():
            self._add((*rel, name), param, layer)
            dtype = param.dtype or DEFAULT_DTYPE
            self.values[(*rel, name)] = jnp.zeros(param.shape, dtype)

    def graft(self, rel: Path, frag: Trace) -> None:
        for path, param in frag.params.items():
            self._add((*rel, *path), param, frag.owners[path])
        self.layers.update(dict.fromkeys((*rel, *p) for p in frag.layers))
        self.calls.extend(
            dataclasses.replace(c, path=(*self.base, *rel, *c.path)) for c in frag.calls
        )

    def _add(self, rel: Path, param: Param, layer: Any) -> None:
        if rel in self.params:
            other = self.owners[rel]
            if other != layer or self.params[rel] != param:
                raise DuplicateParamError(
                    f"Parameter {_paths.join((*self.base, *rel))!r} is declared twice: by "
                    f"{_short(other)} ({self.params[rel].shape}) and by {_short(layer)} "
                    f"({param.shape}). Give each layer its own key in params; the same "
                    "layer may be called twice with one sub-dict to share weights."
                )
            return
        self.params[rel] = param
        self.owners[rel] = layer

    def freeze(self, outputs: Any) -> Trace:
        return Trace(
            dict(self.params),
            dict(self.owners),
            tuple(self.layers),
            tuple(self.calls),
            outputs,
        )


class ParamsStandIn(Mapping):
    """``params`` as a layer sees it during a dry run: indexing records a path."""

    __slots__ = ("_rec", "_rel", "_cast")

    def __init__(self, recorder: Recorder, rel: Path, cast: Any = None):
        self._rec = recorder
        self._rel = rel
        self._cast = cast  # a layer's compute_dtype: floating values read are cast to it

    def cast(self, dtype: Any) -> ParamsStandIn:
        """The same node, reading floating-point values as ``dtype`` (``compute_dtype``)."""
        return ParamsStandIn(self._rec, self._rel, dtype)

    @property
    def path(self) -> Path:
        return (*self._rec.base, *self._rel)

    def __getitem__(self, name: str) -> Any:
        if not isinstance(name, str) or not name or "/" in name:
            raise InferShapeError(
                f"params[{name!r}] under {_paths.join(self.path)!r}: parameter and layer "
                "names must be non-empty strings without '/'."
            )
        path = (*self._rel, name)
        value = self._rec.values.get(path)
        if value is None and path in self._rec.params:  # a child's param, read by its parent
            # Not cached: made inside a transform (jax.checkpoint), it must not leak out of it.
            param = self._rec.params[path]
            value = jnp.zeros(param.shape, param.dtype or DEFAULT_DTYPE)
        if value is None:
            return ParamsStandIn(self._rec, path, self._cast)
        if self._cast is not None and jnp.issubdtype(value.dtype, jnp.floating):
            return value.astype(self._cast)
        return value

    def __contains__(self, name: object) -> bool:
        # A layer that declared its own params has exactly those (and the children it
        # calls); a composite's children are not known until called, so they are "in".
        path = (*self._rel, name)
        if path in self._rec.params or any(p[: len(path)] == path for p in self._rec.params):
            return True
        n = len(self._rel)
        declared_here = any(len(p) == n + 1 and p[:n] == self._rel for p in self._rec.params)
        return not declared_here

    def __iter__(self) -> Iterator[str]:
        n = len(self._rel)
        return iter(sorted({p[n] for p in self._rec.params if p[:n] == self._rel and len(p) > n}))

    def __len__(self) -> int:
        return len(list(iter(self)))

    def __jax_array__(self) -> Any:
        raise InferShapeError(
            f"params at {_paths.join(self.path)!r} was used as an array, but no layer "
            "declared a parameter there. Declare it in the layer's specs(), or pass "
            "this sub-dict to a child layer."
        )

    __array__ = __jax_array__


def is_tracing(params: Any) -> bool:
    """Whether ``params`` is the dry run's stand-in: the layer is being traced, not computed.

    A layer of your own rarely needs this (its ``specs`` and ``__call__`` serve both); a
    combinator that computes differently under a dry run (``li.Repeat`` declares ``n``
    copies of one traced block) asks it.
    """
    return isinstance(params, ParamsStandIn)


def cast_reads(params: Any, dtype: Any) -> Any:
    """``params`` whose floating-point values are read as ``dtype`` (a layer's
    ``compute_dtype``), during a dry run; see :func:`lazyinit.nn.compute_in`."""
    assert isinstance(params, ParamsStandIn)
    return params.cast(dtype)


def record_stacked(
    node: ParamsStandIn, layer: Any, n: int, axis: str, args: tuple, kwargs: dict
) -> Any:
    """Traces ``layer`` once at ``node``'s path and declares its params stacked ``n`` times.

    Every parameter gets a leading axis of length ``n`` (logical axis ``axis``)
    and a :class:`~lazyinit._materialize.Stacked` initializer, so slice ``i``
    is drawn at the unrolled path ``<node>/<i>/...``. Returns the layer's output
    for one slice.
    """
    inner = Recorder(node.path)
    out = layer(ParamsStandIn(inner, ()), *args, **kwargs)
    for rel, param in inner.params.items():
        stacked = dataclasses.replace(
            param,
            shape=(n, *param.shape),
            init=Stacked(param.init, n, len(rel)),
            axes=(axis, *(param.axes or (None,) * len(param.shape))),
        )
        node._rec._add((*node._rel, *rel), stacked, inner.owners[rel])
    node._rec.layers.update(dict.fromkeys((*node._rel, *p) for p in inner.layers))
    node._rec.calls.extend(inner.calls)
    return out


# ``params`` passes through JAX transforms (jax.checkpoint, lax.cond, custom_vjp, jit) as a
# pytree: the recorder travels in the tree's static part, so the layers called inside the
# transform record into it. Its one leaf, a ``(1,)`` token, shows whether the transform
# sliced a leading axis off ``params`` (vmap, scan): that axis is one no spec declares.
_TOKEN = np.zeros((1,), np.float32)
_TOKEN_KEY = jax.tree_util.GetAttrKey("lazyinit_params_stand_in")


def _flatten(node: ParamsStandIn) -> tuple[tuple[tuple[Any, Any], ...], tuple[Recorder, Path, Any]]:
    return ((_TOKEN_KEY, _TOKEN),), (node._rec, node._rel, node._cast)


def _unflatten(aux: tuple[Recorder, Path, Any], leaves: Any) -> ParamsStandIn:
    recorder, rel, cast = aux
    (token,) = leaves
    if getattr(token, "shape", None) == ():
        raise InferShapeError(
            f"params at {_paths.join((*recorder.base, *rel))!r} was mapped over a leading axis "
            "(jax.vmap or jax.lax.scan over params) during a dry run, but no layer declares "
            "that axis: specs describe one copy. Use li.Ensemble(layer, n) for n copies under "
            "vmap, or li.Repeat(block, n) for n blocks applied in sequence under scan; both "
            "declare the stacked axis and draw each slice as if unrolled."
        )
    return ParamsStandIn(recorder, rel, cast)


jax.tree_util.register_pytree_with_keys(ParamsStandIn, _flatten, _unflatten)


def _short(layer: Any) -> str:
    return type(layer).__name__ if not hasattr(layer, "__name__") else layer.__name__
