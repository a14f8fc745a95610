"""Activations: JAX's own functions, as plain module-level functions.

``li.Sequential([li.Linear(10), li.nn.relu, li.Linear(1)])`` reads like PyTorch.
Some of ``jax.nn``'s functions are ``custom_jvp`` objects that do not pickle;
these thin wrappers do (by reference), so layers holding them pickle too.
"""

import jax

__all__ = [
    "celu", "elu", "gelu", "glu", "hard_tanh", "leaky_relu", "log_softmax", "relu",
    "relu6", "selu", "sigmoid", "silu", "softmax", "softplus", "swish", "tanh",
]  # fmt: skip


def _wrap(name: str):
    fn = getattr(jax.nn, name)

    def activation(x, *args, **kwargs):
        return fn(x, *args, **kwargs)

    activation.__name__ = activation.__qualname__ = name
    activation.__module__ = __name__
    activation.__doc__ = f"``jax.nn.{name}``; see its documentation."
    return activation


celu = _wrap("celu")
elu = _wrap("elu")
gelu = _wrap("gelu")
glu = _wrap("glu")
hard_tanh = _wrap("hard_tanh")
leaky_relu = _wrap("leaky_relu")
log_softmax = _wrap("log_softmax")
relu = _wrap("relu")
relu6 = _wrap("relu6")
selu = _wrap("selu")
sigmoid = _wrap("sigmoid")
silu = _wrap("silu")
softmax = _wrap("softmax")
softplus = _wrap("softplus")
swish = _wrap("swish")
tanh = _wrap("tanh")
