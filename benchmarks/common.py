"""What every implementation shares: the model sizes, the attention formulation, the losses.

Each library's file builds the same three models (an MLP, a ResNet-18-style CNN with BatchNorm and
a GPT-2-small-shaped decoder) and exposes them as an :class:`Impl`, so that the figures in
:mod:`benchmarks.figures` can time every library through one interface.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

MODELS = ("mlp", "cnn", "gpt")
LIBRARIES = ("jax", "lazyinit", "flax", "haiku", "equinox")
TITLES = {"mlp": "M1 MLP", "cnn": "M2 CNN", "gpt": "M3 GPT"}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The sizes of the three models; ``FULL`` is the issue's, ``QUICK`` a smoke test's."""

    mlp_batch: int = 128
    mlp_widths: tuple[int, ...] = (784, 512, 512, 10)
    cnn_batch: int = 32
    cnn_hw: int = 32
    cnn_widths: tuple[int, ...] = (64, 128, 256, 512)
    cnn_blocks: int = 2
    cnn_classes: int = 10
    gpt_batch: int = 4
    gpt_seq: int = 128
    gpt_vocab: int = 50257
    gpt_width: int = 768
    gpt_heads: int = 12
    gpt_layers: int = 12
    gpt_max_len: int = 1024
    depths: tuple[int, ...] = (2, 4, 8, 16, 32)

    def gpt(self, layers: int | None = None) -> dict[str, int]:
        return dict(
            vocab=self.gpt_vocab,
            width=self.gpt_width,
            heads=self.gpt_heads,
            layers=self.gpt_layers if layers is None else layers,
            max_len=self.gpt_max_len,
        )


FULL = Sizes()
QUICK = Sizes(
    mlp_batch=4,
    mlp_widths=(12, 8, 8, 3),
    cnn_batch=2,
    cnn_hw=8,
    cnn_widths=(4, 8),
    cnn_blocks=1,
    cnn_classes=3,
    gpt_batch=2,
    gpt_seq=8,
    gpt_vocab=61,
    gpt_width=16,
    gpt_heads=2,
    gpt_layers=2,
    gpt_max_len=16,
    depths=(1, 3),  # not QUICK's 2 layers: figure 8's first calls must be first calls
)


def batch(model: str, sizes: Sizes, layers: int | None = None) -> tuple[Any, Any]:
    """A fixed input batch and its integer labels."""
    rng = np.random.default_rng(0)
    if model == "mlp":
        x = rng.standard_normal((sizes.mlp_batch, sizes.mlp_widths[0]), dtype=np.float32)
        y = rng.integers(0, sizes.mlp_widths[-1], sizes.mlp_batch)
    elif model == "cnn":
        x = rng.standard_normal((sizes.cnn_batch, sizes.cnn_hw, sizes.cnn_hw, 3), dtype=np.float32)
        y = rng.integers(0, sizes.cnn_classes, sizes.cnn_batch)
    else:
        tokens = rng.integers(0, sizes.gpt_vocab, (sizes.gpt_batch, sizes.gpt_seq + 1))
        x, y = tokens[:, :-1], tokens[:, 1:]
        x = x.astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y.astype(np.int32))


# ---------------------------------------------------------------------------
# The maths every implementation shares.


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Softmax attention over ``(batch, time, heads, head_dim)`` with a causal mask."""
    t, d = q.shape[1], q.shape[-1]
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.float32(np.sqrt(d))
    mask = jnp.tril(jnp.ones((t, t), bool))[None, None]
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)


def xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


gelu_tanh = jax.nn.gelu  # the tanh approximation (li.nn.gelu_tanh), as GPT-2


def rope(x: jax.Array) -> jax.Array:
    """Rotary position embedding over ``(batch, time, heads, head_dim)`` (half-split form)."""
    t, d = x.shape[1], x.shape[-1]
    freqs = 1.0 / (10000.0 ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
    angles = jnp.arange(t, dtype=jnp.float32)[:, None] * freqs[None, :]
    cos, sin = jnp.cos(angles)[None, :, None], jnp.sin(angles)[None, :, None]
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def rms_norm(x: jax.Array, scale: jax.Array) -> jax.Array:
    y = x * jax.lax.rsqrt(jnp.square(x).mean(-1, keepdims=True) + 1e-6)
    return y * scale.reshape((1,) * (x.ndim - 1) + (-1,))


# LLaMA-7B's shape, for the abstract plan of figure 8 (one sample of 128 tokens).
LLAMA_7B = dict(vocab=32000, width=4096, heads=32, layers=32, hidden=11008)
LLAMA_QUICK = dict(vocab=61, width=16, heads=2, layers=2, hidden=24)
LLAMA_SEQ = 128


def llama_tokens(quick: bool) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((1, 8 if quick else LLAMA_SEQ), jnp.int32)


# ---------------------------------------------------------------------------
# One interface over every library.


@dataclasses.dataclass
class Impl:
    """One library's version of one model, as the figures use it.

    Attributes:
      init: ``key -> variables``, the library's eager (not jit-compiled) init.
      jit_init: ``() -> (key -> variables)``, a new jit-compiled init each call (so its first call
        traces and compiles).
      abstract_init: ``() -> (key -> abstract variables)``, a new abstract init each call; calling
        the returned function again repeats it with the same signature.
      apply: ``(variables, x) -> output``, inference mode, eager.
      split: ``variables -> (trainable, state)``; ``join`` undoes it.
      loss: ``(trainable, state, x, y) -> (loss, new_state)``, training mode.
      net: the library's model object, where the figures need it (lazyinit's).
    """

    init: Callable[[Any], Any]
    jit_init: Callable[[], Callable[[Any], Any]]
    abstract_init: Callable[[], Callable[[Any], Any]]
    apply: Callable[[Any, Any], Any]
    split: Callable[[Any], tuple[Any, Any]]
    loss: Callable[[Any, Any, Any, Any], tuple[Any, Any]]
    net: Any = None


def plain_split(variables: Any) -> tuple[Any, Any]:
    return variables, {}


def _arrays(tree: Any) -> list[Any]:
    return [l for l in jax.tree.leaves(tree) if hasattr(l, "shape") and hasattr(l, "dtype")]


def param_bytes(tree: Any) -> int:
    return int(sum(np.prod(l.shape) * np.dtype(l.dtype).itemsize for l in _arrays(tree)))


def param_count(tree: Any) -> int:
    return int(sum(np.prod(l.shape) for l in _arrays(tree)))
