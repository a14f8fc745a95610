"""Activations: JAX's own functions, as plain module-level functions.

``li.Sequential([li.Linear(10), li.nn.relu, li.Linear(1)])`` reads like PyTorch, and
each name computes what PyTorch's function of that name computes (the table in
``docs/layers.md``, checked against torch by ``tests/nn/test_activations.py``). Where
the two libraries differ, PyTorch's meaning wins: ``gelu`` is exact, as PyTorch's
``F.gelu``, and ``gelu_tanh`` is ``jax.nn.gelu``'s default approximation.
Some of ``jax.nn``'s functions are ``custom_jvp`` objects that do not pickle;
these thin wrappers do (by reference), so layers holding them pickle too.
"""

import jax

__all__ = [
    "celu", "elu", "gelu", "gelu_tanh", "glu", "hard_tanh", "leaky_relu", "log_softmax",
    "relu", "relu6", "selu", "sigmoid", "silu", "softmax", "softplus", "swish", "tanh",
]  # fmt: skip


def _wrap(name: str):
    fn = getattr(jax.nn, name)

    def activation(x, *args, **kwargs):
        return fn(x, *args, **kwargs)

    activation.__name__ = activation.__qualname__ = name
    activation.__module__ = __name__
    activation.__doc__ = f"``jax.nn.{name}``; see its documentation."
    return activation


def gelu(x: jax.Array) -> jax.Array:
    """The exact GELU, ``x * Φ(x)`` (with ``erf``): PyTorch's ``F.gelu`` and ``nn.GELU()``,
    Hugging Face's ``"gelu"``.

    Not ``jax.nn.gelu``'s default, which is the tanh approximation: that is
    :func:`gelu_tanh`. The two differ by up to 4.7e-4 (near ``x = -2.7``).

    Examples:
        >>> import jax.numpy as jnp, lazyinit as li
        >>> [round(float(v), 5) for v in li.nn.gelu(jnp.array([-1.0, 1.0]))]
        [-0.15866, 0.84134]
    """
    return jax.nn.gelu(x, approximate=False)


def gelu_tanh(x: jax.Array) -> jax.Array:
    """GELU's tanh approximation: PyTorch's ``nn.GELU(approximate="tanh")``, Hugging Face's
    ``"gelu_new"`` and ``"gelu_pytorch_tanh"`` (GPT-2's), and ``jax.nn.gelu``'s default.

    Examples:
        >>> import jax.numpy as jnp, lazyinit as li
        >>> [round(float(v), 5) for v in li.nn.gelu_tanh(jnp.array([-1.0, 1.0]))]
        [-0.15881, 0.84119]
    """
    return jax.nn.gelu(x, approximate=True)


celu = _wrap("celu")
elu = _wrap("elu")
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
