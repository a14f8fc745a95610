"""Reference models written with lazyinit's layers, each in about a page.

Benchmarks, notebooks and the sharding planner use them; none of them states
an input size that the dry run can infer. Parameters carry logical axis names
(``'embed'``, ``'mlp'``, ``'heads'``, ``'kv'``, ``'vocab'``) for sharding rules.

* :func:`mlp`: 784-512-512-10 on flattened MNIST-sized inputs.
* :func:`resnet_cnn`: a ResNet-18 for 32x32x3 images (CIFAR), BatchNorm, ~11.2M params.
* :func:`gpt_decoder`: GPT-2 small by default (124M params), pre-LN blocks,
  learned positions, causal attention, a 4x GELU MLP, and an output head tied
  to the token embedding (``tie_head=False`` for a separate ``head``).
* :func:`llama_decoder`: Llama-7B by default (6.74B params): RMSNorm, SwiGLU
  MLP, causal attention without biases, rotary positions (``rotary=False``
  to drop them), an untied head.

>>> import jax, jax.numpy as jnp, lazyinit as li
>>> gpt = gpt_decoder(num_layers=2, d_model=16, num_heads=2, vocab=50, max_len=8)
>>> params = li.dry_run(gpt, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
>>> gpt(params, jnp.zeros((1, 8), jnp.int32)).shape
(1, 8, 50)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

import lazyinit as li

__all__ = ["mlp", "resnet_cnn", "gpt_decoder", "llama_decoder"]

Params = Any


def mlp(hidden: tuple[int, ...] = (512, 512), num_classes: int = 10) -> li.Layer:
    """784-512-512-10 (the input size is inferred; images are flattened first)."""
    layers: list[Any] = [li.Flatten()]
    for width in hidden:
        layers += [li.Linear(width), li.nn.relu]
    return li.Sequential([*layers, li.Linear(num_classes, axes=("mlp", "vocab"))])


# ---------------------------------------------------------------------------
# ResNet-18 for CIFAR-sized images (channels-last).


class BasicBlock(li.Layer):
    """Two 3x3 conv + BatchNorm, added to the input or to its 1x1 projection."""

    main: li.Layer
    shortcut: li.Layer | None = None

    def __call__(self, params: Params, x: jax.Array, *, train: bool = False) -> jax.Array:
        y = self.main(params["main"], x, train=train)
        s = x if self.shortcut is None else self.shortcut(params["shortcut"], x, train=train)
        return jax.nn.relu(y + s)


def basic_block(channels: int, stride: int = 1, project: bool = False) -> BasicBlock:
    def conv(k: int, s: int) -> li.Conv:
        return li.Conv(channels, (k, k), stride=s, padding=k // 2, use_bias=False)

    main = li.Sequential([conv(3, stride), li.BatchNorm(), li.nn.relu, conv(3, 1), li.BatchNorm()])
    shortcut = li.Sequential([conv(1, stride), li.BatchNorm()]) if project else None
    return BasicBlock(main, shortcut)


def resnet_cnn(
    num_classes: int = 10,
    widths: tuple[int, ...] = (64, 128, 256, 512),
    blocks_per_stage: int = 2,
) -> li.Layer:
    """ResNet-18 on ``(N, 32, 32, 3)``: 11,173,962 params with the defaults. Call with ``train=``."""
    layers: list[Any] = [li.Conv(widths[0], (3, 3), padding=1, use_bias=False)]
    layers += [li.BatchNorm(), li.nn.relu]
    for stage, width in enumerate(widths):
        for i in range(blocks_per_stage):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(basic_block(width, stride, project=stage > 0 and i == 0))
    return li.Sequential([*layers, li.GlobalAvgPool(), li.Linear(num_classes)])


# ---------------------------------------------------------------------------
# Decoders. Both take token ids (batch, length) and return logits (batch, length, vocab).


class Block(li.Layer):
    """A pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    attn_norm: li.Layer
    attn: li.Layer
    mlp_norm: li.Layer
    mlp: li.Layer
    dropout: li.Layer = li.Dropout(0.0)

    def __call__(
        self, params: Params, x: jax.Array, *, train: bool = False, key: jax.Array | None = None
    ) -> jax.Array:
        keys = (
            (None, None)
            if key is None
            else (jax.random.fold_in(key, 0), jax.random.fold_in(key, 1))
        )
        h = self.attn(params["attn"], self.attn_norm(params["attn_norm"], x))
        x = x + self.dropout(params.get("dropout", {}), h, train=train, key=keys[0])
        h = self.mlp(params["mlp"], self.mlp_norm(params["mlp_norm"], x))
        return x + self.dropout(params.get("dropout", {}), h, train=train, key=keys[1])


class SwiGLU(li.Layer):
    """``down(silu(gate(x)) * up(x))``, Llama's MLP."""

    gate: li.Layer
    up: li.Layer
    down: li.Layer

    def __call__(self, params: Params, x: jax.Array) -> jax.Array:
        h = jax.nn.silu(self.gate(params["gate"], x)) * self.up(params["up"], x)
        return self.down(params["down"], h)


class Decoder(li.Layer):
    """Token embedding (+ learned positions), blocks, final norm, and a head (tied when ``None``)."""

    embed: li.Embedding
    blocks: li.Layer
    norm: li.Layer
    positions: li.Embedding | None = None
    head: li.Layer | None = None

    def __call__(
        self, params: Params, ids: jax.Array, *, train: bool = False, key: jax.Array | None = None
    ) -> jax.Array:
        x = self.embed(params["embed"], ids)
        if self.positions is not None:
            length = ids.shape[-1]
            if length > self.positions.num_embeddings:
                raise li.errors.InferShapeError(
                    f"Decoder: sequences of {length} tokens exceed max_len="
                    f"{self.positions.num_embeddings} learned positions."
                )
            pos = self.positions(params["positions"], jnp.arange(length))
            x = x + jnp.reshape(pos, (1,) * (x.ndim - 2) + pos.shape)
        x = self.norm(params["norm"], self.blocks(params["blocks"], x, train=train, key=key))
        return (
            self.embed.attend(params["embed"], x)
            if self.head is None
            else self.head(params["head"], x)
        )


def gpt_decoder(
    num_layers: int = 12,
    d_model: int = 768,
    num_heads: int = 12,
    vocab: int = 50257,
    max_len: int = 1024,
    *,
    dropout: float = 0.0,
    tie_head: bool = True,
) -> li.Layer:
    """GPT-2 (small by default: 124,439,808 params): tied head unless ``tie_head=False``."""

    def block() -> Block:
        mlp = li.Sequential(
            [li.Linear(4 * d_model), li.nn.gelu_tanh, li.Linear(d_model, axes=("mlp", "embed"))]
        )
        attn = li.MultiHeadAttention(num_heads, causal=True)
        return Block(li.LayerNorm(), attn, li.LayerNorm(), mlp, li.Dropout(dropout))

    return Decoder(
        embed=li.Embedding(vocab, d_model),  # N(0, 0.02), GPT-2's: the tied head starts small
        blocks=li.Sequential([block() for _ in range(num_layers)]),
        norm=li.LayerNorm(),
        positions=li.Embedding(max_len, d_model, axes=(None, "embed")),
        head=None if tie_head else li.Linear(vocab, use_bias=False, axes=("embed", "vocab")),
    )


def llama_decoder(
    num_layers: int = 32,
    d_model: int = 4096,
    num_heads: int = 32,
    ffn: int = 11008,
    vocab: int = 32000,
    *,
    rotary: bool = True,
) -> li.Layer:
    """Llama (7B by default: 6,738,415,616 params): RMSNorm, SwiGLU, rotary, no biases, untied head."""

    def block() -> Block:
        attn = li.MultiHeadAttention(num_heads, use_bias=False, causal=True, rotary=rotary)
        mlp = SwiGLU(
            gate=li.Linear(ffn, use_bias=False),
            up=li.Linear(ffn, use_bias=False),
            down=li.Linear(d_model, use_bias=False, axes=("mlp", "embed")),
        )
        return Block(li.RMSNorm(eps=1e-5), attn, li.RMSNorm(eps=1e-5), mlp)

    return Decoder(
        embed=li.Embedding(vocab, d_model),
        blocks=li.Sequential([block() for _ in range(num_layers)]),
        norm=li.RMSNorm(eps=1e-5),
        head=li.Linear(vocab, use_bias=False, axes=("embed", "vocab")),
    )
