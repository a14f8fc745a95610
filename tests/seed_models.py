"""The models of PyTorch's LazyModuleMixin page, written in lazyinit, shared by the tests."""

import jax

import lazyinit as li
from lazyinit._demo import LazyMLP  # the seed's LazyMLP: the demo runs the same definition

__all__ = ["LazyMLP", "Scale"]


class Scale(li.Layer):
    def specs(self, x):
        return {"scale": li.Param((x.shape[-1],), jax.nn.initializers.ones)}

    def __call__(self, params, x):
        return x * params["scale"]
