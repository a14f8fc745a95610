"""The three models in equinox, computing the same maths as :mod:`benchmarks.models_jax`.

Equinox layers act on one example, so the models are written per example and vmapped over the
batch (images are channels-first inside, as ``eqx.nn.Conv2d`` wants); the decoder uses equinox's
own ``MultiheadAttention``. Its initializers are its own (uniform), as a user gets them.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .common import Impl, Sizes, batch, gelu_tanh, xent
from .models_jax import cnn_plan


def _tokens(layer: Any, x: jax.Array) -> jax.Array:
    """A per-vector layer over the leading axis of ``x``."""
    return jax.vmap(layer)(x)


class MLP(eqx.Module):
    layers: list

    def __init__(self, widths: tuple[int, ...], key: jax.Array):
        keys = jax.random.split(key, len(widths) - 1)
        self.layers = [eqx.nn.Linear(a, b, key=k) for a, b, k in zip(widths[:-1], widths[1:], keys)]

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


def _bn(c: int) -> eqx.nn.BatchNorm:
    return eqx.nn.BatchNorm(c, "batch", eps=1e-5, momentum=0.9, mode="ema")


def _conv(c_in: int, c_out: int, k: int, stride: int, key: jax.Array) -> eqx.nn.Conv2d:
    return eqx.nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, use_bias=False, key=key)


class Block(eqx.Module):
    conv1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    bn2: eqx.nn.BatchNorm
    proj: eqx.nn.Conv2d | None
    proj_bn: eqx.nn.BatchNorm | None

    def __init__(self, c_in: int, c_out: int, stride: int, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1, self.bn1 = _conv(c_in, c_out, 3, stride, k1), _bn(c_out)
        self.conv2, self.bn2 = _conv(c_out, c_out, 3, 1, k2), _bn(c_out)
        project = stride != 1 or c_in != c_out
        self.proj = _conv(c_in, c_out, 1, stride, k3) if project else None
        self.proj_bn = _bn(c_out) if project else None

    def __call__(self, x, state):
        h, state = self.bn1(self.conv1(x), state)
        h, state = self.bn2(self.conv2(jax.nn.relu(h)), state)
        if self.proj is not None:
            x, state = self.proj_bn(self.proj(x), state)
        return jax.nn.relu(x + h), state


class CNN(eqx.Module):
    stem: eqx.nn.Conv2d
    stem_bn: eqx.nn.BatchNorm
    blocks: list
    head: eqx.nn.Linear

    def __init__(self, sizes: Sizes, key: jax.Array):
        plan = cnn_plan(sizes)
        keys = jax.random.split(key, len(plan) + 2)
        w0 = sizes.cnn_widths[0]
        self.stem, self.stem_bn = _conv(3, w0, 3, 1, keys[0]), _bn(w0)
        self.blocks = [Block(a, b, s, k) for (_, a, b, s), k in zip(plan, keys[2:])]
        self.head = eqx.nn.Linear(sizes.cnn_widths[-1], sizes.cnn_classes, key=keys[1])

    def __call__(self, x, state):
        x, state = self.stem_bn(self.stem(jnp.transpose(x, (2, 0, 1))), state)
        x = jax.nn.relu(x)
        for block in self.blocks:
            x, state = block(x, state)
        return self.head(x.mean(axis=(1, 2))), state


class Decoder(eqx.Module):
    ln1: eqx.nn.LayerNorm
    attn: eqx.nn.MultiheadAttention
    ln2: eqx.nn.LayerNorm
    fc: eqx.nn.Linear
    out: eqx.nn.Linear

    def __init__(self, width: int, heads: int, key: jax.Array):
        k = jax.random.split(key, 3)
        self.ln1, self.ln2 = eqx.nn.LayerNorm(width, eps=1e-5), eqx.nn.LayerNorm(width, eps=1e-5)
        bias = dict(
            use_query_bias=True, use_key_bias=True, use_value_bias=True, use_output_bias=True
        )
        self.attn = eqx.nn.MultiheadAttention(heads, width, **bias, key=k[0])
        self.fc, self.out = (
            eqx.nn.Linear(width, 4 * width, key=k[1]),
            eqx.nn.Linear(4 * width, width, key=k[2]),
        )

    def __call__(self, x):  # (time, width)
        h = _tokens(self.ln1, x)
        x = x + self.attn(h, h, h, mask=jnp.tril(jnp.ones((x.shape[0], x.shape[0]), bool)))
        return x + _tokens(self.out, gelu_tanh(_tokens(self.fc, _tokens(self.ln2, x))))


class GPT(eqx.Module):
    wte: eqx.nn.Embedding
    wpe: eqx.nn.Embedding
    blocks: list
    ln_f: eqx.nn.LayerNorm

    def __init__(self, vocab, width, heads, layers, max_len, key):
        keys = jax.random.split(key, layers + 2)
        self.wte = eqx.nn.Embedding(vocab, width, key=keys[0])
        self.wpe = eqx.nn.Embedding(max_len, width, key=keys[1])  # equinox draws normal(0, 1)
        self.blocks = [Decoder(width, heads, k) for k in keys[2:]]
        self.ln_f = eqx.nn.LayerNorm(width, eps=1e-5)

    def __call__(self, tokens):  # (time,)
        x = self.wte.weight[tokens] + self.wpe.weight[: tokens.shape[0]]
        for block in self.blocks:
            x = block(x)
        return _tokens(self.ln_f, x) @ self.wte.weight.T


def build(model: str, sizes: Sizes, layers: int | None = None) -> Impl:
    static: dict[str, Any] = {}
    if model == "mlp":

        def make(key):
            return MLP(sizes.mlp_widths, key), None
    elif model == "cnn":

        def make(key):
            return eqx.nn.make_with_state(CNN)(sizes, key)
    else:
        cfg = sizes.gpt(layers)

        def make(key):
            return GPT(**cfg, key=key), None

    def run(net, state, x, train):
        if model != "cnn":
            return jax.vmap(net)(x), state
        net = net if train else eqx.nn.inference_mode(net)
        return jax.vmap(net, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)

    def split(v):
        params, static["net"] = eqx.partition(v[0], eqx.is_inexact_array)
        return params, v[1]

    def loss(p, s, xb, yb):
        logits, new = run(eqx.combine(p, static["net"]), s, xb, True)
        return xent(logits, yb), new

    def abstract_init():
        f = lambda key: make(key)  # noqa: E731  (a new function: a new trace)
        return lambda key: eqx.filter_eval_shape(f, key)

    return Impl(
        init=make,
        jit_init=lambda: eqx.filter_jit(lambda key: make(key)),
        abstract_init=abstract_init,
        apply=lambda v, xb: run(v[0], v[1], xb, False)[0],
        split=split,
        loss=loss,
    )


__all__ = ["build", "batch"]
