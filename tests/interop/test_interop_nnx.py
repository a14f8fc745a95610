"""flax.nnx: modules wrapped as lazyinit layers (trained, saved, key-per-path), refused unwrapped,
and lazyinit params read from and written into an nnx model's state, checked on outputs."""

from __future__ import annotations

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import lazyinit as li
from lazyinit.interop.flax import FlaxModule, NnxModule, nnx_params, update_nnx

X = jnp.arange(6.0).reshape(2, 3) / 6


def _lazy_linear(features):
    return NnxModule(lambda rngs, x: nnx.Linear(x.shape[-1], features, rngs=rngs))


def test_unwrapped_nnx_module_in_sequential_is_refused_naming_the_wrapper():
    with pytest.raises(
        li.errors.ConfigureLayerError,
        match=r"Sequential entry 0 is a flax.nnx module \(Linear\).*never reach the params tree"
        r".*lazyinit\.interop\.flax\.NnxModule\(module\)",
    ):
        li.Sequential([nnx.Linear(3, 4, rngs=nnx.Rngs(0)), li.nn.relu])


def test_unwrapped_linen_module_is_refused_naming_flax_module():
    with pytest.raises(
        li.errors.ConfigureLayerError, match=r"Sequential entry 1 is a flax.linen module"
    ):
        li.Sequential([li.nn.relu, linen.Dense(4)])


def test_flax_module_refuses_an_nnx_module_naming_nnx_module():
    with pytest.raises(
        li.errors.ConfigureLayerError, match=r"got Linear\. For a flax\.nnx module use .*NnxModule"
    ):
        FlaxModule(nnx.Linear(3, 4, rngs=nnx.Rngs(0)))


def test_a_built_module_keeps_its_values_and_computes_as_nnx():
    linear = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
    model = li.Sequential([NnxModule(linear), li.nn.relu, li.Linear(2)])
    params = li.dry_run(model, jax.random.key(0), X)
    np.testing.assert_array_equal(params["0"]["kernel"], linear.kernel[...])
    h = jax.nn.relu(linear(X))
    np.testing.assert_allclose(model(params, X), li.Linear(2)(params["2"], h), rtol=1e-6)


def test_lazy_sizes_and_key_per_path_values():
    model = li.Sequential([_lazy_linear(4), li.nn.relu, _lazy_linear(2)])
    root = jax.random.key(7)
    params = li.dry_run(model, root, X)
    assert jax.tree.map(jnp.shape, params) == {
        "0": {"bias": (4,), "kernel": (3, 4)},
        "2": {"bias": (2,), "kernel": (4, 2)},
    }
    for path in (("0", "kernel"), ("2", "kernel")):
        fan_in = 3 if path[0] == "0" else 4
        width = 4 if path[0] == "0" else 2
        built = nnx.Linear(fan_in, width, rngs=nnx.Rngs(li.param_key(root, path)))
        np.testing.assert_array_equal(params[path[0]]["kernel"], built.kernel[...])
    # a value depends on its path only: another layer in front changes nothing
    other = li.Sequential(
        [_lazy_linear(4), li.nn.relu, _lazy_linear(2), li.nn.relu, _lazy_linear(5)]
    )
    again = li.dry_run(other, root, X)
    np.testing.assert_array_equal(again["2"]["kernel"], params["2"]["kernel"])


def test_nested_nnx_model_trains_and_saves(tmp_path):
    def build(rngs):
        return nnx.Sequential(nnx.Linear(3, 8, rngs=rngs), nnx.relu, nnx.Linear(8, 1, rngs=rngs))

    model = li.Sequential([NnxModule(build), li.Linear(1)])
    params = li.dry_run(model, jax.random.key(0), X)
    assert jax.tree.map(jnp.shape, params["0"]) == {
        "layers": {"0": {"bias": (8,), "kernel": (3, 8)}, "2": {"bias": (1,), "kernel": (8, 1)}}
    }
    y = jnp.ones((2, 1))

    def loss(p):
        return jnp.mean((model(p, X) - y) ** 2)

    opt = optax.sgd(0.1)
    state = opt.init(params)
    first = loss(params)
    for _ in range(5):
        grads = jax.grad(loss)(params)
        assert float(jnp.abs(grads["0"]["layers"]["0"]["kernel"]).sum()) > 0
        updates, state = opt.update(grads, state)
        params = optax.apply_updates(params, updates)
    assert loss(params) < first
    li.save(tmp_path / "m.safetensors", params)
    loaded, _ = li.load(tmp_path / "m.safetensors", li.lazy_state(model, X))
    np.testing.assert_array_equal(
        loaded["0"]["layers"]["2"]["kernel"], params["0"]["layers"]["2"]["kernel"]
    )
    np.testing.assert_allclose(jax.jit(model)(loaded, X), model(params, X), rtol=1e-6)


def test_state_other_than_params_is_refused():
    with pytest.raises(
        li.errors.ConfigureLayerError,
        match=r"holds state other than nnx.Param at 'mean' \(BatchStat\)",
    ):
        li.dry_run(
            li.Sequential([NnxModule(nnx.BatchNorm(3, rngs=nnx.Rngs(0)))]), jax.random.key(0), X
        )


def test_lazyinit_params_into_an_nnx_model_and_back():
    lazy = li.Sequential([li.Linear(4), li.nn.relu, li.Linear(2)])
    params = li.dry_run(lazy, jax.random.key(0), X)
    target = nnx.Sequential(
        nnx.Linear(3, 4, rngs=nnx.Rngs(1)), nnx.relu, nnx.Linear(4, 2, rngs=nnx.Rngs(2))
    )
    update_nnx(target, {"layers": params})
    np.testing.assert_allclose(target(X), lazy(params, X), rtol=1e-6)
    source = nnx.Sequential(
        nnx.Linear(3, 4, rngs=nnx.Rngs(3)), nnx.relu, nnx.Linear(4, 2, rngs=nnx.Rngs(4))
    )
    back = nnx_params(source)["layers"]
    np.testing.assert_allclose(lazy(back, X), source(X), rtol=1e-6)


def test_update_nnx_lists_every_problem_and_writes_nothing():
    target = nnx.Linear(3, 4, rngs=nnx.Rngs(1))
    before = np.asarray(target.kernel[...])
    bad = {"kernel": jnp.ones((4, 3)), "extra": jnp.ones(2)}
    with pytest.raises(li.errors.StateMismatchError) as info:
        update_nnx(target, bad)
    assert info.value.problems[0].startswith(
        "size mismatch for 'kernel': found shape (4, 3), expected (3, 4) (the transpose"
    )
    assert info.value.problems[1:] == (
        "missing key 'bias' (did you mean 'extra'?)",
        "unexpected key 'extra' (did you mean 'bias'?)",
    )
    np.testing.assert_array_equal(target.kernel[...], before)


def test_lazy_state_without_a_sample_is_a_placeholder_of_unknown_structure():
    model = li.Sequential([_lazy_linear(4), li.Linear(2)])
    lazy = li.lazy_state(model)
    assert isinstance(lazy["0"], li.Uninitialized) and lazy["0"].shape is None
    sampled = li.lazy_state(model, X)["0"]
    assert {k: v.shape for k, v in sampled.items()} == {"bias": (4,), "kernel": (3, 4)}
