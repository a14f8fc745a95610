"""``python -m lazyinit demo``: PyTorch's LazyModuleMixin story, told in lazyinit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

import lazyinit as li


class LazyMLP(li.Layer):
    """The seed's ``LazyMLP``: two ``Linear`` layers whose input sizes are inferred."""

    fc1: li.Layer = li.Linear(10)
    fc2: li.Layer = li.Linear(1)

    def __call__(self, params, x):
        x = jax.nn.relu(self.fc1(params["fc1"], x))
        return jax.nn.relu(self.fc2(params["fc2"], x))


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


def main(print=print) -> None:  # noqa: A002 - tests pass a collector
    step = iter(range(1, 100))

    def title(text: str) -> None:
        print(f"\n[{next(step)}] {text}")

    title("A model whose input sizes are not given anywhere")
    model = LazyMLP()
    print(f"model = {model!r}")

    title("Before the dry run, its state holds uninitialized placeholders")
    lazy = li.lazy_state(model)
    for layer, leaves in lazy.items():
        for name, leaf in leaves.items():
            print(f"  {layer}/{name}: {leaf!r}")
    print(f"li.has_uninitialized(state) -> {li.has_uninitialized(lazy)}")

    title("Dry run on a sample batch: shapes are inferred, parameters drawn")
    x = jnp.ones((10, 10))
    params = li.dry_run(model, jax.random.key(0), x)
    for path, shape in sorted(_shapes(params)["fc1"].items()):
        print(f"  fc1/{path}: {shape}")
    for path, shape in sorted(_shapes(params)["fc2"].items()):
        print(f"  fc2/{path}: {shape}")
    print(f"li.has_uninitialized(params) -> {li.has_uninitialized(params)}")

    title("What the dry run inferred: the model's repr with its sizes, and a summary")
    print(li.describe(model, x))
    print(li.summary(model, x, params=params))

    title("Abstract dry run: a ShapeDtypeStruct sample gives shapes only, nothing allocated")
    abstract = li.dry_run(model, jax.random.key(0), jax.ShapeDtypeStruct((1024, 10), jnp.float32))
    print(f"  fc1/kernel: {abstract['fc1']['kernel']}")

    title("Load a full state into a fresh lazy model: kept bit for bit, checked against shapes")
    loaded, report = li.load_state(li.lazy_state(model), params)
    print(f"  loaded: {', '.join(report.loaded)}")
    again = li.dry_run(model, jax.random.key(42), x, state=loaded)
    same = all(jax.tree.leaves(jax.tree.map(lambda a, b: bool((a == b).all()), params, again)))
    print(f"  a later dry run with another key kept every loaded value: {same}")

    title("Train it: a jit-compiled optax loop on y = sum(x)")
    data_key, init_key = jax.random.split(jax.random.key(1))
    xs = jax.random.normal(data_key, (256, 10))
    ys = jnp.abs(xs.sum(axis=1, keepdims=True))
    params = li.dry_run(model, init_key, xs)
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((model(p, xs) - ys) ** 2))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for i in range(201):
        params, opt_state, loss = train_step(params, opt_state)
        if i % 50 == 0:
            print(f"  step {i:3d}  loss {float(loss):.4f}")
    print("\nDone. Next: the docs (docs/lifecycle.md), or `python -m lazyinit --help`.")
