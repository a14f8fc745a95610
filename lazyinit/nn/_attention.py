"""``MultiHeadAttention``: flax's ``MultiHeadDotProductAttention`` maths, PyTorch's ``MultiheadAttention`` options.

Params, as flax names them: ``query``, ``key``, ``value`` each hold a
``kernel (in_features, num_heads, head_dim)`` and a ``bias (num_heads,
head_dim)``; ``out`` holds ``kernel (num_heads, head_dim, out_features)`` and
``bias (out_features,)``. The three input feature sizes are inferred
separately, so keys and values may come from another width than queries.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from .. import initializers
from .._layer import Layer
from .._spec import Param
from .._typing import Initializer
from ..errors import ConfigureLayerError, InferShapeError
from ._checks import expect_divides, expect_min_rank
from ._precision import compute_in

__all__ = ["MultiHeadAttention"]

_IN_INIT = initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
_OUT_INIT = initializers.lecun_normal(in_axis=(0, 1), out_axis=2)


class HeadProjection(Layer):
    """``(..., in) -> (..., num_heads, head_dim)``: one of the query, key and value projections."""

    num_heads: int
    head_dim: int | None
    use_bias: bool
    kernel_init: Initializer
    bias_init: Initializer

    def specs(self, x: Any) -> dict[str, Param]:
        expect_min_rank(self, x, 1, "..., features")
        # head_dim is None only when lazy_state or partition ask without an input
        head_dim = x.shape[-1] // self.num_heads if self.head_dim is None else self.head_dim
        heads = (self.num_heads, head_dim)
        specs = {
            "kernel": Param((x.shape[-1], *heads), self.kernel_init, axes=("embed", "heads", "kv"))
        }
        if self.use_bias:
            specs["bias"] = Param(heads, self.bias_init, axes=("heads", "kv"))
        return specs

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        y = jnp.einsum("...f,fhd->...hd", x, params["kernel"])
        return (
            y + jnp.reshape(params["bias"], (1,) * (y.ndim - 2) + y.shape[-2:])
            if self.use_bias
            else y
        )


class OutProjection(Layer):
    """``(..., num_heads, head_dim) -> (..., features)``: the output projection."""

    features: int | None
    use_bias: bool
    kernel_init: Initializer
    bias_init: Initializer

    def specs(self, x: Any) -> dict[str, Param]:
        # features is None only when lazy_state or partition ask without an input
        features = x.shape[-2] * x.shape[-1] if self.features is None else self.features
        shape = (x.shape[-2], x.shape[-1], features)
        specs = {"kernel": Param(shape, self.kernel_init, axes=("heads", "kv", "embed"))}
        if self.use_bias:
            specs["bias"] = Param((features,), self.bias_init, axes=("embed",))
        return specs

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        y = jnp.einsum("...hd,hdf->...f", x, params["kernel"])
        return y + jnp.reshape(params["bias"], (1,) * (y.ndim - 1) + (-1,)) if self.use_bias else y


def rotary(x: jax.Array, base: float) -> jax.Array:
    """Rotary position embedding of ``(..., length, heads, head_dim)`` at positions ``0..length-1``."""
    half = x.shape[-1] // 2
    angles = jnp.arange(x.shape[-3])[:, None] * base ** (-jnp.arange(half) / half)[None, :]
    shape = (1,) * (x.ndim - 3) + (x.shape[-3], 1, half)
    cos, sin = jnp.reshape(jnp.cos(angles), shape), jnp.reshape(jnp.sin(angles), shape)
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


class MultiHeadAttention(Layer):
    """Scaled dot-product attention over ``num_heads`` heads; feature sizes come from the inputs.

    ``self(params, q, k=None, v=None, *, mask=None)``: ``k`` defaults to ``q``
    (self-attention) and ``v`` to ``k``. ``mask`` is boolean, broadcastable
    to ``(batch..., num_heads, q_len, kv_len)``, ``True`` where attending is
    allowed (flax's convention; PyTorch's ``attn_mask`` is its negation).
    ``causal=True`` adds the lower-triangular mask; ``rotary=True`` applies
    rotary position embeddings to queries and keys. ``qkv_features`` and
    ``out_features`` default to the query's feature size. ``num_kv_heads``
    below ``num_heads`` is grouped-query attention (LLaMA's, PyTorch's
    ``enable_gqa``): keys and values have that many heads, each shared by
    ``num_heads // num_kv_heads`` consecutive query heads.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> attn = li.MultiHeadAttention(num_heads=2, causal=True)
        >>> params = li.dry_run(attn, jax.random.key(0), jnp.ones((1, 5, 8)))
        >>> jax.tree.map(jnp.shape, params["query"]), jax.tree.map(jnp.shape, params["out"])
        ({'bias': (2, 4), 'kernel': (8, 2, 4)}, {'bias': (8,), 'kernel': (2, 4, 8)})
        >>> gqa = li.MultiHeadAttention(num_heads=4, num_kv_heads=2, use_bias=False)
        >>> params = li.dry_run(gqa, jax.random.key(0), jnp.ones((1, 5, 8)))
        >>> params["query"]["kernel"].shape, params["key"]["kernel"].shape
        ((8, 4, 2), (8, 2, 2))
    """

    num_heads: int
    qkv_features: int | None = None
    out_features: int | None = None
    use_bias: bool = True
    causal: bool = False
    rotary: bool = False
    rotary_base: float = 10000.0
    kernel_init: Initializer = _IN_INIT
    out_kernel_init: Initializer = _OUT_INIT
    bias_init: Initializer = initializers.zeros
    compute_dtype: Any = None  # what to compute in (flax's ``dtype``); None: as given
    num_kv_heads: int | None = None  # None: num_heads (no grouping)

    def __post_init__(self) -> None:
        if not isinstance(self.num_heads, int) or self.num_heads < 1:
            raise ConfigureLayerError(
                f"MultiHeadAttention: `num_heads`={self.num_heads!r} must be a positive int."
            )
        kv = self.num_kv_heads
        if kv is not None and (not isinstance(kv, int) or kv < 1 or self.num_heads % kv):
            raise ConfigureLayerError(
                f"MultiHeadAttention: `num_kv_heads`={kv!r} must be a positive int that divides "
                f"num_heads={self.num_heads} (each key/value head serves a group of query heads)."
            )
        if self.qkv_features is not None and self.qkv_features % self.num_heads:
            raise ConfigureLayerError(
                f"MultiHeadAttention: num_heads={self.num_heads} does not divide "
                f"qkv_features={self.qkv_features}. Choose qkv_features a multiple of num_heads."
            )

    def _parts(self, features: int | None, out: int | None) -> dict[str, Layer]:
        head_dim = None if features is None else features // self.num_heads
        q, kv = (
            HeadProjection(heads, head_dim, self.use_bias, self.kernel_init, self.bias_init)
            for heads in (self.num_heads, self.num_kv_heads or self.num_heads)
        )
        out_proj = OutProjection(out, self.use_bias, self.out_kernel_init, self.bias_init)
        return {"query": q, "key": kv, "value": kv, "out": out_proj}

    def children(self) -> dict[str, Layer]:
        return self._parts(self.qkv_features, self.out_features)

    def __call__(
        self,
        params: Any,
        q: jax.Array,
        k: jax.Array | None = None,
        v: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        params, q, k, v = compute_in(self.compute_dtype, params, q, k, v)
        k = q if k is None else k
        v = k if v is None else v
        features = self.qkv_features or q.shape[-1]
        expect_divides(self, q, self.num_heads, features, "query features", "num_heads", "")
        if self.rotary and (features // self.num_heads) % 2:
            raise InferShapeError(
                f"rotary embeddings need an even head_dim, got "
                f"{features} features / {self.num_heads} heads = {features // self.num_heads}."
            )
        parts = self._parts(features, self.out_features or q.shape[-1])
        qh, kh, vh = (parts[n](params[n], x) for n, x in (("query", q), ("key", k), ("value", v)))
        _, qh, kh, vh = compute_in(self.compute_dtype, None, qh, kh, vh)  # dry runs too
        if self.rotary:
            qh, kh = rotary(qh, self.rotary_base), rotary(kh, self.rotary_base)
        group = self.num_heads // (self.num_kv_heads or self.num_heads)
        if group > 1:  # key/value head j serves query heads j * group .. (j + 1) * group - 1
            kh, vh = jnp.repeat(kh, group, axis=-2), jnp.repeat(vh, group, axis=-2)
        logits = jnp.einsum("...qhd,...khd->...hqk", qh / math.sqrt(qh.shape[-1]), kh)
        allowed = None if mask is None else jnp.broadcast_to(mask, logits.shape)
        if self.causal:
            tril = jnp.tril(jnp.ones(logits.shape[-2:], bool))
            causal = jnp.broadcast_to(tril, logits.shape)
            allowed = causal if allowed is None else allowed & causal
        if allowed is not None:
            logits = jnp.where(allowed, logits, jnp.finfo(logits.dtype).min)
        weights = jax.nn.softmax(logits, axis=-1)
        y = parts["out"](params["out"], jnp.einsum("...hqk,...khd->...qhd", weights, vh))
        return compute_in(self.compute_dtype, None, y)[1]
