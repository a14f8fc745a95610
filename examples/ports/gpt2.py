"""GPT-2 in lazyinit: Hugging Face's ``GPT2LMHeadModel``, its layers named as there.

The projections are Hugging Face ``Conv1D`` modules, whose weights are stored
``(in, out)``; passing the torch module lets each ``li.Linear`` be converted by that type.
The attention's q/k/v are packed in one ``c_attn``, and ``lm_head`` is tied to
``transformer.wte``: here the head *is* ``wte`` attended, and the tie is found from the
module's shared storage (import checks the copies are equal; export writes both names).

``tests/interop/test_ports.py`` checks it against the real model; ``docs/porting.md`` walks a port.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

import lazyinit as li
from lazyinit.interop.torch import attention, register

from . import Act

ACTIVATIONS = {
    "gelu_new": li.nn.gelu_tanh,
    "gelu_pytorch_tanh": li.nn.gelu_tanh,
    "gelu": li.nn.gelu,
}


class GPT2MLP(li.Layer):
    c_fc: li.Layer
    act: li.Layer
    c_proj: li.Layer

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        h = self.act(params["act"], self.c_fc(params["c_fc"], x))
        return self.c_proj(params["c_proj"], h)


class GPT2Block(li.Layer):
    """Pre-LayerNorm: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    ln_1: li.Layer
    attn: li.Layer
    ln_2: li.Layer
    mlp: li.Layer

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        x = x + self.attn(params["attn"], self.ln_1(params["ln_1"], x))
        return x + self.mlp(params["mlp"], self.ln_2(params["ln_2"], x))


class GPT2Model(li.Layer):
    wte: li.Layer
    wpe: li.Layer
    h: li.Layer
    ln_f: li.Layer

    def __call__(self, params: Any, input_ids: jax.Array) -> jax.Array:
        positions = self.wpe(params["wpe"], jnp.arange(input_ids.shape[-1]))
        x = self.wte(params["wte"], input_ids) + positions[None]
        return self.ln_f(params["ln_f"], self.h(params["h"], x))


class GPT2LMHeadModel(li.Layer):
    transformer: li.Layer

    def __call__(self, params: Any, input_ids: jax.Array) -> jax.Array:
        h = self.transformer(params["transformer"], input_ids)
        return self.transformer.wte.attend(params["transformer"]["wte"], h)  # lm_head: tied


def from_config(config: Any) -> GPT2LMHeadModel:
    """The lazyinit GPT-2 of a ``transformers.GPT2Config``."""
    d = config.n_embd
    ln = li.LayerNorm(eps=config.layer_norm_epsilon)
    act = Act(ACTIVATIONS[config.activation_function])
    mlp = GPT2MLP(li.Linear(config.n_inner or 4 * d), act, li.Linear(d))
    block = GPT2Block(ln, li.MultiHeadAttention(config.n_head, causal=True), ln, mlp)
    wte, wpe = li.Embedding(config.vocab_size, d), li.Embedding(config.n_positions, d)
    return GPT2LMHeadModel(GPT2Model(wte, wpe, li.Repeat(block, config.n_layer), ln))


# --- mapping ---
# Conv1D projections and the tied head need nothing: the module's types and storage say.
register(li.MultiHeadAttention, "GPT2Attention")(
    attention(qkv="c_attn.", out="c_proj.", layout="conv1d")
)
# --- end of mapping ---
