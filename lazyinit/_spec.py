"""What a layer declares (:class:`Param`) and what stands in for it before a dry run (:class:`Uninitialized`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from ._typing import DType, Initializer
from .errors import UninitializedParamError

__all__ = [
    "Param",
    "Uninitialized",
    "is_uninitialized",
    "dtype_name",
    "DEFAULT_DTYPE",
]

DEFAULT_DTYPE = np.dtype("float32")
"""What a parameter is stored in when neither its spec nor the dry run's ``dtype=`` says:
float32, as flax's ``param_dtype`` and PyTorch's default, whether or not 64-bit types are on."""


def dtype_name(dtype: Any) -> str:
    return "?" if dtype is None else np.dtype(dtype).name


@dataclasses.dataclass(frozen=True)
class Param:
    """The declaration of one parameter, returned by a layer's ``specs``.

    Args:
      shape: the parameter's shape, usually computed from the sample input
        (``(x.shape[-1], self.features)``).
      init: ``(key, shape, dtype) -> array``; anything from
        ``jax.nn.initializers`` works.
      dtype: the dtype to materialize in; ``None`` takes the dry run's
        ``dtype=`` choice, else float32.
      axes: logical axis names, one per dimension (``('embed', 'mlp')``), that
        sharding rules map to mesh axes.
      trainable: ``False`` for non-trainable state such as running statistics,
        which :func:`lazyinit.partition` keeps away from the optimizer.

    Examples:
        >>> import jax, lazyinit as li
        >>> li.Param((3, 4), jax.nn.initializers.zeros, axes=("embed", "mlp"))
        Param(shape=(3, 4), init=zeros, dtype=None, axes=('embed', 'mlp'), trainable=True)
    """

    shape: tuple[Any, ...]
    init: Initializer
    dtype: DType | None = None
    axes: tuple[str | None, ...] | None = None
    trainable: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.shape, Sequence) and not isinstance(self.shape, str):
            object.__setattr__(self, "shape", tuple(self.shape))
        if self.dtype is not None:
            object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if self.axes is not None:
            object.__setattr__(self, "axes", tuple(self.axes))

    def __repr__(self) -> str:
        init = getattr(self.init, "__name__", None) or repr(self.init)
        dtype = None if self.dtype is None else self.dtype.name
        return (
            f"Param(shape={self.shape}, init={init}, dtype={dtype}, axes={self.axes}, "
            f"trainable={self.trainable})"
        )


def _refuse(self: Uninitialized, *args: Any, **kwargs: Any) -> Any:
    where = f" at {self.path!r}" if self.path else ""
    raise UninitializedParamError(
        f"{self!r}{where} is a placeholder with no value yet. Run li.dry_run(model, key, sample) "
        "or load a state first; li.uninitialized_paths(tree) lists the placeholders."
    )


@dataclasses.dataclass(frozen=True, eq=True)
class Uninitialized:
    """A parameter that has no value yet: PyTorch's ``UninitializedParameter``.

    ``shape`` holds what is known before the dry run, with ``None`` for the
    dimensions that depend on the input (printed ``?``); it is ``None`` as a
    whole when even the rank is unknown. ``dtype`` and ``device`` are the
    choices the dry run will materialize with; ``path`` (set by
    :func:`lazyinit.lazy_state`, ignored by ``==``) lets errors say where a
    placeholder came from. Any attempt to compute with a
    placeholder (arithmetic, ``jnp`` functions, ``jax.jit``, ``device_put``,
    ``optax`` ``init``) raises :class:`UninitializedParamError`.

    Examples:
        >>> import lazyinit as li
        >>> u = li.Uninitialized((None, 10), "float32")
        >>> u
        Uninitialized(shape=(?, 10), dtype=float32)
        >>> u.astype("bfloat16")
        Uninitialized(shape=(?, 10), dtype=bfloat16)
    """

    shape: tuple[int | None, ...] | None = None
    dtype: np.dtype | None = None
    device: Any = None
    path: str | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(self.shape))
        if self.dtype is not None:
            object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def ndim(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def astype(self, dtype: DType) -> Uninitialized:
        """The same placeholder, to be materialized in ``dtype``."""
        return dataclasses.replace(self, dtype=np.dtype(dtype))

    def to(self, device: Any) -> Uninitialized:
        """The same placeholder, to be materialized on ``device`` (a ``Device`` or ``Sharding``)."""
        return dataclasses.replace(self, device=device)

    def matches(self, shape: tuple[int, ...]) -> bool:
        """Whether a concrete ``shape`` agrees with every dimension already known."""
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            k is None or k == s for k, s in zip(self.shape, shape)
        )

    def __repr__(self) -> str:
        if self.shape is None:
            shape = "?"
        else:
            dims = ", ".join("?" if d is None else str(d) for d in self.shape)
            shape = f"({dims},)" if len(self.shape) == 1 else f"({dims})"
        device = "" if self.device is None else f", device={self.device}"
        return f"Uninitialized(shape={shape}, dtype={dtype_name(self.dtype)}{device})"

    def __treescope_repr__(self, path: str | None, subtree_renderer: Any) -> Any:
        from treescope import rendering_parts as parts  # optional: only notebooks have it

        text = parts.custom_text_color(parts.text(repr(self)), "#b35900")
        return parts.build_one_line_tree_node(text, path)

    @property
    def aval(self) -> Any:
        """Refused: ``jnp.zeros_like`` and friends read it, so they refuse too."""
        return _refuse(self)

    # Guardrails: nothing may treat a placeholder as an array.
    __jax_array__ = __array__ = __bool__ = __float__ = __int__ = __index__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __matmul__ = __rmatmul__ = _refuse
    __pow__ = __rpow__ = __mod__ = __neg__ = __pos__ = __abs__ = __getitem__ = _refuse
    __lt__ = __le__ = __gt__ = __ge__ = _refuse


def is_uninitialized(x: Any) -> bool:
    return isinstance(x, Uninitialized)


# jax.jit, jax.device_put, jax.tree.map and optax all flatten their inputs
# first; flattening a placeholder is where they learn it has no value.
jax.tree_util.register_pytree_node(
    Uninitialized, lambda u: _refuse(u), lambda aux, children: Uninitialized()
)
