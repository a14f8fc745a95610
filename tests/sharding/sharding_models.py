"""Small models for the sharding tests, built from ``li.Linear`` with logical axes.

``Decoder`` is LLaMA-shaped (embedding, pre-norm attention and gated MLP blocks,
final norm, untied head) so that its 7B configuration can be planned abstractly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import lazyinit as li

RULES = {"embed": "fsdp", "mlp": "tensor", "heads": "tensor", "vocab": "tensor", "norm": None}
"""FSDP over 'fsdp' and tensor parallelism over 'tensor', t5x style."""


def mlp(width: int = 16, out: int = 8) -> li.Layer:
    """Linear(width) -> relu -> Linear(out), the second kernel laid out ('mlp', 'embed')."""
    return li.Sequential([li.Linear(width), li.relu, li.Linear(out, axes=("mlp", "embed"))])


class Embed(li.Layer):
    vocab: int
    features: int

    def specs(self, ids):
        init = li.initializers.normal(0.02)
        return {"embedding": li.Param((self.vocab, self.features), init, axes=("vocab", "embed"))}

    def __call__(self, params, ids):
        return jnp.take(params["embedding"], ids, axis=0)


class RMSNorm(li.Layer):
    def specs(self, x):
        return {"scale": li.Param((x.shape[-1],), li.initializers.ones, axes=("norm",))}

    def __call__(self, params, x):
        x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6)
        return x * params["scale"].reshape((1,) * (x.ndim - 1) + (-1,))


class Block(li.Layer):
    d_model: int
    num_heads: int
    ffn: int

    def __post_init__(self):
        d = self.d_model
        for name, out, axes in [
            ("q", d, ("embed", "heads")),
            ("k", d, ("embed", "heads")),
            ("v", d, ("embed", "heads")),
            ("o", d, ("heads", "embed")),
            ("gate", self.ffn, ("embed", "mlp")),
            ("up", self.ffn, ("embed", "mlp")),
            ("down", d, ("mlp", "embed")),
        ]:
            object.__setattr__(self, name, li.Linear(out, use_bias=False, axes=axes))
        object.__setattr__(self, "norm1", RMSNorm())
        object.__setattr__(self, "norm2", RMSNorm())

    def children(self):
        names = ("norm1", "q", "k", "v", "o", "norm2", "gate", "up", "down")
        return {n: getattr(self, n) for n in names}

    def __call__(self, params, x):
        b, t, d = x.shape
        h = self.norm1(params["norm1"], x)
        q, k, v = (getattr(self, n)(params[n], h) for n in "qkv")
        split = (b, t, self.num_heads, d // self.num_heads)
        att = jax.nn.dot_product_attention(
            q.reshape(split), k.reshape(split), v.reshape(split), is_causal=True
        )
        x = x + self.o(params["o"], att.reshape(b, t, d))
        h = self.norm2(params["norm2"], x)
        g = jax.nn.silu(self.gate(params["gate"], h)) * self.up(params["up"], h)
        return x + self.down(params["down"], g)


class Decoder(li.Layer):
    num_layers: int = 32
    d_model: int = 4096
    num_heads: int = 32
    ffn: int = 11008
    vocab: int = 32000

    def __call__(self, params, ids):
        x = Embed(self.vocab, self.d_model)(params["embed"], ids)
        block = Block(self.d_model, self.num_heads, self.ffn)
        for i in range(self.num_layers):
            x = block(params["layers"][str(i)], x)
        x = RMSNorm()(params["norm"], x)
        head = li.Linear(self.vocab, use_bias=False, axes=("embed", "vocab"))
        return head(params["head"], x)
