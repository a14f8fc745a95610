"""``Flatten``: PyTorch's ``nn.Flatten``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._layer import Layer
from ..errors import InferShapeError
from ._checks import known_rank

__all__ = ["Flatten"]


class Flatten(Layer):
    """Merges axes ``start_axis..end_axis`` (inclusive) into one; by default all but the batch axis.

    With channels-last inputs the order of the flattened features differs from
    PyTorch's ``(N, C, H, W)`` flatten: a ``Linear`` after it needs its rows
    permuted when weights move between the two.

    Examples:
        >>> import jax.numpy as jnp, lazyinit as li
        >>> li.Flatten()({}, jnp.ones((2, 3, 4, 5))).shape
        (2, 60)
    """

    start_axis: int = 1
    end_axis: int = -1

    def specs(self, x: Any) -> dict:
        n = known_rank(x)
        if n is None:
            return {}
        inside = all(-n <= a < n for a in (self.start_axis, self.end_axis))
        if not inside or self.start_axis % n > self.end_axis % n:
            raise InferShapeError(
                f"Flatten(start_axis={self.start_axis}, end_axis={self.end_axis}) does not fit "
                f"an input of shape {tuple(x.shape)}: both must lie in [-{n}, {n}) with start_axis "
                "at or before end_axis."
            )
        return {}

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        start, end = self.start_axis % x.ndim, self.end_axis % x.ndim
        return jnp.reshape(x, (*x.shape[:start], -1, *x.shape[end + 1 :]))
