"""BERT in lazyinit: Hugging Face's ``BertModel``, its layers named as there.

Post-LayerNorm blocks (``LayerNorm(x + sublayer(x))``), the exact GELU (Hugging Face's
``"gelu"`` is ``erf``'s, ``li.nn.gelu``; ``li.nn.gelu_tanh`` would differ by up to 4.7e-4).
The self-attention is written as Hugging Face's is, from three ``nn.Linear`` projections
(``query``, ``key``, ``value``) whose output projection is ``attention.output.dense``: every
layer then has its torch module's name and layout, and nothing needs a rule.

``tests/interop/test_ports.py`` checks it against the real model; ``docs/porting.md`` walks a port.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

import lazyinit as li

from . import Act

ACTIVATIONS = {"gelu": li.nn.gelu, "gelu_new": li.nn.gelu_tanh, "relu": li.nn.relu}


class BertEmbeddings(li.Layer):
    word_embeddings: li.Layer
    position_embeddings: li.Layer
    token_type_embeddings: li.Layer
    LayerNorm: li.Layer

    def __call__(self, params: Any, input_ids: jax.Array) -> jax.Array:
        positions = self.position_embeddings(
            params["position_embeddings"], jnp.arange(input_ids.shape[-1])
        )
        types = self.token_type_embeddings(
            params["token_type_embeddings"], jnp.zeros_like(input_ids)
        )
        x = self.word_embeddings(params["word_embeddings"], input_ids) + positions[None] + types
        return self.LayerNorm(params["LayerNorm"], x)


class BertSelfAttention(li.Layer):
    """``softmax(q k^T / sqrt(d)) v`` over ``num_attention_heads`` heads, heads concatenated."""

    query: li.Layer
    key: li.Layer
    value: li.Layer
    num_attention_heads: int

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        def heads(name: str) -> jax.Array:
            y = getattr(self, name)(params[name], x)
            return jnp.reshape(y, (*y.shape[:-1], self.num_attention_heads, -1))

        q, k, v = heads("query"), heads("key"), heads("value")
        logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / math.sqrt(q.shape[-1])
        context = jnp.einsum("...hqk,...khd->...qhd", jax.nn.softmax(logits, axis=-1), v)
        return jnp.reshape(context, x.shape[:-1] + (-1,))


class BertSelfOutput(li.Layer):
    """``LayerNorm(x + dense(h))``: also ``BertOutput``, after the feed-forward layer."""

    dense: li.Layer
    LayerNorm: li.Layer

    def __call__(self, params: Any, h: jax.Array, x: jax.Array) -> jax.Array:
        return self.LayerNorm(params["LayerNorm"], x + self.dense(params["dense"], h))


class BertAttention(li.Layer):
    self: li.Layer  # Hugging Face's name: a dataclass field may be called self
    output: li.Layer

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        return self.output(params["output"], self.self(params["self"], x), x)


class BertIntermediate(li.Layer):
    dense: li.Layer
    intermediate_act_fn: li.Layer

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        h = self.dense(params["dense"], x)
        return self.intermediate_act_fn(params["intermediate_act_fn"], h)


class BertLayer(li.Layer):
    attention: li.Layer
    intermediate: li.Layer
    output: li.Layer

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        a = self.attention(params["attention"], x)
        return self.output(params["output"], self.intermediate(params["intermediate"], a), a)


class BertEncoder(li.Layer):
    layer: li.Layer

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        return self.layer(params["layer"], x)


class BertPooler(li.Layer):
    """``tanh(dense(x[:, 0]))``: the first token's state."""

    dense: li.Layer
    activation: li.Layer

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        return self.activation(params["activation"], self.dense(params["dense"], x[..., 0, :]))


class BertModel(li.Layer):
    """``(last_hidden_state, pooler_output)``, as Hugging Face's ``BertModel`` returns them."""

    embeddings: li.Layer
    encoder: li.Layer
    pooler: li.Layer

    def __call__(self, params: Any, input_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = self.encoder(params["encoder"], self.embeddings(params["embeddings"], input_ids))
        return x, self.pooler(params["pooler"], x)


def from_config(config: Any) -> BertModel:
    """The lazyinit BERT of a ``transformers.BertConfig``."""
    d, ln = config.hidden_size, li.LayerNorm(eps=config.layer_norm_eps)
    heads = BertSelfAttention(li.Linear(d), li.Linear(d), li.Linear(d), config.num_attention_heads)
    act = Act(ACTIVATIONS[config.hidden_act])
    layer = BertLayer(
        BertAttention(heads, BertSelfOutput(li.Linear(d), ln)),
        BertIntermediate(li.Linear(config.intermediate_size), act),
        BertSelfOutput(li.Linear(d), ln),
    )
    sizes = (config.vocab_size, config.max_position_embeddings, config.type_vocab_size)
    embeddings = BertEmbeddings(*(li.Embedding(n, d) for n in sizes), ln)
    encoder = BertEncoder(li.Repeat(layer, config.num_hidden_layers))
    return BertModel(embeddings, encoder, BertPooler(li.Linear(d), Act(li.nn.tanh)))


# --- mapping ---
# Nothing: every layer has its torch module's name, and nn.Linear, nn.Embedding and
# nn.LayerNorm are built-in pairs.
# --- end of mapping ---
