"""LLaMA in lazyinit: Hugging Face's ``LlamaForCausalLM``, its layers named as there.

RMSNorm before each block, a SwiGLU feed-forward layer (``down(silu(gate(x)) * up(x))``),
rotary position embeddings (Hugging Face's half-split layout, which is lazyinit's own),
grouped-query attention (``num_kv_heads``: each key/value head serves a group of query
heads), no biases, and an output head apart from the embedding. Only the default rotary
embedding (``rope_type='default'``) is ported.

``tests/interop/test_ports.py`` checks it against the real model; ``docs/porting.md`` walks a port.
"""

from __future__ import annotations

from typing import Any

import jax

import lazyinit as li
from lazyinit.interop import same
from lazyinit.interop.torch import attention, register

from . import Act


class LlamaMLP(li.Layer):
    """SwiGLU: ``down_proj(act_fn(gate_proj(x)) * up_proj(x))``."""

    gate_proj: li.Layer
    up_proj: li.Layer
    down_proj: li.Layer
    act_fn: li.Layer

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        gate = self.act_fn(params["act_fn"], self.gate_proj(params["gate_proj"], x))
        return self.down_proj(params["down_proj"], gate * self.up_proj(params["up_proj"], x))


class LlamaDecoderLayer(li.Layer):
    self_attn: li.Layer
    mlp: li.Layer
    input_layernorm: li.Layer
    post_attention_layernorm: li.Layer

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        h = self.input_layernorm(params["input_layernorm"], x)
        x = x + self.self_attn(params["self_attn"], h)
        h = self.post_attention_layernorm(params["post_attention_layernorm"], x)
        return x + self.mlp(params["mlp"], h)


class LlamaModel(li.Layer):
    embed_tokens: li.Layer
    layers: li.Layer
    norm: li.Layer

    def __call__(self, params: Any, input_ids: jax.Array) -> jax.Array:
        x = self.layers(params["layers"], self.embed_tokens(params["embed_tokens"], input_ids))
        return self.norm(params["norm"], x)


class LlamaForCausalLM(li.Layer):
    model: li.Layer
    lm_head: li.Layer

    def __call__(self, params: Any, input_ids: jax.Array) -> jax.Array:
        return self.lm_head(params["lm_head"], self.model(params["model"], input_ids))


def from_config(config: Any) -> LlamaForCausalLM:
    """The lazyinit LLaMA of a ``transformers.LlamaConfig``."""
    rope = config.rope_parameters
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"this port has the default rotary embedding only, not {rope!r}")
    d, heads = config.hidden_size, config.num_attention_heads
    attn = li.MultiHeadAttention(
        heads,
        num_kv_heads=config.num_key_value_heads,
        qkv_features=heads * getattr(config, "head_dim", d // heads),
        use_bias=config.attention_bias,
        causal=True,
        rotary=True,
        rotary_base=rope["rope_theta"],
    )
    inner, bias = config.intermediate_size, config.mlp_bias
    mlp = LlamaMLP(
        li.Linear(inner, bias), li.Linear(inner, bias), li.Linear(d, bias), Act(li.nn.silu)
    )
    norm = li.RMSNorm(eps=config.rms_norm_eps)
    layers = li.Repeat(LlamaDecoderLayer(attn, mlp, norm, norm), config.num_hidden_layers)
    model = LlamaModel(li.Embedding(config.vocab_size, d), layers, norm)
    return LlamaForCausalLM(model, li.Linear(config.vocab_size, use_bias=False))


# --- mapping ---
register(li.MultiHeadAttention, "LlamaAttention")(
    attention(q="q_proj.", k="k_proj.", v="v_proj.", out="o_proj.")
)
register(li.RMSNorm, "LlamaRMSNorm")(lambda layer, leaves: [same("scale", "weight")])
# --- end of mapping ---
