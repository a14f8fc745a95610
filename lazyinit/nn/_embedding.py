"""``Embedding``: a lookup table of ``num_embeddings`` vectors (PyTorch's ``Embedding``, flax's ``Embed``)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import initializers
from .._layer import Layer
from .._spec import Param
from .._typing import Initializer
from ..errors import InferShapeError
from ._precision import compute_in

__all__ = ["Embedding"]


class Embedding(Layer):
    """Maps integer ids ``(...)`` to vectors ``(..., features)``; ``attend`` is the tied output head.

    Nothing is inferred here (the sizes are the table's), but it composes
    with the lazy layers. Initialized ``N(0, 0.02)``, GPT-2's and BERT's choice,
    on purpose: an output head tied to the table (``attend``) after a
    LayerNorm then starts with small logits, so a language model's first loss
    is near ``ln(num_embeddings)``. PyTorch's ``N(0, 1)`` gives logits of
    standard deviation ``sqrt(features)`` there (loss 33.5 instead of 3.9 for a
    small GPT); flax's ``Embed`` draws with standard deviation
    ``1 / sqrt(features)``. Pass ``embedding_init`` for either.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> embed = li.Embedding(100, 8)
        >>> params = li.dry_run(embed, jax.random.key(0), jnp.zeros((2, 5), jnp.int32))
        >>> jax.tree.map(jnp.shape, params)
        {'embedding': (100, 8)}
        >>> embed.attend(params, jnp.ones((2, 5, 8))).shape  # logits over the vocabulary
        (2, 5, 100)
    """

    num_embeddings: int
    features: int
    embedding_init: Initializer = initializers.normal(0.02)
    axes: tuple[str | None, str | None] = ("vocab", "embed")
    compute_dtype: Any = None  # what to compute in (flax's ``dtype``); None: as given

    def specs(self, ids: Any, *, attend: bool = False) -> dict[str, Param]:
        dtype = getattr(ids, "dtype", None)
        if not attend and dtype is not None and not jnp.issubdtype(np.dtype(dtype), jnp.integer):
            raise InferShapeError(
                f"Embedding takes integer ids, got {np.dtype(dtype).name} input of shape "
                f"{tuple(ids.shape)}. Pass token ids (jnp.int32); for real-valued features "
                "use li.Linear."
            )
        shape = (self.num_embeddings, self.features)
        return {"embedding": Param(shape, self.embedding_init, axes=self.axes)}

    def __call__(self, params: Any, ids: jax.Array, *, attend: bool = False) -> jax.Array:
        params, ids = compute_in(self.compute_dtype, params, ids)
        if attend:
            return jnp.einsum("...f,vf->...v", ids, params["embedding"])
        return jnp.take(params["embedding"], ids, axis=0)

    def attend(self, params: Any, x: jax.Array) -> jax.Array:
        """``x @ embedding.T``: logits over the table, for an output head tied to it."""
        return self(params, x, attend=True)
