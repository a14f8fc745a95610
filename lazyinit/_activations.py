"""Activations: JAX's own functions, re-exported so that ``li.Sequential([..., li.relu, ...])`` reads well."""

from jax.nn import (
    celu,
    elu,
    gelu,
    glu,
    hard_tanh,
    leaky_relu,
    log_softmax,
    relu,
    relu6,
    selu,
    sigmoid,
    silu,
    softmax,
    softplus,
    swish,
    tanh,
)

__all__ = [
    "celu",
    "elu",
    "gelu",
    "glu",
    "hard_tanh",
    "leaky_relu",
    "log_softmax",
    "relu",
    "relu6",
    "selu",
    "sigmoid",
    "silu",
    "softmax",
    "softplus",
    "swish",
    "tanh",
]
