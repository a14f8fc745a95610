"""Mixed precision: parameters kept in one dtype, computation done in another.

Two choices, made in two places. The dry run's ``dtype=`` (or a spec's
``dtype``) chooses what parameters are *stored* in: keep float32 master
weights for the optimizer. A built-in layer's ``compute_dtype`` (flax's
``dtype``) chooses what it *computes* in: its floating-point inputs and
parameters are cast to it for the call, so the matmuls run in bfloat16 while
the gradients reach the float32 parameters through the cast.

:func:`mixed_precision` sets ``compute_dtype`` on every layer of a model that
has it, at once (the walk that ``li.channels_first`` shares): the one-line
policy "float32 params, bfloat16 compute". Cast the model's output to float32
before the loss (``logits.astype(jnp.float32)``) so that the softmax and the
loss are computed in full precision.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._recorder import cast_reads, is_tracing
from ..errors import InvalidArgumentError
from ._switch import set_everywhere

__all__ = ["compute_in", "mixed_precision"]


def _cast(dtype: Any, x: Any) -> Any:
    if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
        return x.astype(dtype)
    return x


def compute_in(dtype: Any, params: Any, *inputs: Any) -> tuple[Any, ...]:
    """``(params, *inputs)`` with every floating-point array cast to ``dtype`` (None: as is).

    Integer inputs (token ids) and integer params (counters) are left alone;
    during a dry run the recorder's stand-in casts the values it hands out.
    """
    if dtype is None:
        return (params, *inputs)
    dtype = np.dtype(dtype)
    if is_tracing(params):  # a dry run: values are cast as they are read
        params = cast_reads(params, dtype)
    elif params is not None:
        params = jax.tree.map(lambda a: _cast(dtype, a), params)
    return (params, *(jax.tree.map(lambda a: _cast(dtype, a), x) for x in inputs))


def mixed_precision(model: Any, compute_dtype: Any = "bfloat16") -> Any:
    """A copy of ``model`` whose built-in layers all compute in ``compute_dtype``.

    Parameter storage is unchanged (the dry run's ``dtype=`` chooses it), so
    the same params serve both models. Layers of your own receive inputs in
    ``compute_dtype`` and may use :func:`compute_in` to follow the policy.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> model = li.mixed_precision(li.Sequential([li.Linear(4), li.nn.relu, li.Linear(2)]))
        >>> params = li.dry_run(model, jax.random.key(0), jnp.ones((3, 5)))
        >>> params["0"]["kernel"].dtype, model(params, jnp.ones((3, 5))).dtype
        (dtype('float32'), dtype(bfloat16))
    """
    try:
        dtype = np.dtype(compute_dtype)
    except TypeError as e:
        raise InvalidArgumentError(
            f"mixed_precision: compute_dtype={compute_dtype!r} is not a dtype. Pass 'bfloat16', "
            "'float16' or 'float32'."
        ) from e
    if not jnp.issubdtype(dtype, jnp.floating):
        raise InvalidArgumentError(
            f"mixed_precision: compute_dtype={dtype.name} is not a floating-point dtype. Pass "
            "'bfloat16', 'float16' or 'float32'."
        )
    return set_everywhere(model, "compute_dtype", dtype)
