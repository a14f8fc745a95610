"""``Linear``: PyTorch's ``LazyLinear``, flax's ``Dense``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .. import initializers
from .._layer import Layer
from .._spec import Param
from .._typing import Initializer
from ._checks import expect_min_rank
from ._precision import compute_in

__all__ = ["Linear"]


class Linear(Layer):
    """``y = x @ kernel + bias`` over the last axis; ``in_features`` comes from the input.

    ``kernel`` is ``(in_features, out_features)`` (flax's layout; PyTorch's
    ``weight`` is its transpose) with logical axes ``axes``.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> params = li.dry_run(li.Linear(4), jax.random.key(0), jnp.ones((2, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'bias': (4,), 'kernel': (3, 4)}
    """

    out_features: int
    use_bias: bool = True
    kernel_init: Initializer = initializers.lecun_normal()
    bias_init: Initializer = initializers.zeros
    axes: tuple[str | None, str | None] = ("embed", "mlp")
    compute_dtype: Any = None  # what to compute in (flax's ``dtype``); None: as given

    def specs(self, x: Any) -> dict[str, Param]:
        expect_min_rank(self, x, 1, "..., in_features")
        specs = {
            "kernel": Param((x.shape[-1], self.out_features), self.kernel_init, axes=self.axes)
        }
        if self.use_bias:
            specs["bias"] = Param((self.out_features,), self.bias_init, axes=self.axes[-1:])
        return specs

    def __call__(self, params: Any, x: jnp.ndarray) -> jnp.ndarray:
        params, x = compute_in(self.compute_dtype, params, x)
        y = jnp.matmul(x, params["kernel"])
        if self.use_bias:
            # Broadcast over the leading axes on purpose (the one intended rank promotion), so
            # that an eager call costs two dispatches, as hand-written ``x @ w + b`` does.
            with jax.numpy_rank_promotion("allow"):
                y = y + params["bias"]
        return y
