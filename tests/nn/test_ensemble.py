"""li.Ensemble: vmap over stacked params, same slice rule as li.Parallel([layer] * n)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyinit as li

MLP = li.Sequential([li.Linear(8), li.nn.relu, li.Linear(2)])
X = jnp.linspace(-1.0, 1.0, 15).reshape(5, 3)


def _equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("jit", [False, True])
def test_slice_i_is_the_parallel_draw_bit_for_bit(jit, key):
    stacked = li.dry_run(li.Ensemble(MLP, 4), key, X, jit=jit)
    unrolled = li.dry_run(li.Parallel([MLP] * 4), key, X)
    assert stacked["0"]["kernel"].shape == (4, 3, 8)
    _equal(li.unstack_layers(stacked), unrolled)


def test_outputs_are_each_copy_stacked(key):
    model = li.Ensemble(MLP, 4)
    params = li.dry_run(model, key, X)
    want = jnp.stack(li.Parallel([MLP] * 4)(li.unstack_layers(params), X))
    np.testing.assert_allclose(model(params, X), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(model)(params, X), want, rtol=1e-5, atol=1e-6)
    assert li.trace(model, X).outputs.shape == (4, 5, 2)


def test_map_inputs_gives_copy_i_slice_i(key):
    model = li.Ensemble(MLP, 3, map_inputs=True)
    xs = jnp.stack([X, 2 * X, -X])
    params = li.dry_run(model, key, xs)
    assert params["0"]["kernel"].shape == (3, 3, 8)
    got = model(params, xs)
    copies = li.unstack_layers(params)
    for i in range(3):
        np.testing.assert_allclose(got[i], MLP(copies[str(i)], xs[i]), rtol=1e-5, atol=1e-6)


def test_map_inputs_needs_the_leading_axis(key):
    with pytest.raises(li.errors.InferShapeError, match=r"n=3 maps over the inputs' leading axis"):
        li.dry_run(li.Ensemble(MLP, 3, map_inputs=True), key, X)


def test_train_step_gradients_per_copy(key):
    model = li.Ensemble(MLP, 2)
    params = li.dry_run(model, key, X)
    grads = jax.jit(jax.grad(lambda p: model(p, X)[1].sum()))(params)
    assert not np.any(grads["0"]["kernel"][0])  # copy 0 does not reach the loss
    assert np.any(grads["0"]["kernel"][1])


def test_buffers_per_copy(key):
    model = li.Ensemble(li.Sequential([li.Linear(4), li.BatchNorm()]), 2, map_inputs=True)
    xs = jnp.stack([X, 3 * X])
    params = li.dry_run(model, key, xs)
    _, updates = li.apply(model, params, xs, train=True, mutable=True)
    assert updates["1"]["mean"].shape == (2, 4)
    assert not np.allclose(updates["1"]["var"][0], updates["1"]["var"][1])


def test_abstract_and_state(key):
    model = li.Ensemble(MLP, 3)
    abstract = li.dry_run(model, key, jax.ShapeDtypeStruct((5, 3), jnp.float32))
    assert abstract["2"]["kernel"] == jax.ShapeDtypeStruct((3, 8, 2), jnp.float32)
    old = li.dry_run(model, jax.random.key(9), X)
    params = li.dry_run(model, key, X, state={"2": old["2"]})
    _equal(params["2"], old["2"])
    assert li.trace(model, X).params[("2", "kernel")].axes[0] == "ensemble"


def test_bad_count_is_refused():
    with pytest.raises(
        li.errors.InvalidArgumentError, match=r"li\.Ensemble: n must be a positive int"
    ):
        li.Ensemble(MLP, 0)


def test_dropout_key_is_folded_per_copy_as_in_parallel(key):
    layer = li.Sequential([li.Linear(8), li.Dropout(0.5)])
    params = li.dry_run(li.Ensemble(layer, 3), key, X)
    k = jax.random.key(5)
    got = li.Ensemble(layer, 3)(params, X, train=True, key=k)
    want = li.Parallel([layer] * 3)(li.unstack_layers(params), X, train=True, key=k)
    np.testing.assert_allclose(got, jnp.stack(want), rtol=1e-5, atol=1e-6)
