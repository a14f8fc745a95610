"""``Layer``: immutable configuration whose call is a pure function of ``(params, inputs)``."""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Mapping
from typing import Any, dataclass_transform

from . import _paths
from ._errors import LazyInitError, ParamsMismatchError, UninitializedParamError
from ._recorder import _Node
from ._spec import Param, Uninitialized
from ._tracer import trace, trace_call

__all__ = ["Layer"]

_apply = threading.local()


def _placeholders(tree: Any, prefix: tuple[str, ...] = ()) -> list[str]:
    if isinstance(tree, Uninitialized):
        return [_paths.join(prefix)]
    if isinstance(tree, Mapping):
        return [p for k, v in tree.items() for p in _placeholders(v, (*prefix, str(k)))]
    return []


def _deleted(tree: Any, prefix: tuple[str, ...] = ()) -> list[str]:
    if isinstance(tree, Mapping):
        return [p for k, v in tree.items() for p in _deleted(v, (*prefix, str(k)))]
    return [_paths.join(prefix)] if _paths.is_deleted(tree) else []


def _diagnose(layer: Layer, params: Any, args: tuple, kwargs: dict) -> str | None:
    """Why ``params`` does not fit ``layer`` for these inputs, or None if it seems to."""
    try:
        expected = trace(layer, *args, **kwargs).params
        given = _paths.flatten(params, lambda x: hasattr(x, "shape"), what="params")
    except Exception:
        return None
    lines = [f"missing {_paths.join(p)!r} {s.shape}" for p, s in expected.items() if p not in given]
    lines += [f"unexpected {_paths.join(p)!r}" for p in given if p not in expected]
    lines += [
        f"{_paths.join(p)!r}: shape {tuple(given[p].shape)}, the model needs {s.shape}"
        for p, s in expected.items()
        if p in given and tuple(given[p].shape) != s.shape
    ]
    if not lines:
        return None
    return (
        f"These params do not fit {type(layer).__name__} on inputs like these:\n  "
        + "\n  ".join(lines)
        + "\nWere they made for another model or input size? Use the params li.dry_run "
        "returns for this model (or load them with li.load_state)."
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
        if isinstance(params, _Node):
            return trace_call(self, call, params, args, kwargs)
        if getattr(_apply, "depth", 0):
            return call(self, params, *args, **kwargs)
        missing = _placeholders(params)
        if missing:
            raise UninitializedParamError(
                f"{type(self).__name__} was called with uninitialized parameters: "
                f"{', '.join(missing)}. Run li.dry_run(model, key, sample) (or load a state) "
                "first and call the model with the params it returns."
            )
        gone = _deleted(params)
        if gone:
            raise _paths.deleted_error(f"params given to {type(self).__name__}", gone)
        _apply.depth = 1
        try:
            return call(self, params, *args, **kwargs)
        except LazyInitError:
            raise
        except Exception as e:
            why = _diagnose(self, params, args, kwargs)
            if why is None:
                raise
            raise ParamsMismatchError(why) from e
        finally:
            _apply.depth = 0

    __call__._lazyinit_traced = True
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

    >>> import jax, jax.numpy as jnp, lazyinit as li
    >>> class Scale(li.Layer):
    ...     def specs(self, x):
    ...         return {"scale": li.Param((x.shape[-1],), jax.nn.initializers.ones)}
    ...     def __call__(self, params, x):
    ...         return x * params["scale"]
    >>> params = Scale().dry_run(jax.random.key(0), jnp.ones((2, 3)))
    >>> jax.tree.map(jnp.shape, params)
    {'scale': (3,)}
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("__call__")
        if call is not None and not getattr(call, "_lazyinit_traced", False):
            cls.__call__ = _traced(call)
        dataclasses.dataclass(frozen=True, repr=False)(cls)

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and _same(value, f.default):
                continue
            parts.append(f"{f.name}={_show(value)}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def specs(self, *args: Any, **kwargs: Any) -> dict[str, Param]:
        """The parameters this layer needs for these inputs; none by default."""
        return {}

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

    def dry_run(self, key: Any, /, *args: Any, **kwargs: Any) -> Any:
        """``li.dry_run(self, key, *args, **kwargs)``."""
        from ._dry_run import dry_run

        return dry_run(self, key, *args, **kwargs)

    def lazy_state(self, **kwargs: Any) -> Any:
        """``li.lazy_state(self, **kwargs)``."""
        from ._state import lazy_state

        return lazy_state(self, **kwargs)
