"""Five reference ports of PyTorch models to lazyinit, each proven equal to the real model.

Each module holds a model's architecture, its layers named as the Hugging Face (or
torchvision) modules are, so that the converters pair them by name, and its conversion
rules between the marker comments ``# --- mapping ---`` and ``# --- end of mapping ---``
(``tests/interop/test_ports.py`` counts those lines; ``docs/porting.md`` quotes them):

* :mod:`~examples.ports.gpt2`: ``GPT2LMHeadModel`` (Conv1D, fused ``c_attn``, tied ``lm_head``);
* :mod:`~examples.ports.bert`: ``BertModel`` (exact GELU, post-LayerNorm);
* :mod:`~examples.ports.llama`: ``LlamaForCausalLM`` (RMSNorm, SwiGLU, rotary, grouped-query
  attention, untied head);
* :mod:`~examples.ports.vit`: ``ViTForImageClassification`` (patch convolution, class token,
  position embeddings; PyTorch's NCHW pixels);
* :mod:`~examples.ports.resnet`: a torchvision-style ResNet (conv/BatchNorm blocks, NCHW).

The transformer ports are built from the Hugging Face config (``from_config(config)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

import lazyinit as li


class Act(li.Layer):
    """An activation function as a layer without params, named as the torch activation module
    (``act``, ``intermediate_act_fn``) so that ``compare`` pairs and checks its output."""

    fn: Callable[[jax.Array], jax.Array]

    def specs(self, x: Any) -> dict[str, li.Param]:
        return {}

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        return self.fn(x)
