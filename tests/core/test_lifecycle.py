"""Lazy-module semantics: loading, keeping, order independence, dtype and placement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from seed_models import LazyMLP

import lazyinit as li

X = jnp.ones((4, 6))


def _same(a, b):
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        x.dtype == y.dtype and bool((x == y).all())
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


# --- 2. loading initialized state -----------------------------------------------------------


def test_dry_run_keeps_loaded_leaves_bit_for_bit_and_initializes_the_rest(key):
    full = li.dry_run(LazyMLP(), key, X)
    partial = {"fc1": {"kernel": full["fc1"]["kernel"] + 1.0}}
    params, report = li.dry_run_with_report(LazyMLP(), key, X, state=partial, strict=False)
    np.testing.assert_array_equal(params["fc1"]["kernel"], full["fc1"]["kernel"] + 1.0)
    np.testing.assert_array_equal(params["fc2"]["kernel"], full["fc2"]["kernel"])
    assert report.kept == ("fc1/kernel",)
    assert report.initialized == ("fc1/bias", "fc2/bias", "fc2/kernel")
    assert report.unexpected == ()


def test_state_may_mix_values_and_placeholders(key):
    state = li.lazy_state(LazyMLP())
    state["fc2"]["bias"] = jnp.full((1,), 7.0)
    params = li.dry_run(LazyMLP(), key, X, state=state)
    np.testing.assert_array_equal(params["fc2"]["bias"], [7.0])
    assert params["fc1"]["kernel"].shape == (6, 10)


def test_loaded_leaf_of_another_shape_is_an_error_naming_path_and_shapes(key):
    state = {"fc1": {"kernel": jnp.zeros((5, 10))}, "fc2": {"kernel": jnp.zeros((3, 3))}}
    before = jax.tree.map(np.asarray, state)
    with pytest.raises(li.errors.StateMismatchError) as info:
        li.dry_run(LazyMLP(), key, X, state=state)
    assert "size mismatch for 'fc1/kernel': found shape (5, 10), expected (6, 10)" in str(
        info.value
    )
    assert "'fc2/kernel': found shape (3, 3), expected (10, 1)" in str(info.value)
    assert len(info.value.problems) == 2  # every problem at once
    assert _same(jax.tree.map(jnp.asarray, before), state)  # nothing touched


def test_loaded_leaf_of_another_dtype_is_an_error(key):
    state = {"fc1": {"bias": jnp.zeros((10,), jnp.bfloat16)}}
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"dtype mismatch for 'fc1/bias': found bfloat16, expected float32",
    ):
        li.dry_run(LazyMLP(), key, X, state=state)


def test_unexpected_keys_are_an_error_when_strict_and_reported_otherwise(key):
    full = li.dry_run(LazyMLP(), key, X)
    state = {
        "fc1": {"weight": full["fc1"]["kernel"], "bias": full["fc1"]["bias"]},
        "fc2": full["fc2"],
        "fc3": {"kernel": jnp.zeros((1, 1))},
    }
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"unexpected key 'fc1/weight'.*did you mean 'fc1/kernel'",
    ):
        li.dry_run(LazyMLP(), key, X, state=state)
    params, report = li.dry_run_with_report(LazyMLP(), key, X, state=state, strict=False)
    assert report.unexpected == ("fc1/weight", "fc3/kernel")
    assert report.kept == ("fc1/bias", "fc2/bias", "fc2/kernel")
    assert report.initialized == ("fc1/kernel",)
    assert _same(params, full)


def test_placeholder_with_disagreeing_known_dims_is_an_error(key):
    state = li.lazy_state(LazyMLP())
    state["fc1"]["kernel"] = li.Uninitialized((None, 11), "float32")
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"'fc1/kernel': found shape \(\?, 11\), expected \(6, 10\)",
    ):
        li.dry_run(LazyMLP(), key, X, state=state)


# --- 3. a later dry run never changes what exists -------------------------------------------


def test_later_dry_run_with_new_key_keeps_materialized_leaves(key):
    first = li.dry_run(LazyMLP(), key, X)
    second = li.dry_run(LazyMLP(), jax.random.key(99), X, state=first)
    assert _same(first, second)
    fresh = li.dry_run(LazyMLP(), jax.random.key(99), X)
    assert not bool((fresh["fc1"]["kernel"] == first["fc1"]["kernel"]).all())


# --- 4. values depend only on the key and the path ------------------------------------------


class Wider(li.Layer):
    fc0: li.Layer = li.Linear(6)
    fc1: li.Layer = li.Linear(10)
    fc2: li.Layer = li.Linear(1)

    def __call__(self, params, x):
        x = self.fc0(params["fc0"], x)
        return self.fc2(params["fc2"], self.fc1(params["fc1"], x))


class Reordered(li.Layer):  # fc2 is declared and traced first
    fc2: li.Layer = li.Linear(1)
    fc1: li.Layer = li.Linear(10)

    def __call__(self, params, x):
        p2 = li.dry_run(self.fc2, 0, jnp.ones((1, 10)))  # unrelated work in between changes nothing
        del p2
        return self.fc2(params["fc2"], self.fc1(params["fc1"], x))


def test_values_do_not_depend_on_other_layers_or_their_order(key):
    base = li.dry_run(LazyMLP(), key, X)
    wider = li.dry_run(Wider(), key, X)
    reordered = li.dry_run(Reordered(), key, X)
    for other in (wider, reordered):
        assert _same(other["fc1"], base["fc1"])
        assert _same(other["fc2"], base["fc2"])


def test_values_equal_under_jit_and_in_one_compiled_call(key):
    eager = li.dry_run(LazyMLP(), key, X)
    jitted = jax.jit(lambda k: li.dry_run(LazyMLP(), k, X))(key)
    one_call = li.dry_run(LazyMLP(), key, X, jit=True)
    assert _same(eager, jitted)
    assert _same(eager, one_call)


def test_one_compiled_call_draws_identical_blocks_with_the_same_values(key):
    deep = li.Sequential([li.Linear(6), li.Linear(6), li.nn.relu, li.Linear(6), li.Linear(2)])
    eager = li.dry_run(deep, key, X)
    assert _same(li.dry_run(deep, key, X, jit=True), eager)
    assert not bool((eager["0"]["kernel"] == eager["1"]["kernel"]).all())


def test_each_value_is_its_initializer_applied_to_the_path_key(key):
    params = li.dry_run(LazyMLP(), key, X)
    expected = li.initializers.lecun_normal()(li.param_key(key, "fc1/kernel"), (6, 10), jnp.float32)
    np.testing.assert_array_equal(params["fc1"]["kernel"], expected)


def test_repeated_dry_run_is_bitwise_identical(key):
    assert _same(li.dry_run(LazyMLP(), key, X), li.dry_run(LazyMLP(), key, X))


def test_int_seed_and_raw_key_are_accepted():
    typed = li.dry_run(LazyMLP(), jax.random.key(3), X)
    assert _same(li.dry_run(LazyMLP(), 3, X), typed)
    raw = li.dry_run(LazyMLP(), jax.random.PRNGKey(3), X)
    assert jax.tree.map(jnp.shape, raw) == jax.tree.map(jnp.shape, typed)


# --- 5. dtype and placement are chosen before the dry run -----------------------------------


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_whole_model_dtype(key, dtype):
    params = li.dry_run(LazyMLP(), key, X, dtype=dtype)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype(dtype)}


def test_per_path_dtype_and_lazy_state_dtype(key):
    params = li.dry_run(LazyMLP(), key, X, dtype={"*": "float32", "fc1": "bfloat16"})
    assert (
        params["fc1"]["kernel"].dtype == jnp.bfloat16
        and params["fc2"]["kernel"].dtype == jnp.float32
    )
    state = li.lazy_state(LazyMLP(), dtype={"*/bias": "float16"})
    assert state["fc1"]["bias"] == li.Uninitialized((10,), "float16")
    params = li.dry_run(LazyMLP(), key, X, state=state)
    assert (
        params["fc2"]["bias"].dtype == jnp.float16 and params["fc2"]["kernel"].dtype == jnp.float32
    )
    state["fc2"]["kernel"] = state["fc2"]["kernel"].astype("bfloat16")
    assert li.dry_run(LazyMLP(), key, X, state=state)["fc2"]["kernel"].dtype == jnp.bfloat16


def test_float64_needs_x64_and_then_materializes_in_float64(key):
    with pytest.raises(
        li.errors.InvalidSpecError, match=r"'fc1/kernel' asks for float64 but 64-bit types are off"
    ):
        li.dry_run(LazyMLP(), key, X, dtype="float64")
    jax.config.update("jax_enable_x64", True)
    try:
        params = li.dry_run(LazyMLP(), key, X, dtype="float64")
        assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype("float64")}
    finally:
        jax.config.update("jax_enable_x64", False)


def test_device_is_chosen_before_the_dry_run(key):
    device = jax.devices()[-1]
    params = li.dry_run(LazyMLP(), key, X, device=device)
    assert all(leaf.devices() == {device} for leaf in jax.tree.leaves(params))
    state = li.lazy_state(LazyMLP(), device={"fc1": device})
    assert state["fc1"]["kernel"].device == device
    params = li.dry_run(LazyMLP(), key, X, state=state)
    assert params["fc1"]["kernel"].devices() == {device}


# --- 6. initialization never runs the forward; call keywords reach shape inference ---------


class Resize(li.Layer):
    def specs(self, x, *, output_size):
        return {"w": li.Param((x.shape[-1], output_size), jax.nn.initializers.zeros)}

    def __call__(self, params, x, *, output_size):
        jax.debug.callback(lambda: Resize.calls.append(1))
        return x @ params["w"]


Resize.calls = []


def test_dry_run_runs_no_forward_and_keywords_reach_specs(key):
    Resize.calls.clear()
    params = li.dry_run(Resize(), key, X, output_size=3)
    assert params["w"].shape == (6, 3)
    assert Resize.calls == []  # traced abstractly: the callback never ran
    Resize()(params, X, output_size=3)
    assert Resize.calls == [1]


# --- 10. jit, grad, vmap and an optax training loop ------------------------------------------


def test_training_loop_lowers_the_loss(key):
    import optax

    xs = jax.random.normal(jax.random.key(1), (64, 6))
    ys = jnp.abs(xs.sum(axis=1, keepdims=True))
    model = LazyMLP()
    params = li.dry_run(model, key, xs)
    opt = optax.adam(1e-2)
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((model(p, xs) - ys) ** 2))(params)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(100):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert losses[-1] < 0.2 * losses[0]


def test_vmap_over_inputs_and_over_params(key):
    model = LazyMLP()
    params = li.dry_run(model, key, X)
    ys = jax.vmap(model, in_axes=(None, 0))(params, jnp.ones((3, 4, 6)))
    assert ys.shape == (3, 4, 1)
    stacked = jax.vmap(lambda k: li.dry_run(model, k, X))(jax.random.split(key, 5))
    assert stacked["fc1"]["kernel"].shape == (5, 6, 10)
