"""ViT in lazyinit: Hugging Face's ``ViTForImageClassification``, its layers named as there.

The image is cut into patches by a convolution whose kernel and stride are the patch size;
a learned class token is put before the patches and learned position embeddings added.
The model takes PyTorch's ``(N, C, H, W)`` pixels: :func:`lazyinit.channels_first` makes
the patch convolution channels-first. Pre-LayerNorm blocks, exact GELU; the classifier
reads the class token.

``tests/interop/test_ports.py`` checks it against the real model; ``docs/porting.md`` walks a port.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

import lazyinit as li
from lazyinit.interop.torch import attention, register

from . import Act

ACTIVATIONS = {"gelu": li.nn.gelu, "gelu_new": li.nn.gelu_tanh, "relu": li.nn.relu}


class ViTPatchEmbeddings(li.Layer):
    """``(N, C, H, W)`` pixels to ``(N, patches, hidden)``: the projection is a channels-first
    ``Conv`` with kernel and stride the patch size."""

    projection: li.Layer

    def __call__(self, params: Any, pixel_values: jax.Array) -> jax.Array:
        y = self.projection(params["projection"], pixel_values)  # (N, hidden, h, w)
        return jnp.swapaxes(jnp.reshape(y, (*y.shape[:2], -1)), 1, 2)


class ViTEmbeddings(li.Layer):
    """The class token, then the patches, plus the position embeddings (params of its own)."""

    patch_embeddings: li.Layer
    hidden_size: int
    num_patches: int

    def specs(self, pixel_values: Any) -> dict[str, li.Param]:
        init = li.initializers.truncated_normal(0.02)
        return {
            "cls_token": li.Param((1, 1, self.hidden_size), init),
            "position_embeddings": li.Param((1, self.num_patches + 1, self.hidden_size), init),
        }

    def __call__(self, params: Any, pixel_values: jax.Array) -> jax.Array:
        x = self.patch_embeddings(params["patch_embeddings"], pixel_values)
        cls = jnp.broadcast_to(params["cls_token"], (x.shape[0], 1, x.shape[-1]))
        return jnp.concatenate([cls, x], axis=1) + params["position_embeddings"]


class ViTMLP(li.Layer):
    fc1: li.Layer
    activation_fn: li.Layer
    fc2: li.Layer

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        h = self.activation_fn(params["activation_fn"], self.fc1(params["fc1"], x))
        return self.fc2(params["fc2"], h)


class ViTLayer(li.Layer):
    """Pre-LayerNorm: ``x + attention(layernorm_before(x))``, then ``x + mlp(layernorm_after(x))``."""

    attention: li.Layer
    layernorm_before: li.Layer
    layernorm_after: li.Layer
    mlp: li.Layer

    def __call__(self, params: Any, x: jax.Array) -> jax.Array:
        x = x + self.attention(
            params["attention"], self.layernorm_before(params["layernorm_before"], x)
        )
        return x + self.mlp(params["mlp"], self.layernorm_after(params["layernorm_after"], x))


class ViTModel(li.Layer):
    embeddings: li.Layer
    layers: li.Layer
    layernorm: li.Layer

    def __call__(self, params: Any, pixel_values: jax.Array) -> jax.Array:
        x = self.layers(params["layers"], self.embeddings(params["embeddings"], pixel_values))
        return self.layernorm(params["layernorm"], x)


class ViTForImageClassification(li.Layer):
    vit: li.Layer
    classifier: li.Layer

    def __call__(self, params: Any, pixel_values: jax.Array) -> jax.Array:
        x = self.vit(params["vit"], pixel_values)
        return self.classifier(params["classifier"], x[:, 0])


def from_config(config: Any) -> ViTForImageClassification:
    """The lazyinit ViT of a ``transformers.ViTConfig``, taking ``(N, C, H, W)`` pixels."""
    d, p, ln = config.hidden_size, config.patch_size, li.LayerNorm(eps=config.layer_norm_eps)
    patches = ViTPatchEmbeddings(li.Conv(d, (p, p), stride=p))  # a tuple: 2-d without a sample
    embeddings = ViTEmbeddings(patches, d, (config.image_size // p) ** 2)
    mlp = ViTMLP(
        li.Linear(config.intermediate_size), Act(ACTIVATIONS[config.hidden_act]), li.Linear(d)
    )
    attn = li.MultiHeadAttention(config.num_attention_heads, use_bias=config.qkv_bias)
    layers = li.Repeat(ViTLayer(attn, ln, ln, mlp), config.num_hidden_layers)
    model = ViTForImageClassification(
        ViTModel(embeddings, layers, ln), li.Linear(config.num_labels)
    )
    return li.channels_first(model)


# --- mapping ---
register(li.MultiHeadAttention, "ViTAttention")(
    attention(q="q_proj.", k="k_proj.", v="v_proj.", out="o_proj.")
)
# --- end of mapping ---
