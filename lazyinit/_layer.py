"""``Layer``: immutable configuration whose call is a pure function of ``(params, inputs)``."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any, dataclass_transform

import jax
import jax.numpy as jnp
import numpy as np

from . import _match, _paths
from ._recorder import is_tracing
from ._spec import Param, Uninitialized
from ._trace_cache import signature
from ._tracer import trace, trace_call
from ._typing import Path
from .errors import LazyInitError, UninitializedParamError

__all__ = ["Layer"]

_apply = threading.local()
_WATCH: contextvars.ContextVar[Callable[[Any, Any, Any], None] | None] = contextvars.ContextVar(
    "lazyinit_watch", default=None
)


@contextlib.contextmanager
def watch_calls(fn: Callable[[Any, Any, Any], None]) -> Iterator[None]:
    """Within the block, ``fn(layer, params, output)`` sees every real (not dry-run) layer call:
    how data-dependent init (``li.lsuv``) reads a layer's output without changing the model."""
    token = _WATCH.set(fn)
    try:
        yield
    finally:
        _WATCH.reset(token)


def _check_params(layer: Layer, params: Any, args: tuple, kwargs: dict) -> None:
    """Refuses, before computing, params that are placeholders, deleted, or not the specs'.

    The specs come from the layer's (cached) trace for these input shapes, so
    under ``jax.jit`` the check costs nothing after tracing, and an eager call
    that repeats a checked signature costs one ``jax.tree.flatten`` of the params.
    """
    try:
        leaves, treedef = jax.tree.flatten(params)
    except UninitializedParamError:  # a placeholder refuses to be flattened: list them all
        missing = [_paths.join(p) for p, v in _paths.leaves(params) if isinstance(v, Uninitialized)]
        raise UninitializedParamError(
            f"{type(layer).__name__} was called with uninitialized parameters: "
            f"{', '.join(missing)}. Run li.dry_run(model, key, sample) (or load a state) "
            "first and call the model with the params it returns."
        ) from None
    try:
        key = (treedef, tuple((v.shape, v.dtype) for v in leaves), signature((args, kwargs)))
        hash(key)
    except (AttributeError, TypeError):  # a leaf that is not an array: the call will say
        return
    checked: dict[Any, None] = vars(layer).setdefault("_lazyinit_checked", {})
    if key in checked:
        return
    _diagnose(layer, {p: v for p, v in _paths.leaves(params)}, args, kwargs)
    if len(checked) >= 64:  # a bound: many input signatures only cost re-checks
        checked.clear()
    checked[key] = None


def _diagnose(layer: Layer, given: dict[Path, Any], args: tuple, kwargs: dict) -> None:
    """Raises unless params with these paths, shapes and dtypes fit ``layer``: the load rules
    (:mod:`lazyinit._match`), with a call's policy. A floating-point spec takes any floating
    dtype (mixed precision); extra params alone are fine (a call may use a part of them)."""
    try:
        expected = trace(layer, *args, **kwargs).params
    except LazyInitError:
        return  # the call itself will raise the located error
    targets = {
        p: _match.Target(spec.shape, spec.dtype if _match.fixed_dtype(spec) else None)
        for p, spec in expected.items()
    }
    incoming = {p: jax.ShapeDtypeStruct(np.shape(v), v.dtype) for p, v in given.items()}
    m = _match.match(
        targets, incoming, abstract=True, cast_hint="cast it, or dry-run with this dtype"
    )
    floats = [
        _match.dtype_mismatch(
            repr(_paths.join(p)),
            given[p].dtype,
            "a floating-point dtype",
            "integer params serve only integer specs",
        )
        for p, spec in expected.items()
        if p in given
        and not _match.fixed_dtype(spec)
        and not jnp.issubdtype(given[p].dtype, jnp.inexact)
    ]
    wrong = _match.judge(m, missing=True, unexpected=False) + floats
    # Extra params alone are fine; beside a real problem they are listed, as a clue.
    lines = _match.judge(m, missing=True, unexpected=True) + floats if wrong else []
    _match.refuse(
        f"These params do not fit {type(layer).__name__} on inputs like these",
        lines,
        "Were they made for another model or input size? Use the params li.dry_run "
        "returns for this model (or load them with li.load_state).",
    )


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return a is b


def _show(value: Any) -> str:
    """Layers by their repr, functions by their name."""
    if isinstance(value, tuple | list):
        inner = ", ".join(_show(v) for v in value)
        return (
            f"[{inner}]"
            if isinstance(value, list)
            else f"({inner}{',' if len(value) == 1 else ''})"
        )
    if callable(value) and not isinstance(value, Layer) and hasattr(value, "__name__"):
        return value.__name__
    return repr(value)


def _traced(call: Any) -> Any:
    """Wraps a layer's ``__call__``: trace under a dry run, check params at the top of a real call."""

    @functools.wraps(call)
    def __call__(self: Layer, params: Any, /, *args: Any, **kwargs: Any) -> Any:
        if is_tracing(params):
            return trace_call(self, call, params, args, kwargs)
        watch = _WATCH.get()
        if getattr(_apply, "depth", 0):
            out = call(self, params, *args, **kwargs)
        else:
            _check_params(self, params, args, kwargs)
            _apply.depth = 1
            try:
                out = call(self, params, *args, **kwargs)
            except Exception as e:  # checked here, not on every call: a donated array, by path
                gone = [_paths.join(p) for p, v in _paths.leaves(params) if _paths.is_deleted(v)]
                if gone:
                    where = f"params given to {type(self).__name__}"
                    raise _paths.deleted_error(where, gone) from e
                raise
            finally:
                _apply.depth = 0
        if watch is not None:
            watch(self, params, out)
        return out

    __call__._lazyinit_traced = True  # type: ignore[attr-defined]
    return __call__


@dataclass_transform(frozen_default=True, field_specifiers=(dataclasses.field,))
class Layer:
    """Base of every lazyinit layer: a frozen dataclass whose call is pure.

    Subclasses are made frozen dataclasses automatically, so configuration
    is declared as annotated fields and child layers are fields too.

    * A *leaf* layer overrides :meth:`specs`, which receives the same inputs
      as ``__call__`` (abstract ones during a dry run) and returns
      ``{name: li.Param(...)}``; its ``__call__(params, ...)`` then finds those
      names in ``params``. ``specs`` may declare fewer inputs than
      ``__call__``: trailing positional inputs and keywords it does not name
      are not passed to it (``def specs(self, x)`` serves
      ``def __call__(self, params, x, mask=None, *, train=False)``).
    * A *composite* layer calls each child with its sub-dict,
      ``self.fc1(params["fc1"], x)``: the key is the field name.

    ``layer(params, ...)`` and ``layer.apply(params, ...)`` are the same pure
    call. Calling with a tree that still holds placeholders is an error.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> class Scale(li.Layer):
        ...     def specs(self, x):
        ...         return {"scale": li.Param((x.shape[-1],), jax.nn.initializers.ones)}
        ...     def __call__(self, params, x):
        ...         return x * params["scale"]
        >>> params = li.dry_run(Scale(), jax.random.key(0), jnp.ones((2, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'scale': (3,)}
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("__call__")
        if call is not None and not getattr(call, "_lazyinit_traced", False):
            cls.__call__ = _traced(call)  # type: ignore[method-assign]
        dataclasses.dataclass(frozen=True, repr=False)(cls)

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and _same(value, f.default):
                continue
            parts.append(f"{f.name}={_show(value)}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __getstate__(self) -> dict[str, Any]:
        """The fields only: the record of checked calls is not pickled or copied."""
        return {k: v for k, v in vars(self).items() if k != "_lazyinit_checked"}

    def specs(self, *args: Any, **kwargs: Any) -> dict[str, Param]:
        """The parameters this layer needs for these inputs; none by default."""
        return {}

    specs._lazyinit_default = True  # type: ignore[attr-defined]

    def __call__(self, params: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define __call__(self, params, ...).")

    def apply(self, params: Any, /, *args: Any, **kwargs: Any) -> Any:
        """The same as ``self(params, *args, **kwargs)``."""
        return self(params, *args, **kwargs)

    def children(self) -> dict[str, Layer]:
        """Child layers by the key of their sub-dict: the fields that hold layers."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
            if isinstance(getattr(self, f.name), Layer)
        }

    children._lazyinit_default = True  # type: ignore[attr-defined]
