"""The three models in haiku, computing the same maths as :mod:`benchmarks.models_jax`.

The decoder uses haiku's own ``MultiHeadAttention`` (fused-head kernels, the same maths).
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

from .common import Impl, Sizes, batch, causal_attention, gelu_tanh, rope, xent
from .models_jax import cnn_plan

lecun = hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")
embed_init = hk.initializers.VarianceScaling(1.0, "fan_in", "normal", fan_in_axes=(1,))
normal = hk.initializers.RandomNormal(0.02)


def _linear(n: int, name: str | None = None) -> hk.Linear:
    return hk.Linear(n, w_init=lecun, name=name)


def _conv(c: int, k: int, stride: int = 1) -> hk.Conv2D:
    p = k // 2
    return hk.Conv2D(c, k, stride, padding=((p, p), (p, p)), with_bias=False, w_init=lecun)


def _bn(x, train: bool):
    return hk.BatchNorm(True, True, 0.9, eps=1e-5)(x, is_training=train)


def _ln(x):
    return hk.LayerNorm(-1, True, True, eps=1e-5)(x)


def mlp(x, widths):
    for i, w in enumerate(widths[1:]):
        x = _linear(w)(x)
        if i < len(widths) - 2:
            x = jax.nn.relu(x)
    return x


def cnn(x, train: bool, sizes: Sizes):
    x = jax.nn.relu(_bn(_conv(sizes.cnn_widths[0], 3)(x), train))
    for name, c_in, c_out, stride in cnn_plan(sizes):
        with hk.name_scope(name):
            h = jax.nn.relu(_bn(_conv(c_out, 3, stride)(x), train))
            h = _bn(_conv(c_out, 3)(h), train)
            if stride != 1 or c_in != c_out:
                x = _bn(_conv(c_out, 1, stride)(x), train)
            x = jax.nn.relu(x + h)
    return _linear(sizes.cnn_classes)(x.mean(axis=(1, 2)))


def gpt(tokens, vocab, width, heads, layers, max_len):
    b, t = tokens.shape
    wte = hk.Embed(vocab, width, w_init=normal, name="wte")
    wpe = hk.get_parameter("wpe", (max_len, width), init=normal)
    x = wte(tokens) + wpe[None, :t]
    mask = jnp.tril(jnp.ones((t, t), bool))[None, None]
    for i in range(layers):
        with hk.name_scope(f"h{i}"):
            h = _ln(x)
            attn = hk.MultiHeadAttention(heads, width // heads, w_init=lecun, model_size=width)
            x = x + attn(h, h, h, mask=mask)
            x = x + _linear(width)(gelu_tanh(_linear(4 * width)(_ln(x))))
    return _ln(x) @ wte.embeddings.T


def build(model: str, sizes: Sizes, layers: int | None = None) -> Impl:
    x, _ = batch(model, sizes)
    if model == "mlp":
        net = hk.transform_with_state(lambda x: mlp(x, sizes.mlp_widths))
    elif model == "cnn":
        net = hk.transform_with_state(lambda x, train=False: cnn(x, train, sizes))
    else:
        cfg = sizes.gpt(layers)
        net = hk.transform_with_state(lambda x: gpt(x, **cfg))

    kw = {"train": True} if model == "cnn" else {}  # haiku creates BatchNorm state in training

    def init(key):
        return net.init(key, x, **kw)

    def abstract_init():
        f = lambda key: net.init(key, x, **kw)  # noqa: E731  (a new function: a new trace)
        return lambda key: jax.eval_shape(f, key)

    def loss(p, s, xb, yb):
        if model == "cnn":
            logits, new = net.apply(p, s, None, xb, train=True)
            return xent(logits, yb), new
        return xent(net.apply(p, s, None, xb)[0], yb), s

    return Impl(
        init=init,
        jit_init=lambda: jax.jit(lambda key: net.init(key, x, **kw)),
        abstract_init=abstract_init,
        apply=lambda v, xb: net.apply(v[0], v[1], None, xb)[0],
        split=lambda v: v,
        loss=loss,
    )


def llama(tokens, vocab, width, heads, layers, hidden):
    b, t = tokens.shape
    x = hk.Embed(vocab, width, w_init=embed_init)(tokens)
    for i in range(layers):
        with hk.name_scope(f"layer{i}"):
            h = hk.RMSNorm(-1, eps=1e-6)(x)
            q, k, v = (
                hk.Linear(width, with_bias=False)(h).reshape(b, t, heads, -1) for _ in range(3)
            )
            x = x + hk.Linear(width, with_bias=False)(
                causal_attention(rope(q), rope(k), v).reshape(b, t, -1)
            )
            h = hk.RMSNorm(-1, eps=1e-6)(x)
            gate = jax.nn.silu(hk.Linear(hidden, with_bias=False)(h)) * hk.Linear(
                hidden, with_bias=False
            )(h)
            x = x + hk.Linear(width, with_bias=False)(gate)
    return hk.Linear(vocab, with_bias=False)(hk.RMSNorm(-1, eps=1e-6)(x))


def llama_abstract(cfg: dict, tokens: jax.ShapeDtypeStruct):
    """A new abstract init of haiku's LLaMA: ``key -> ShapeDtypeStructs``."""
    net = hk.transform(lambda t: llama(t, **cfg))
    f = lambda k, t: net.init(k, t)  # noqa: E731  (a new function: a new trace)
    return lambda key: jax.eval_shape(f, key, tokens)
