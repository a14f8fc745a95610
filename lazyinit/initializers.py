"""Initializers that pickle, compare equal by value and hash.

``jax.nn.initializers.lecun_normal()`` returns a fresh closure on each call:
it cannot be pickled (PyTorch's tests pickle lazy modules, and so do ours) and
two of them never compare equal, which would defeat lazyinit's caches of
traced shapes and compiled kernels. :class:`JaxInit` names a factory of
``jax.nn.initializers`` and its arguments instead and builds the closure when
called, so the maths is exactly JAX's.

>>> import jax, lazyinit as li
>>> init = li.initializers.lecun_normal()
>>> init
lecun_normal()
>>> init == li.initializers.lecun_normal()
True
>>> init(jax.random.key(0), (2, 3), "float32").shape
(2, 3)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax

from ._typing import DType, Shape

__all__ = [
    "JaxInit",
    "zeros",
    "ones",
    "constant",
    "normal",
    "uniform",
    "truncated_normal",
    "lecun_normal",
    "lecun_uniform",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "variance_scaling",
    "orthogonal",
]

zeros = jax.nn.initializers.zeros
ones = jax.nn.initializers.ones


@functools.cache
def _build(name: str, args: tuple[Any, ...], kwargs: tuple[tuple[str, Any], ...]) -> Any:
    return getattr(jax.nn.initializers, name)(*args, **dict(kwargs))


@dataclasses.dataclass(frozen=True)
class JaxInit:
    """``jax.nn.initializers.<name>(*args, **kwargs)``, by name, so that it pickles and hashes."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __call__(self, key: jax.Array, shape: Shape, dtype: DType = "float32") -> jax.Array:
        return _build(self.name, self.args, self.kwargs)(key, shape, dtype)

    @property
    def __name__(self) -> str:
        return repr(self)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        return f"{self.name}({', '.join(parts)})"


def _factory(name: str):
    def make(*args: Any, **kwargs: Any) -> JaxInit:
        return JaxInit(name, args, tuple(sorted(kwargs.items())))

    make.__name__ = name
    make.__doc__ = f"``jax.nn.initializers.{name}`` as a picklable :class:`JaxInit`."
    return make


constant = _factory("constant")
normal = _factory("normal")
uniform = _factory("uniform")
truncated_normal = _factory("truncated_normal")
lecun_normal = _factory("lecun_normal")
lecun_uniform = _factory("lecun_uniform")
glorot_normal = _factory("glorot_normal")
glorot_uniform = _factory("glorot_uniform")
he_normal = _factory("he_normal")
he_uniform = _factory("he_uniform")
variance_scaling = _factory("variance_scaling")
orthogonal = _factory("orthogonal")
