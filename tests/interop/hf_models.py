"""Tiny Hugging Face models built from small configs with random weights (nothing downloaded),
and their lazyinit ports, named as the torch modules are.

``transformers`` is imported here only, by the tests that need it (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import lazyinit as li

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402

from lazyinit.interop.torch import attention, register  # noqa: E402

VOCAB, POSITIONS, WIDTH, HEADS, LAYERS = 50, 16, 16, 2, 2


def gpt2(inner: int = 4 * WIDTH) -> Any:
    """``GPT2LMHeadModel`` (lm_head tied to wte), in evaluation mode, with random weights; its
    MLP is ``inner`` wide (``WIDTH``: square Conv1D weights)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=POSITIONS,
        n_embd=WIDTH,
        n_layer=LAYERS,
        n_head=HEADS,
        n_inner=inner,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config).eval()


class GeluTanh(li.Layer):
    """GPT-2's ``gelu_new``: the tanh approximation (a layer, so ``compare`` sees it; its empty
    specs say it has no params, so that the structure is known without a sample)."""

    def specs(self, x: Any) -> dict[str, li.Param]:
        return {}

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=True)


class GeluExact(li.Layer):
    """``nn.GELU()``: the exact erf form."""

    def specs(self, x: Any) -> dict[str, li.Param]:
        return {}

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        return jax.nn.gelu(x, approximate=False)


class MLP(li.Layer):
    c_fc: li.Layer = li.Linear(4 * WIDTH)
    act: li.Layer = GeluTanh()
    c_proj: li.Layer = li.Linear(WIDTH)

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        h = self.act(params["act"], self.c_fc(params["c_fc"], x))
        return self.c_proj(params["c_proj"], h)


class Block(li.Layer):
    ln_1: li.Layer = li.LayerNorm()
    attn: li.Layer = li.MultiHeadAttention(HEADS, causal=True)
    ln_2: li.Layer = li.LayerNorm()
    mlp: li.Layer = MLP()

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        x = x + self.attn(params["attn"], self.ln_1(params["ln_1"], x))
        return x + self.mlp(params["mlp"], self.ln_2(params["ln_2"], x))


class GPT2(li.Layer):
    """GPT-2 as ``GPT2LMHeadModel`` names it under ``transformer.``; the head is ``wte`` attended."""

    wte: li.Layer = li.Embedding(VOCAB, WIDTH)
    wpe: li.Layer = li.Embedding(POSITIONS, WIDTH)
    h: li.Layer = li.Repeat(Block(), LAYERS)
    ln_f: li.Layer = li.LayerNorm()

    def __call__(self, params: Any, ids: jax.Array) -> jax.Array:
        positions = self.wpe(params["wpe"], jnp.arange(ids.shape[-1]))
        x = self.wte(params["wte"], ids) + positions[None]
        x = self.ln_f(params["ln_f"], self.h(params["h"], x))
        return self.wte.attend(params["wte"], x)


def port(inner: int = 4 * WIDTH) -> GPT2:
    """The lazyinit GPT-2 with an MLP ``inner`` wide."""
    block = Block(mlp=MLP(c_fc=li.Linear(inner)))
    return GPT2(h=li.Repeat(block, LAYERS))


def logits(model: Any) -> Any:
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(IDS, np.int64))).logits.numpy()


def register_gpt2() -> None:
    """GPT-2's attention: q/k/v packed in one Conv1D ``c_attn``, the output in ``c_proj``."""
    register(li.MultiHeadAttention, "GPT2Attention")(
        attention(qkv="c_attn.", out="c_proj.", layout="conv1d")
    )


IDS = jnp.asarray([[1, 7, 3, 9, 4, 2], [5, 5, 0, 49, 8, 1]], jnp.int32)
