"""The baseline: the three models written by hand in plain JAX, parameters as nested dicts.

Initializers are those of ``examples/models.py`` (lecun-normal kernels, zero biases, normal(0.02)
embeddings, unit scales), one key per leaf from ``jax.random.split``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .common import Impl, Sizes, batch, causal_attention, gelu_tanh, rms_norm, rope, xent

lecun = jax.nn.initializers.lecun_normal()
embed_init = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
normal = jax.nn.initializers.normal(0.02)
zeros, ones = jax.nn.initializers.zeros, jax.nn.initializers.ones


class Leaf:
    """A parameter to draw: its shape and initializer (a pytree leaf)."""

    def __init__(self, shape: tuple[int, ...], init: Any):
        self.shape, self.init = shape, init


def materialize(specs: Any, key: jax.Array) -> Any:
    leaves, treedef = jax.tree.flatten(specs)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [l.init(k, l.shape) for l, k in zip(leaves, keys)])


def dense(n_in: int, n_out: int, bias: bool = True) -> dict[str, Leaf]:
    d = {"kernel": Leaf((n_in, n_out), lecun)}
    if bias:
        d["bias"] = Leaf((n_out,), zeros)
    return d


def apply_dense(p: dict, x: jax.Array) -> jax.Array:
    y = x @ p["kernel"]
    return y + p["bias"].reshape((1,) * (y.ndim - 1) + (-1,)) if "bias" in p else y


# ---------------------------------------------------------------------------
# M1: MLP.


def mlp_specs(widths: tuple[int, ...]) -> dict:
    return {f"fc{i}": dense(a, b) for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))}


def mlp_apply(params: dict, x: jax.Array) -> jax.Array:
    n = len(params)
    for i in range(n):
        x = apply_dense(params[f"fc{i}"], x)
        if i < n - 1:
            x = jax.nn.relu(x)
    return x


# ---------------------------------------------------------------------------
# M2: ResNet-18-style CNN (NHWC, BatchNorm with PyTorch's momentum 0.1, eps 1e-5).


def conv_leaf(k: int, c_in: int, c_out: int) -> Leaf:
    return Leaf((k, k, c_in, c_out), lecun)


def conv(kernel: jax.Array, x: jax.Array, stride: int) -> jax.Array:
    p = kernel.shape[0] // 2  # PyTorch's padding=k//2, as examples/models.py
    return lax.conv_general_dilated(
        x, kernel, (stride, stride), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def bn_specs(c: int) -> tuple[dict, dict]:
    return {"scale": Leaf((c,), ones), "bias": Leaf((c,), zeros)}, {
        "mean": Leaf((c,), zeros),
        "var": Leaf((c,), ones),
    }


def batch_norm(p: dict, s: dict, x: jax.Array, train: bool) -> tuple[jax.Array, dict]:
    if train:  # PyTorch's rule, as li.BatchNorm: the running variance is the unbiased one
        mean = x.mean(axis=(0, 1, 2))
        var = jnp.square(x - mean[None, None, None]).mean(axis=(0, 1, 2))
        n = x.size // x.shape[-1]
        new = {
            "mean": 0.9 * s["mean"] + 0.1 * mean,
            "var": 0.9 * s["var"] + 0.1 * var * (n / (n - 1)),
        }
        s = jax.tree.map(lax.stop_gradient, new)
    else:
        mean, var = s["mean"], s["var"]
    y = (x - mean[None, None, None]) * lax.rsqrt(var + 1e-5)[None, None, None]
    return y * p["scale"][None, None, None] + p["bias"][None, None, None], s


def cnn_plan(sizes: Sizes) -> list[tuple[str, int, int, int]]:
    """``(name, c_in, c_out, stride)`` of every residual block."""
    plan, c_in = [], sizes.cnn_widths[0]
    for i, w in enumerate(sizes.cnn_widths):
        for j in range(sizes.cnn_blocks):
            plan.append((f"s{i}b{j}", c_in, w, 2 if (i > 0 and j == 0) else 1))
            c_in = w
    return plan


def cnn_specs(sizes: Sizes) -> tuple[dict, dict]:
    w0 = sizes.cnn_widths[0]
    params, state = {"stem": {"conv": conv_leaf(3, 3, w0)}}, {"stem": {}}
    params["stem"]["bn"], state["stem"]["bn"] = bn_specs(w0)
    for name, c_in, c_out, stride in cnn_plan(sizes):
        p, s = {"conv1": conv_leaf(3, c_in, c_out), "conv2": conv_leaf(3, c_out, c_out)}, {}
        p["bn1"], s["bn1"] = bn_specs(c_out)
        p["bn2"], s["bn2"] = bn_specs(c_out)
        if stride != 1 or c_in != c_out:
            p["proj"] = conv_leaf(1, c_in, c_out)
            p["proj_bn"], s["proj_bn"] = bn_specs(c_out)
        params[name], state[name] = p, s
    params["head"] = dense(sizes.cnn_widths[-1], sizes.cnn_classes)
    return params, state


def cnn_apply(params: dict, state: dict, x: jax.Array, train: bool, sizes: Sizes):
    new: dict = {"stem": {}}
    x = conv(params["stem"]["conv"], x, 1)
    x, new["stem"]["bn"] = batch_norm(params["stem"]["bn"], state["stem"]["bn"], x, train)
    x = jax.nn.relu(x)
    for name, _, _, stride in cnn_plan(sizes):
        p, s, n = params[name], state[name], {}
        h = conv(p["conv1"], x, stride)
        h, n["bn1"] = batch_norm(p["bn1"], s["bn1"], h, train)
        h = conv(p["conv2"], jax.nn.relu(h), 1)
        h, n["bn2"] = batch_norm(p["bn2"], s["bn2"], h, train)
        if "proj" in p:
            x, n["proj_bn"] = batch_norm(
                p["proj_bn"], s["proj_bn"], conv(p["proj"], x, stride), train
            )
        x, new[name] = jax.nn.relu(x + h), n
    return apply_dense(params["head"], x.mean(axis=(1, 2))), new


# ---------------------------------------------------------------------------
# M3: GPT-2-style decoder: pre-norm, flax-style attention (separate query/key/value kernels of
# (width, heads, head_dim)), learned positions, output head tied to the token embedding.


def ln_specs(d: int) -> dict:
    return {"scale": Leaf((d,), ones), "bias": Leaf((d,), zeros)}


def layer_norm(p: dict, x: jax.Array) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * lax.rsqrt(var + 1e-5)
    shape = (1,) * (x.ndim - 1) + (-1,)
    return y * p["scale"].reshape(shape) + p["bias"].reshape(shape)


heads_in = jax.nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
heads_out = jax.nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)


def attn_specs(width: int, heads: int) -> dict:
    hd = width // heads
    proj = {
        n: {"kernel": Leaf((width, heads, hd), heads_in), "bias": Leaf((heads, hd), zeros)}
        for n in ("query", "key", "value")
    }
    return {
        **proj,
        "out": {"kernel": Leaf((heads, hd, width), heads_out), "bias": Leaf((width,), zeros)},
    }


def attention(p: dict, x: jax.Array) -> jax.Array:
    q, k, v = (
        jnp.einsum("btf,fhd->bthd", x, p[n]["kernel"]) + p[n]["bias"][None, None]
        for n in ("query", "key", "value")
    )
    t, d = x.shape[1], q.shape[-1]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q / np.float32(np.sqrt(d)), k)
    logits = jnp.where(
        jnp.tril(jnp.ones((t, t), bool))[None, None], logits, jnp.finfo(logits.dtype).min
    )
    o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)
    return jnp.einsum("bqhd,hdf->bqf", o, p["out"]["kernel"]) + p["out"]["bias"][None, None]


def gpt_specs(vocab: int, width: int, heads: int, layers: int, max_len: int) -> dict:
    specs: dict = {"wte": Leaf((vocab, width), normal), "wpe": Leaf((max_len, width), normal)}
    for i in range(layers):
        specs[f"h{i}"] = {
            "ln1": ln_specs(width),
            "attn": attn_specs(width, heads),
            "ln2": ln_specs(width),
            "mlp": {"fc": dense(width, 4 * width), "proj": dense(4 * width, width)},
        }
    specs["ln_f"] = ln_specs(width)
    return specs


def gpt_apply(params: dict, tokens: jax.Array, heads: int) -> jax.Array:
    t = tokens.shape[1]
    x = jnp.take(params["wte"], tokens, axis=0) + params["wpe"][None, :t]
    for i in range(sum(k.startswith("h") for k in params)):
        p = params[f"h{i}"]
        x = x + attention(p["attn"], layer_norm(p["ln1"], x))
        h = gelu_tanh(apply_dense(p["mlp"]["fc"], layer_norm(p["ln2"], x)))
        x = x + apply_dense(p["mlp"]["proj"], h)
    return jnp.einsum("btf,vf->btv", layer_norm(params["ln_f"], x), params["wte"])


# ---------------------------------------------------------------------------
# LLaMA-shaped decoder (abstract planning only): RMSNorm, rotary attention, SwiGLU, no biases.


def llama_specs(vocab: int, width: int, heads: int, layers: int, hidden: int) -> dict:
    specs: dict = {"embed": Leaf((vocab, width), embed_init)}
    for i in range(layers):
        specs[f"layer{i}"] = {
            "attn_norm": {"scale": Leaf((width,), ones)},
            **{n: Leaf((width, width), lecun) for n in ("wq", "wk", "wv", "wo")},
            "ffn_norm": {"scale": Leaf((width,), ones)},
            "w1": Leaf((width, hidden), lecun),
            "w3": Leaf((width, hidden), lecun),
            "w2": Leaf((hidden, width), lecun),
        }
    specs["norm"] = {"scale": Leaf((width,), ones)}
    specs["head"] = Leaf((width, vocab), lecun)
    return specs


def llama_apply(params: dict, tokens: jax.Array, heads: int) -> jax.Array:
    b, t = tokens.shape
    x = jnp.take(params["embed"], tokens, axis=0)
    for i in range(sum(k.startswith("layer") for k in params)):
        p = params[f"layer{i}"]
        h = rms_norm(x, p["attn_norm"]["scale"])
        q, k, v = ((h @ p[n]).reshape(b, t, heads, -1) for n in ("wq", "wk", "wv"))
        x = x + causal_attention(rope(q), rope(k), v).reshape(b, t, -1) @ p["wo"]
        h = rms_norm(x, p["ffn_norm"]["scale"])
        x = x + (jax.nn.silu(h @ p["w1"]) * (h @ p["w3"])) @ p["w2"]
    return rms_norm(x, params["norm"]["scale"]) @ params["head"]


def llama_abstract(cfg: dict, tokens: jax.ShapeDtypeStruct):
    """A new abstract init of the hand-written LLaMA: ``key -> ShapeDtypeStructs``."""
    specs = llama_specs(**cfg)

    def init(key):
        return materialize(specs, key)

    return lambda key: jax.eval_shape(init, key)


# ---------------------------------------------------------------------------


def _impl(specs: Any, apply: Any, loss: Any, split: Any) -> Impl:
    def init(key):
        return materialize(specs, key)

    def abstract_init():
        f = lambda key: materialize(specs, key)  # noqa: E731  (a new function: a new trace)
        return lambda key: jax.eval_shape(f, key)

    return Impl(
        init=init,
        jit_init=lambda: jax.jit(lambda key: materialize(specs, key)),
        abstract_init=abstract_init,
        apply=apply,
        split=split,
        loss=loss,
    )


def build(model: str, sizes: Sizes, layers: int | None = None) -> Impl:
    if model == "mlp":
        return _impl(
            mlp_specs(sizes.mlp_widths),
            mlp_apply,
            lambda p, s, x, y: (xent(mlp_apply(p, x), y), s),
            lambda v: (v, {}),
        )
    if model == "cnn":
        specs = {"params": cnn_specs(sizes)[0], "state": cnn_specs(sizes)[1]}

        def loss(p, s, x, y):
            logits, new = cnn_apply(p, s, x, True, sizes)
            return xent(logits, y), new

        return _impl(
            specs,
            lambda v, x: cnn_apply(v["params"], v["state"], x, False, sizes)[0],
            loss,
            lambda v: (v["params"], v["state"]),
        )
    cfg = sizes.gpt(layers)
    return _impl(
        gpt_specs(**cfg),
        lambda p, x: gpt_apply(p, x, cfg["heads"]),
        lambda p, s, x, y: (xent(gpt_apply(p, x, cfg["heads"]), y), s),
        lambda v: (v, {}),
    )


__all__ = ["build", "batch"]
