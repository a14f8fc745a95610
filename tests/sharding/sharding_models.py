"""Models for the sharding tests: a ``li.Linear`` MLP, and examples/models.py's decoders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import lazyinit as li

RULES = {"embed": "fsdp", "mlp": "tensor", "heads": "tensor", "kv": None, "vocab": "tensor"}
"""FSDP over 'fsdp' and tensor parallelism over 'tensor', t5x style."""


def _example_models():
    path = Path(__file__).resolve().parents[2] / "examples" / "models.py"
    spec = importlib.util.spec_from_file_location("lazyinit_example_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


llama_decoder = _example_models().llama_decoder


def mlp(width: int = 16, out: int = 8) -> li.Layer:
    """Linear(width) -> relu -> Linear(out), the second kernel laid out ('mlp', 'embed')."""
    return li.Sequential([li.Linear(width), li.nn.relu, li.Linear(out, axes=("mlp", "embed"))])


def regression_step(model: li.Layer, opt, shardings=None):
    """A jit-compiled optax step on mean squared error; ``shardings`` keeps the params' layout."""

    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((model(p, x) - y) ** 2))(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return jax.jit(step, out_shardings=(shardings, None, None))
