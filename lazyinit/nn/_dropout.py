"""``Dropout``: the one layer that draws randomness at call time, from an explicit key."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._layer import Layer
from ..errors import ConfigureLayerError, InvalidArgumentError

__all__ = ["Dropout"]


class Dropout(Layer):
    """Zeroes each element with probability ``rate`` in training, scaling the rest by ``1 / (1 - rate)``.

    In training mode it needs ``key=``; ``li.Sequential`` and the combinators
    fold each child's index into it, so two dropouts never share a mask.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> drop = li.Dropout(0.5)
        >>> li.dry_run(drop, jax.random.key(0), jnp.ones((2, 3)))
        {}
        >>> y = drop({}, jnp.ones((2, 3)), train=True, key=jax.random.key(1))
        >>> sorted(set(y.ravel().tolist()))
        [0.0, 2.0]
    """

    rate: float

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ConfigureLayerError(f"Dropout: `rate`={self.rate!r} must lie in [0, 1].")

    def specs(self, x: Any) -> dict:
        return {}  # no parameters: said here so that li.lazy_state knows without a sample

    def __call__(
        self, params: Any, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
    ) -> jax.Array:
        if not train or self.rate == 0:
            return x
        if key is None:
            raise InvalidArgumentError(
                f"Dropout({self.rate}) was called with train=True but no key. Pass "
                "key=jax.random.key(...) (a fresh one each step, e.g. "
                "jax.random.fold_in(key, step)), or train=False for evaluation."
            )
        if self.rate == 1:
            return jnp.zeros_like(x)
        keep = jax.random.bernoulli(key, 1 - self.rate, x.shape)
        return jnp.where(keep, x / (1 - self.rate), jnp.zeros_like(x))
