"""The three models in flax.linen, computing the same maths as :mod:`benchmarks.models_jax`.

The decoder uses flax's own ``MultiHeadDotProductAttention``, the formulation lazyinit's
``MultiHeadAttention`` follows.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from .common import Impl, Sizes, batch, causal_attention, gelu_tanh, rope, xent
from .models_jax import cnn_plan


class MLP(nn.Module):
    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for i, w in enumerate(self.widths[1:]):
            x = nn.Dense(w)(x)
            if i < len(self.widths) - 2:
                x = nn.relu(x)
        return x


def _bn(train: bool) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)


def _conv(c: int, k: int, stride: int = 1) -> nn.Conv:
    p = k // 2
    return nn.Conv(c, (k, k), (stride, stride), padding=((p, p), (p, p)), use_bias=False)


class Block(nn.Module):
    width: int
    stride: int
    project: bool

    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.relu(_bn(train)(_conv(self.width, 3, self.stride)(x)))
        h = _bn(train)(_conv(self.width, 3)(h))
        if self.project:
            x = _bn(train)(_conv(self.width, 1, self.stride)(x))
        return nn.relu(x + h)


class CNN(nn.Module):
    sizes: Sizes

    @nn.compact
    def __call__(self, x, train: bool = False):
        w0 = self.sizes.cnn_widths[0]
        x = nn.relu(_bn(train)(_conv(w0, 3)(x)))
        for _, c_in, c_out, stride in cnn_plan(self.sizes):
            x = Block(c_out, stride, stride != 1 or c_in != c_out)(x, train)
        return nn.Dense(self.sizes.cnn_classes)(x.mean(axis=(1, 2)))


class Decoder(nn.Module):
    width: int
    heads: int

    @nn.compact
    def __call__(self, x, mask):
        x = x + nn.MultiHeadDotProductAttention(self.heads)(
            nn.LayerNorm(epsilon=1e-5)(x), mask=mask
        )
        h = gelu_tanh(nn.Dense(4 * self.width)(nn.LayerNorm(epsilon=1e-5)(x)))
        return x + nn.Dense(self.width)(h)


class GPT(nn.Module):
    vocab: int
    width: int
    heads: int
    layers: int
    max_len: int

    @nn.compact
    def __call__(self, tokens):
        wte = nn.Embed(self.vocab, self.width, embedding_init=nn.initializers.normal(0.02))
        wpe = self.param("wpe", nn.initializers.normal(0.02), (self.max_len, self.width))
        x = wte(tokens) + wpe[None, : tokens.shape[1]]
        mask = nn.make_causal_mask(tokens)
        for _ in range(self.layers):
            x = Decoder(self.width, self.heads)(x, mask)
        return wte.attend(nn.LayerNorm(epsilon=1e-5)(x))


def build(model: str, sizes: Sizes, layers: int | None = None) -> Impl:
    x, _ = batch(model, sizes)
    kw: dict[str, Any] = {}
    if model == "mlp":
        net: nn.Module = MLP(sizes.mlp_widths)
    elif model == "cnn":
        net, kw = CNN(sizes), {"train": False}
    else:
        net = GPT(**sizes.gpt(layers))

    def init(key):
        return net.init(key, x, **kw)

    def abstract_init():
        f = lambda key: net.init(key, x, **kw)  # noqa: E731  (a new function: a new trace)
        return lambda key: jax.eval_shape(f, key)

    def split(v):
        return v["params"], {k: c for k, c in v.items() if k != "params"}

    def loss(p, s, xb, yb):
        if model == "cnn":
            logits, new = net.apply({"params": p, **s}, xb, train=True, mutable=["batch_stats"])
            return xent(logits, yb), new
        return xent(net.apply({"params": p}, xb), yb), s

    return Impl(
        init=init,
        jit_init=lambda: jax.jit(lambda key: net.init(key, x, **kw)),
        abstract_init=abstract_init,
        apply=lambda v, xb: net.apply(v, xb, **kw),
        split=split,
        loss=loss,
    )


class LlamaLayer(nn.Module):
    width: int
    heads: int
    hidden: int

    @nn.compact
    def __call__(self, x):
        b, t, _ = x.shape
        h = nn.RMSNorm(epsilon=1e-6)(x)
        q, k, v = (
            nn.Dense(self.width, use_bias=False)(h).reshape(b, t, self.heads, -1) for _ in range(3)
        )
        x = x + nn.Dense(self.width, use_bias=False)(
            causal_attention(rope(q), rope(k), v).reshape(b, t, -1)
        )
        h = nn.RMSNorm(epsilon=1e-6)(x)
        gate = jax.nn.silu(nn.Dense(self.hidden, use_bias=False)(h)) * nn.Dense(
            self.hidden, use_bias=False
        )(h)
        return x + nn.Dense(self.width, use_bias=False)(gate)


class Llama(nn.Module):
    vocab: int
    width: int
    heads: int
    layers: int
    hidden: int

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(self.vocab, self.width)(tokens)
        for _ in range(self.layers):
            x = LlamaLayer(self.width, self.heads, self.hidden)(x)
        return nn.Dense(self.vocab, use_bias=False)(nn.RMSNorm(epsilon=1e-6)(x))


def llama_abstract(cfg: dict, tokens: jax.ShapeDtypeStruct):
    """A new abstract init of flax's LLaMA: ``key -> ShapeDtypeStructs``."""
    net = Llama(**cfg)
    f = lambda k, t: net.init(k, t)  # noqa: E731  (a new function: a new trace)
    return lambda key: jax.eval_shape(f, key, tokens)
