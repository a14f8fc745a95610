"""Every example of PyTorch's LazyModuleMixin documentation, in lazyinit.

The page builds a ``LazyMLP`` of two ``LazyLinear`` layers, shows its
uninitialized state dict, dry-runs it on ``torch.ones(10, 10)``, builds an
optimizer after the dry run, serializes the lazy state, and loads a full
state into a lazy model (whose loaded values a later dry run must keep).
"""

import copy
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from seed_models import LazyMLP, Scale

import lazyinit as li


def _equal(a, b):
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        bool((x == y).all()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def test_construct_shows_uninitialized_placeholders_with_known_dims():
    state = li.lazy_state(LazyMLP())
    assert state == {
        "fc1": {
            "kernel": li.Uninitialized((None, 10), "float32"),
            "bias": li.Uninitialized((10,), "float32"),
        },
        "fc2": {
            "kernel": li.Uninitialized((None, 1), "float32"),
            "bias": li.Uninitialized((1,), "float32"),
        },
    }
    assert repr(state["fc1"]["kernel"]) == "Uninitialized(shape=(?, 10), dtype=float32)"
    assert li.has_uninitialized(state)


def test_dry_run_infers_shapes_and_returns_plain_arrays():
    model = LazyMLP()
    params = li.dry_run(model, jax.random.key(0), jnp.ones((10, 10)))
    assert jax.tree.map(jnp.shape, params) == {
        "fc1": {"kernel": (10, 10), "bias": (10,)},
        "fc2": {"kernel": (10, 1), "bias": (1,)},
    }
    assert type(params) is dict and type(params["fc1"]) is dict
    assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(params))
    assert not li.has_uninitialized(params)
    assert _equal(params, li.dry_run(model, jax.random.key(0), jnp.ones((10, 10))))


def test_call_is_pure_and_jit_apply_agree():
    model, x = LazyMLP(), jnp.arange(100.0).reshape(10, 10) / 100
    params = li.dry_run(model, jax.random.key(0), x)
    y = jax.jit(model)(params, x)
    assert y.shape == (10, 1)
    np.testing.assert_allclose(y, model(params, x), rtol=1e-6)
    np.testing.assert_allclose(y, model.apply(params, x), rtol=1e-6)


def test_leaf_layer_declares_specs_from_its_input():
    with jax.numpy_rank_promotion("allow"):  # the seed's user code broadcasts implicitly
        params = li.dry_run(Scale(), jax.random.key(0), jnp.ones((2, 3)))
        assert jax.tree.map(jnp.shape, params) == {"scale": (3,)}
        np.testing.assert_array_equal(Scale()(params, jnp.full((2, 3), 2.0)), jnp.full((2, 3), 2.0))


def test_optimizer_is_built_after_the_dry_run():
    model = LazyMLP()
    with pytest.raises(li.errors.UninitializedParamError, match="placeholder with no value yet"):
        optax.sgd(0.01, momentum=0.9).init(li.lazy_state(model))
    params = li.dry_run(model, jax.random.key(0), jnp.ones((10, 10)))
    opt_state = optax.sgd(0.01).init(params)
    grads = jax.grad(lambda p: model(p, jnp.ones((10, 10))).sum())(params)
    updates, _ = optax.sgd(0.01).update(grads, opt_state)
    new = optax.apply_updates(params, updates)
    assert jax.tree.structure(new) == jax.tree.structure(params)


def test_lazy_state_serializes_with_its_placeholders():
    model = LazyMLP()
    state = li.lazy_state(model)
    for clone in (pickle.loads(pickle.dumps(state)), copy.deepcopy(state)):
        assert clone == state
        assert li.has_uninitialized(clone)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert clone == model
        assert _equal(
            li.dry_run(clone, 0, jnp.ones((2, 3))), li.dry_run(model, 0, jnp.ones((2, 3)))
        )


def test_load_full_state_into_lazy_model_then_dry_run_keeps_it():
    full = li.dry_run(LazyMLP(), jax.random.key(1), jnp.ones((10, 10)))
    lazy = LazyMLP()
    state, report = li.load_state(li.lazy_state(lazy), full)
    assert report.loaded == ("fc1/bias", "fc1/kernel", "fc2/bias", "fc2/kernel")
    assert not li.has_uninitialized(state)
    assert _equal(state, full)
    again = li.dry_run(lazy, jax.random.key(2), jnp.ones((10, 10)), state=state)
    assert _equal(again, full)


def test_pickled_model_round_trips_after_materialization():
    model = LazyMLP()
    params = li.dry_run(model, jax.random.key(0), jnp.ones((4, 10)))
    model2, params2 = pickle.loads(pickle.dumps((model, jax.device_get(params))))
    np.testing.assert_array_equal(
        model2(params2, jnp.ones((4, 10))), model(params, jnp.ones((4, 10)))
    )


def test_sequential_with_activations_pickles():
    model = li.Sequential([li.Linear(3), li.nn.relu, li.Linear(1), li.nn.gelu_tanh])
    assert pickle.loads(pickle.dumps(model)) == model
    np.testing.assert_array_equal(
        li.nn.relu(jnp.array([-1.0, 2.0])), jax.nn.relu(jnp.array([-1.0, 2.0]))
    )
