"""The models of PyTorch's LazyModuleMixin page, written in lazyinit, shared by the tests."""

import jax

import lazyinit as li


class LazyMLP(li.Layer):
    fc1: li.Layer = li.Linear(10)
    fc2: li.Layer = li.Linear(1)

    def __call__(self, params, x):
        x = jax.nn.relu(self.fc1(params["fc1"], x))
        return jax.nn.relu(self.fc2(params["fc2"], x))


class Scale(li.Layer):
    def specs(self, x):
        return {"scale": li.Param((x.shape[-1],), jax.nn.initializers.ones)}

    def __call__(self, params, x):
        return x * params["scale"]
