"""flax.linen modules as lazyinit layers, and params converted between lazyinit's layers and flax's.

:class:`FlaxModule` wraps any ``flax.linen.Module``: the dry run asks flax
for the shapes of the module's variables (``jax.eval_shape`` of its ``init``
on the abstract sample) and declares each leaf as a ``li.Param`` at
``<layer path>/<collection>/<flax path>``, whose initializer is flax's own
``init`` of that leaf. So the wrapped module takes part in everything a
lazyinit layer does: abstract and eager dry runs (keys from paths), loading,
``dtype=``/``device=`` choices, ``jax.jit`` and ``jax.grad``. Collections
other than ``params`` (``batch_stats``) are buffers (``trainable=False``),
updated under ``li.apply(..., mutable=True)``.

:func:`from_flax_variables` and :func:`to_flax_variables` convert between
flax variables (``{'params': ..., 'batch_stats': ...}``) and the params of a
lazyinit model whose layer names mirror the flax module's submodule names
(``rename=`` maps the rest, e.g. compact names like ``Dense_0``):

* ``Linear`` <-> ``Dense``; ``Conv`` <-> ``Conv`` (HWIO kernels in both);
  ``ConvTranspose`` <-> ``ConvTranspose`` (flax's kernel, not flipped, in both);
  ``LayerNorm``, ``RMSNorm``, ``GroupNorm``, ``InstanceNorm`` <-> the same;
  ``Embedding`` <-> ``Embed``; ``MultiHeadAttention`` <->
  ``MultiHeadDotProductAttention``: each parameter in ``params`` under the
  same path (``query/kernel`` (E, H, D) in both).
* ``BatchNorm`` <-> ``BatchNorm``: ``scale``/``bias`` in ``params``,
  ``mean``/``var`` in ``batch_stats``.
* ``FlaxModule`` <-> the module it wraps: its variables as they are.
* any other layer: trainable parameters in ``params``, buffers in
  ``batch_stats``, under their own names (:func:`register` to change it).

(The layers' options are not converted: build each side with the same
``eps``, ``momentum`` and so on; flax's ``momentum`` is ``1 -`` lazyinit's.)

``flax.nnx`` modules are wrapped by :class:`NnxModule` (in
``lazyinit.interop._nnx``), re-exported here with :func:`nnx_params` and
:func:`update_nnx`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import flax
import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.core import meta
from jax._src.interpreters import partial_eval as pe  # dce_jaxpr: no public spelling

from .. import _paths
from .. import nn as layers
from .._buffers import collecting, update_buffers
from .._layer import Layer
from .._match import Report
from .._recorder import is_tracing
from .._spec import Param
from .._trace_cache import is_array, register_cache
from .._typing import Params, Path
from ..errors import ConfigureLayerError, InferShapeError, UpdateBuffersError
from . import _convert
from ._nnx import declare_all
from ._registry import Framework, Registry, Shape
from ._rules import Leaf, Rule, same

__all__ = [
    "FlaxModule",
    "from_flax_variables",
    "to_flax_variables",
    "register",
    "NnxModule",
    "nnx_params",
    "update_nnx",
]


# ---------------------------------------------------------------------------
# Wrapping a flax module.


def _abstract(tree: Any) -> Any:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if is_array(x) else x, tree
    )


def _concrete(tree: Any) -> Any:
    return jax.tree.map(
        lambda x: jnp.zeros(x.shape, x.dtype) if isinstance(x, jax.ShapeDtypeStruct) else x, tree
    )


def _walk_variables(tree: Mapping, prefix: Path = ()) -> list[tuple[Path, Any]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.extend(_walk_variables(value, (*prefix, key)))
        else:
            out.append(((*prefix, key), value))
    return out


@dataclasses.dataclass(frozen=True)
class _FlaxInit:
    """``module.init`` on zeros shaped like the sample: every variable, or one leaf of them."""

    draws_together: ClassVar[bool] = True  # a dry run compiles a module's leaves as one program

    module: Any
    method: str | None
    args: tuple
    kwargs: tuple[tuple[str, Any], ...]
    rngs: tuple[str, ...]
    path: Path = ()

    def variables(self, key: jax.Array) -> Any:
        rngs: Any = key
        if self.rngs:
            keys = jax.random.split(key, len(self.rngs) + 1)
            rngs = {"params": keys[0], **dict(zip(self.rngs, keys[1:]))}
        args, kwargs = _concrete((self.args, dict(self.kwargs)))
        return self.module.init(rngs, *args, method=self.method, **kwargs)

    def __call__(self, key: jax.Array, shape: Any, dtype: Any = None) -> jax.Array:
        leaf = _leaf_init(dataclasses.replace(self, path=()), key, self.path)(key)
        return leaf if dtype is None else leaf.astype(dtype)

    @property
    def __name__(self) -> str:
        return repr(self)

    def __repr__(self) -> str:
        return f"flax_init({type(self.module).__name__}, {'/'.join(self.path)!r})"


_INITS: dict[Any, Any] = register_cache({})


def _leaf_init(init: _FlaxInit, key: jax.Array, path: Path) -> Callable[[jax.Array], jax.Array]:
    """The part of ``init.variables`` that computes the leaf at ``path``, as a function of the key.

    flax's ``init`` is traced once per module and key type, not once per leaf;
    each leaf keeps only the operations its value depends on (dead code
    eliminated), so its compiled kernel is as small as the leaf's own draw.
    The values are exactly those of ``module.init(key)[path]``.
    """
    cache_key: Any = (init, jax.typeof(key))
    try:
        traced = _INITS.get(cache_key)
    except TypeError:  # an unhashable module or argument: trace it each time
        cache_key, traced = None, None
    if traced is None:
        closed, shapes = jax.make_jaxpr(init.variables, return_shape=True)(key)
        paths = [p for p, _ in _walk_variables(jax.tree.map(meta.unbox, shapes, is_leaf=_boxed))]
        traced = (closed, paths)
        if cache_key is not None:
            _INITS[cache_key] = traced
    closed, paths = traced
    used = [p == path for p in paths]
    jaxpr, needs_key = pe.dce_jaxpr(closed.jaxpr, used)  # zeros need no key: no inputs
    return lambda k: jax.core.eval_jaxpr(jaxpr, closed.consts, *([k] if needs_key[0] else []))[0]


def _boxed(x: Any) -> bool:
    return isinstance(x, meta.AxisMetadata)


def _declare(layer: FlaxModule, node: Any, args: tuple, kwargs: dict, rngs: Any) -> dict:
    """Declares every variable of ``layer.module`` under ``node``; returns the stand-in values."""
    init = _FlaxInit(
        layer.module,
        layer.method,
        _abstract(args),
        tuple(sorted(_abstract(kwargs).items())),
        tuple(sorted(rngs)) if isinstance(rngs, Mapping) else (),
    )
    shapes = jax.eval_shape(init.variables, jax.random.key(0))
    params: dict[Path, Param] = {}
    for path, boxed in _walk_variables(shapes):
        leaf = meta.unbox(boxed)
        axes = getattr(boxed, "names", None)
        params[path] = Param(
            tuple(leaf.shape),
            dataclasses.replace(init, path=path),
            np.dtype(leaf.dtype),
            tuple(axes) if axes is not None else None,
            trainable=path[0] == "params",
        )
    return declare_all(node, params)


def _report_updates(params: Mapping, new: Mapping) -> None:
    """Hands the buffers a mutable flax call returned to ``li.apply(..., mutable=True)``."""
    parents: dict[Path, dict[str, Any]] = {}
    for path, value in _walk_variables(new):
        parents.setdefault(path[:-1], {})[path[-1]] = value
    for at, values in parents.items():
        parent = params
        for name in at:
            parent = parent[name]
        update_buffers(parent, **values)


class FlaxModule(Layer):
    """Any ``flax.linen.Module`` as a lazyinit layer; the dry run infers its variables.

    The params under this layer's path are the module's flax variables,
    ``{'params': {...}, 'batch_stats': {...}}``, so a flax checkpoint loads
    as it is. Call-time keyword arguments reach the module (``rngs=`` too);
    ``method`` names another method of the module to call.

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn, lazyinit as li
        >>> from lazyinit.interop.flax import FlaxModule
        >>> model = li.Sequential([FlaxModule(nn.Dense(4)), li.nn.relu, li.Linear(1)])
        >>> params = li.dry_run(model, jax.random.key(0), jnp.ones((2, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'0': {'params': {'bias': (4,), 'kernel': (3, 4)}}, '2': {'bias': (1,), 'kernel': (4, 1)}}
        >>> model(params, jnp.ones((2, 3))).shape
        (2, 1)
    """

    module: Any
    method: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.module, flax.linen.Module):
            hint = (
                " For a flax.nnx module use lazyinit.interop.flax.NnxModule."
                if isinstance(self.module, nnx.Module)
                else ""
            )
            raise ConfigureLayerError(
                f"FlaxModule wraps a flax.linen.Module, got {type(self.module).__name__}.{hint}"
            )

    def specs(self, *args: Any, **kwargs: Any) -> dict[str, Param]:
        if not args and not kwargs:  # li.lazy_state asks before any input exists
            raise InferShapeError(
                f"FlaxModule({type(self.module).__name__}) names its variables only once it "
                "sees an input."
            )
        return {}  # each variable is declared at its own path, by _declare

    def __call__(self, params: Any, *args: Any, rngs: Any = None, **kwargs: Any) -> Any:
        call = dict(rngs=rngs, method=self.method, **kwargs)
        if is_tracing(params):  # the dry run
            variables = _declare(self, params, args, kwargs, rngs)
            return self.module.apply(variables, *args, mutable=True, **call)[0]
        buffers = [c for c in params if c != "params"]
        if buffers and collecting():
            out, new = self.module.apply(params, *args, mutable=buffers, **call)
            _report_updates(params, new)
            return out
        try:
            return self.module.apply(params, *args, **call)
        except flax.errors.ModifyScopeVariableError as e:
            raise UpdateBuffersError(
                f"FlaxModule({type(self.module).__name__}) updates its {', '.join(buffers)} in "
                "this call. Call li.apply(model, params, x, ..., mutable=True), which returns "
                "(out, updates), or call it in evaluation mode."
            ) from e


# ---------------------------------------------------------------------------
# Converting params between lazyinit layers and their flax equivalents.

_REGISTRY = Registry()


def register(layer_type: type) -> Callable:
    """Registers ``converter(layer, leaves) -> list[Rule]`` for ``layer_type`` (and subclasses).

    A rule's flax paths start with the collection: ``('params', 'kernel')``.
    """

    def decorate(converter: Callable) -> Callable:
        _REGISTRY.add(layer_type, converter)
        return converter

    return decorate


def _params(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    """Each parameter in flax's ``params`` (buffers in ``batch_stats``) under the same path."""
    return [
        Rule((p,), (("params" if leaf.trainable else "batch_stats", *p),), _same, _same)
        for p, leaf in leaves.items()
    ]


def _batch_norm(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    """``_params``, but the ``count`` of training batches, which flax's BatchNorm does not keep:
    it starts at 0 on import and is not exported."""
    rules = _params(layer, {p: leaf for p, leaf in leaves.items() if p != ("count",)})
    if ("count",) in leaves:
        zero = jnp.zeros((), leaves[("count",)].dtype)
        rules.append(Rule((("count",),), (), lambda: (zero,), lambda c: ()))
    return rules


def _same(a: Any) -> tuple[Any]:
    return (a,)


def _wrapped(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    return [Rule((p,), (p,), _same, _same) for p in leaves]


_REGISTRY.add(FlaxModule, _wrapped)


def _register_builtins() -> None:
    """lazyinit's layers that name their params as flax does: one rule per leaf."""
    for cls in (
        layers.Linear, layers.Conv, layers.ConvTranspose, layers.InstanceNorm,
        layers.LayerNorm, layers.RMSNorm, layers.GroupNorm, layers.Embedding,
        layers.MultiHeadAttention,
    ):  # fmt: skip
        _REGISTRY.add(cls, _params, replace=False)
    _REGISTRY.add(layers.BatchNorm, _batch_norm, replace=False)


def _dim(d: int | None) -> int:
    return -1 if d is None else d


def _hint(found: Shape | None, expected: Shape | None, planned: Any = None) -> str:
    if found is None or expected is None or None in expected:
        return ""
    if found != expected and sorted(found, key=_dim) == sorted(expected, key=_dim):
        return " (the same sizes in another order: is it in another library's layout?)"
    return ""


FRAMEWORK = Framework(
    name="flax",
    noun="flax variables",
    entry="flax variable",
    registry=_REGISTRY,
    default=lambda name, leaf: same(name, ("params" if leaf.trainable else "batch_stats", name)),
    locate=lambda module, rel: (rel[0], *module, *rel[1:]),
    show="/".join,
    split=lambda module: tuple(module.split("/")) if module else (),
    hint=_hint,
    module_of=lambda path: path[1:-1],  # ('params', *module, name)
    importer="from_flax_variables",
    exporter="to_flax_variables",
)


def _natural(item: tuple[Path, Any]) -> list:
    """Orders ``Dense_2`` before ``Dense_10``: compact names number submodules in call order."""
    return [[int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)] for n in item[0]]


def from_flax_variables(
    model: Any,
    variables: Mapping,
    /,
    *sample: Any,
    strict: bool = True,
    rename: Mapping[str, str] | Callable[[str], str] | None = None,
    **kwargs: Any,
) -> tuple[Params, Report]:
    """flax variables (``module.init(...)``'s result) as lazyinit params for ``model``: ``(params, report)``.

    The lazyinit model's layer paths name the flax submodules (``fc1`` is
    ``params/fc1``); ``rename`` maps the rest (``{'fc1': 'Dense_0'}``). The
    sample and ``strict`` work as in ``lazyinit.interop.torch.from_torch_state_dict``.

    Raises:
      StateMismatchError: listing every missing, unexpected and mis-shaped
        variable; nothing is converted.

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn, lazyinit as li
        >>> from lazyinit.interop.flax import from_flax_variables
        >>> variables = nn.Dense(4).init(jax.random.key(0), jnp.ones((2, 3)))
        >>> params, report = from_flax_variables(li.Linear(4), variables, jnp.ones((2, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'bias': (4,), 'kernel': (3, 4)}
    """
    _register_builtins()
    flat = {p: meta.unbox(v) for p, v in sorted(_walk_variables(variables), key=_natural)}
    problems = [
        f"{_paths.join(p)!r} is a {type(v).__name__}, not an array"
        for p, v in flat.items()
        if not hasattr(v, "shape")
    ]
    flat = {p: v for p, v in flat.items() if hasattr(v, "shape")}
    params, report = _convert.import_state(
        FRAMEWORK, model, flat, sample, kwargs, strict=strict, rename=rename, problems=problems
    )
    return params, report


def to_flax_variables(
    model: Any,
    params: Params,
    /,
    *sample: Any,
    rename: Mapping[str, str] | Callable[[str], str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """lazyinit params as flax variables, ``{'params': ..., 'batch_stats': ...}``, for ``module.apply``.

    The inverse of :func:`from_flax_variables`; the sample is optional, as in
    ``lazyinit.interop.torch.to_torch_state_dict``.

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn, lazyinit as li
        >>> from lazyinit.interop.flax import to_flax_variables
        >>> params = li.dry_run(li.Linear(4), jax.random.key(0), jnp.ones((2, 3)))
        >>> variables = to_flax_variables(li.Linear(4), params)
        >>> nn.Dense(4).apply(variables, jnp.ones((2, 3))).shape
        (2, 4)
    """
    _register_builtins()
    flat = _convert.export_state(FRAMEWORK, model, params, sample, kwargs, rename=rename)
    return _paths.unflatten(flat)


from ._nnx import NnxModule as NnxModule  # noqa: E402  (flax.nnx: its own file)
from ._nnx import nnx_params as nnx_params  # noqa: E402
from ._nnx import update_nnx as update_nnx  # noqa: E402
