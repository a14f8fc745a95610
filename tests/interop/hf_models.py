"""Tiny Hugging Face models built from small configs with random weights (nothing downloaded).

Their lazyinit ports are the reference ports of ``examples/ports/``. ``transformers`` is
imported here only, by the tests that need it (``HF_HUB_OFFLINE=1``). Every weight, norm
scale and bias is perturbed from its initial value, so that a port that swapped or dropped
one (a LayerNorm's ``1`` and ``0``) cannot pass.
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
import transformers  # noqa: E402

VOCAB, POSITIONS, WIDTH, HEADS, LAYERS = 50, 16, 32, 2, 2
IDS = jnp.asarray([[1, 7, 3, 9, 4, 2], [5, 5, 0, 49, 8, 1]], jnp.int32)
PIXELS = np.asarray(np.random.default_rng(0).normal(size=(2, 3, 8, 8)), np.float32)  # NCHW


def perturbed(module: Any, seed: int = 0) -> Any:
    """``module`` in evaluation mode, each parameter moved by noise of scale 0.05."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return module.eval()


def gpt2_config(inner: int | None = None) -> Any:
    return transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=POSITIONS,
        n_embd=WIDTH,
        n_layer=LAYERS,
        n_head=HEADS,
        n_inner=inner,
        bos_token_id=0,
        eos_token_id=0,
    )


def gpt2(inner: int | None = None, seed: int = 0) -> Any:
    """``GPT2LMHeadModel`` (lm_head tied to wte); its MLP is ``inner`` wide (default 4 *
    ``WIDTH``; ``WIDTH`` makes every Conv1D weight square)."""
    torch.manual_seed(seed)
    return perturbed(transformers.GPT2LMHeadModel(gpt2_config(inner)), seed)


def bert_config() -> Any:
    return transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=2 * WIDTH,
        max_position_embeddings=POSITIONS,
    )


def bert(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return perturbed(transformers.BertModel(bert_config()), seed)


def llama_config() -> Any:
    return transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention: 2 query heads per key/value head
        intermediate_size=2 * WIDTH,
        max_position_embeddings=POSITIONS,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=None,
    )


def llama(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return perturbed(transformers.LlamaForCausalLM(llama_config()), seed)


def vit_config() -> Any:
    return transformers.ViTConfig(
        hidden_size=WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=2 * WIDTH,
        image_size=8,
        patch_size=4,
        num_channels=3,
        num_labels=5,
    )


def vit(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return perturbed(transformers.ViTForImageClassification(vit_config()), seed)


def output(module: Any, *inputs: Any) -> np.ndarray:
    """The torch model's logits (or last hidden state) on ``inputs`` (arrays; ids as int64)."""
    arrays = [np.asarray(x) for x in inputs]
    tensors = [torch.from_numpy(a.astype(np.int64) if a.dtype.kind in "iu" else a) for a in arrays]
    with torch.no_grad():
        out = module(*tensors)
    if not isinstance(out, torch.Tensor):
        out = out.logits if hasattr(out, "logits") else out[0]
    return out.numpy()
