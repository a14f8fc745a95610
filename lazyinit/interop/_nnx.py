"""flax.nnx modules as lazyinit layers, and lazyinit params in and out of an nnx model's state.

:class:`NnxModule` wraps an ``nnx.Module``, or a function building one from
``nnx.Rngs`` (and, to infer sizes, from the sample), as a lazyinit layer: the
module's ``nnx.Param`` variables become lazyinit params under the wrapper's
path (``0/kernel``), trained with ``jax.grad``, saved with ``li.save`` and
loaded like any other. With a function, the leaf at path ``P`` is drawn as
the variable ``P`` of ``build(nnx.Rngs(li.param_key(root, P)))``: a function
of the root key and the path, as for lazyinit's own layers. A built module
keeps the values it was built with.

:func:`nnx_params` reads an nnx model's ``nnx.Param`` values as a lazyinit
params tree; :func:`update_nnx` writes lazyinit params into an nnx model's
state (the model's attribute names are the params' keys: ``nnx.Linear`` and
``li.Linear`` both hold ``kernel (in, out)`` and ``bias``).

Only ``nnx.Param`` state is supported: a module holding other variables
(``nnx.BatchStat``, RNG streams) is refused with the paths that hold them.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import numpy as np
from flax import nnx
from jax._src.interpreters import partial_eval as pe  # dce_jaxpr: no public spelling

from .. import _match, _paths
from .._layer import Layer
from .._recorder import is_tracing
from .._spec import Param
from .._trace_cache import register_cache
from .._typing import Params, Path
from ..errors import ConfigureLayerError, InferShapeError

__all__ = ["NnxModule", "nnx_params", "update_nnx"]


def _pure(state: Any) -> dict[Path, Any]:
    """``{('layers', '0', 'kernel'): array}`` from an nnx state, keys as strings."""
    flat: dict[Path, Any] = {}

    def walk(node: Any, prefix: Path) -> None:
        for key, value in node.items():
            path = (*prefix, str(key))
            if isinstance(value, Mapping):
                walk(value, path)
            else:
                flat[path] = value

    walk(nnx.to_pure_dict(state), ())
    return flat


def _split(module: Any, what: str) -> tuple[Any, Any]:
    """``(graphdef, params state)``; refuses a module with state other than ``nnx.Param``."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)  # type: ignore[misc]
    others = [
        f"{_paths.join(tuple(map(str, p)))!r} ({type(v).__name__})"
        for p, v in nnx.to_flat_state(rest)
    ]
    if others:
        raise ConfigureLayerError(
            f"{what}: {type(module).__name__} holds state other than nnx.Param at "
            f"{', '.join(others)}; NnxModule supports parameters only. Use lazyinit's own layer "
            "(li.BatchNorm, li.Dropout) for those parts, or a flax.linen module with FlaxModule."
        )
    return graphdef, params


def _abstract(args: tuple) -> tuple:
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, "shape") else x, args
    )


@dataclasses.dataclass(frozen=True)
class _Build:
    """The module of an ``NnxModule`` for one sample signature: built, or built from a key."""

    module: Any
    args: tuple

    def takes_sample(self) -> bool:
        params = inspect.signature(self.module).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return len(positional) > 1 or any(p.kind is p.VAR_POSITIONAL for p in params)

    def __call__(self, key: jax.Array) -> Any:
        if isinstance(self.module, nnx.Module):
            return self.module
        rngs = nnx.Rngs(key)
        return self.module(rngs, *self.args) if self.takes_sample() else self.module(rngs)

    def structure(self) -> tuple[Any, Any]:
        """``(graphdef, abstract params state)``, without drawing anything."""
        if isinstance(self.module, nnx.Module):
            return _split(self.module, "NnxModule")
        abstract = nnx.eval_shape(lambda: self(jax.random.key(0)))
        return _split(abstract, "NnxModule")


_TRACES: dict[Any, Any] = register_cache({})


@dataclasses.dataclass(frozen=True)
class _NnxInit:
    """The initializer of one variable of an ``NnxModule``: the module built from the key."""

    draws_together: ClassVar[bool] = True  # a dry run compiles a module's leaves as one program

    build: _Build
    path: Path

    def __call__(self, key: jax.Array, shape: Any, dtype: Any = None) -> jax.Array:
        if isinstance(self.build.module, nnx.Module):  # built: keeps its own values
            leaf = _pure(_split(self.build.module, "NnxModule")[1])[self.path]
            return leaf if dtype is None else leaf.astype(dtype)
        cache_key = (self.build, jax.typeof(key))
        traced = _TRACES.get(cache_key)
        if traced is None:  # build once per module and signature; each leaf keeps what it needs
            closed, shapes = jax.make_jaxpr(self._all, return_shape=True)(key)
            traced = _TRACES[cache_key] = (closed, list(shapes))
        closed, paths = traced
        jaxpr, needs_key = pe.dce_jaxpr(closed.jaxpr, [p == self.path for p in paths])
        leaf = jax.core.eval_jaxpr(jaxpr, closed.consts, *([key] if needs_key[0] else []))[0]
        return leaf if dtype is None else leaf.astype(dtype)

    def _all(self, key: jax.Array) -> dict[Path, Any]:
        return _pure(_split(self.build(key), "NnxModule")[1])

    @property
    def __name__(self) -> str:
        return repr(self)

    def __repr__(self) -> str:
        return f"nnx_init({getattr(self.build.module, '__name__', type(self.build.module).__name__)}, {'/'.join(self.path)!r})"


class DeclaredVariables(Layer):
    """The variables of one wrapped (flax linen or nnx) submodule, declared where the dry run
    indexes them: how a foreign module's variables become lazyinit params at their paths.

    The wrapper's inner machinery, not a layer a user wrote: ``li.summary`` and
    ``li.describe`` show its variables on the wrapper (``summary_internal``)."""

    summary_internal: ClassVar[bool] = True

    variables: tuple[tuple[str, Param], ...]

    def specs(self) -> dict[str, Param]:
        return dict(self.variables)

    def __call__(self, params: Any) -> dict[str, Any]:
        return {name: params[name] for name, _ in self.variables}


def declare_all(node: Any, params: dict[Path, Param]) -> dict:
    """Declares each param at its path under ``node`` (one :class:`DeclaredVariables` per parent
    path); returns the stand-in values, nested."""
    groups: dict[Path, list[tuple[str, Param]]] = {}
    for path, param in params.items():
        groups.setdefault(path[:-1], []).append((path[-1], param))
    values: dict[str, Any] = {}
    for at, specs in groups.items():
        parent, tree = node, values
        for name in at:
            parent, tree = parent[name], tree.setdefault(name, {})
        tree.update(DeclaredVariables(tuple(specs))(parent))
    return values


def _declare(build: _Build, node: Any, state: Any) -> dict:
    return declare_all(
        node,
        {
            path: Param(tuple(leaf.shape), _NnxInit(build, path), np.dtype(leaf.dtype))
            for path, leaf in _pure(state).items()
        },
    )


def _merge(graphdef: Any, state: Any, params: Mapping) -> Any:
    """The nnx module of ``graphdef`` with ``params`` (lazyinit's string keys) as its state."""
    return nnx.merge(graphdef, _fill(state, params))


def _fill(state: Any, params: Mapping) -> Any:
    """``state`` with its values replaced by ``params`` (lazyinit's string keys)."""
    flat = _paths.flatten(params, _paths.is_leaf, what="NnxModule params")
    pure = nnx.to_pure_dict(state)

    def fill(node: Any, prefix: Path) -> Any:
        return {
            k: fill(v, (*prefix, str(k))) if isinstance(v, Mapping) else flat[(*prefix, str(k))]
            for k, v in node.items()
        }

    nnx.replace_by_pure_dict(state, fill(pure, ()))
    return state


class NnxModule(Layer):
    """A ``flax.nnx`` module as a lazyinit layer; its ``nnx.Param`` variables are lazyinit params.

    ``module`` is an ``nnx.Module`` (its values are kept), or a function
    ``build(rngs)``, or ``build(rngs, *sample)`` to infer sizes from the
    sample (``lambda rngs, x: nnx.Linear(x.shape[-1], 4, rngs=rngs)``), whose
    variables the dry run draws with keys from their paths.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> from flax import nnx
        >>> from lazyinit.interop.flax import NnxModule
        >>> lazy = NnxModule(lambda rngs, x: nnx.Linear(x.shape[-1], 4, rngs=rngs))
        >>> model = li.Sequential([lazy, li.nn.relu, li.Linear(1)])
        >>> params = li.dry_run(model, jax.random.key(0), jnp.ones((2, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'0': {'bias': (4,), 'kernel': (3, 4)}, '2': {'bias': (1,), 'kernel': (4, 1)}}
        >>> model(params, jnp.ones((2, 3))).shape
        (2, 1)
    """

    module: Any

    def __post_init__(self) -> None:
        if not (isinstance(self.module, nnx.Module) or callable(self.module)):
            raise ConfigureLayerError(
                f"NnxModule takes an nnx.Module or a function building one from nnx.Rngs, got "
                f"{type(self.module).__name__}."
            )

    def specs(self, *args: Any, **kwargs: Any) -> dict[str, Param]:
        if not args and not kwargs:  # li.lazy_state asks before any input exists
            raise InferShapeError(
                "NnxModule names its variables only once it sees an input: pass a sample."
            )
        return {}  # each variable is declared at its own path, by _declare

    def __call__(self, params: Any, *args: Any, **kwargs: Any) -> Any:
        build = _Build(self.module, _abstract(args))
        graphdef, state = build.structure()
        if is_tracing(params):  # the dry run
            params = _declare(build, params, state)
        return _merge(graphdef, state, params)(*args, **kwargs)


# ---------------------------------------------------------------------------
# An nnx model's state <-> lazyinit params.


def nnx_params(module: Any) -> Params:
    """The ``nnx.Param`` values of an nnx model as a lazyinit params tree (string keys).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from lazyinit.interop.flax import nnx_params
        >>> jax.tree.map(jnp.shape, nnx_params(nnx.Linear(3, 4, rngs=nnx.Rngs(0))))
        {'bias': (4,), 'kernel': (3, 4)}
    """
    return _paths.unflatten(_pure(_split(module, "nnx_params")[1]))


def update_nnx(module: Any, params: Params) -> None:
    """Writes lazyinit ``params`` into the ``nnx.Param`` variables of ``module``, in place.

    Every path and shape is checked first; nothing is written unless all fit.

    Raises:
      StateMismatchError: listing every missing, unexpected and mis-shaped path.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> from flax import nnx
        >>> from lazyinit.interop.flax import update_nnx
        >>> params = li.dry_run(li.Linear(4), jax.random.key(0), jnp.ones((2, 3)))
        >>> linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
        >>> update_nnx(linear, params)
        >>> bool((linear(jnp.ones((2, 3))) == li.Linear(4)(params, jnp.ones((2, 3)))).all())
        True
    """
    graphdef, state = _split(module, "update_nnx")
    want = _pure(state)
    got = _paths.flatten(params, _paths.is_value, what="params")
    # The load rules (lazyinit._match): an nnx variable takes a value of its shape, any dtype.
    m = _match.match(
        {p: _match.Target(tuple(v.shape)) for p, v in want.items()},
        {p: jax.ShapeDtypeStruct(np.shape(v), v.dtype) for p, v in got.items()},
        abstract=True,
    )
    _match.refuse(
        f"Cannot write params into {type(module).__name__}",
        _match.judge(m, missing=True, unexpected=True),
        "Pass the params of the lazyinit model that mirrors this nnx module.",
    )
    nnx.update(module, _fill(state, _paths.unflatten(got)))
