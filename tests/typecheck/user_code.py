"""Typical user code, checked by mypy in CI (not run by pytest): every line must type-check.

One return type per function: indexing a dry run's params, unpacking a load's
``(tree, report)`` and a lazy state all type-check without casts.
"""

import jax
import jax.numpy as jnp
import optax

import lazyinit as li


class MLP(li.Layer):
    fc1: li.Layer = li.Linear(10)
    fc2: li.Layer = li.Linear(1)

    def __call__(self, params: li.Params, x: jax.Array) -> jax.Array:
        return self.fc2(params["fc2"], jax.nn.relu(self.fc1(params["fc1"], x)))


def main() -> None:
    model = MLP()
    x = jnp.ones((4, 3))
    lazy = li.lazy_state(model)
    print(lazy["fc1"]["kernel"], li.has_uninitialized(lazy))
    params = li.dry_run(model, jax.random.key(0), x)
    kernel: jax.Array = params["fc1"]["kernel"]
    params2, report = li.dry_run_with_report(model, jax.random.key(1), x, state=params)
    print(kernel.shape, params2["fc2"]["bias"], report.kept)
    loaded, load_report = li.load_state(li.lazy_state(model), params)
    print(loaded["fc1"], load_report.loaded)
    trainable, buffers = li.partition(model, params)
    opt = optax.adam(1e-3)
    opt_state = opt.init(trainable)
    y: jax.Array = model(li.merge(trainable, buffers), x)
    print(y.shape, opt_state)
