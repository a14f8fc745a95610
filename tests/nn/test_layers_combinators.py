"""Combinators equal applying their children by hand; keyword arguments and keys reach the children."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from layer_helpers import shapes

import lazyinit as li


def x(*shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def test_sequential_equals_applying_by_hand():
    a, b = li.Linear(4), li.LayerNorm()
    model = li.Sequential([a, jnp.tanh, b])
    params = li.dry_run(model, jax.random.key(0), x(2, 3))
    want = b(params["2"], jnp.tanh(a(params["0"], x(2, 3))))
    np.testing.assert_array_equal(model(params, x(2, 3)), want)


def test_residual_equals_x_plus_layer():
    inner = li.Sequential([li.Linear(3), li.nn.relu])
    model = li.Residual(inner)
    params = li.dry_run(model, jax.random.key(0), x(2, 3))
    np.testing.assert_array_equal(model(params, x(2, 3)), x(2, 3) + inner(params["layer"], x(2, 3)))


def test_parallel_applies_every_layer_to_the_same_input():
    a, b = li.Linear(2), li.Linear(5)
    model = li.Parallel([a, b, jnp.negative])
    params = li.dry_run(model, jax.random.key(0), x(3, 4))
    ya, yb, yc = model(params, x(3, 4))
    np.testing.assert_array_equal(ya, a(params["0"], x(3, 4)))
    np.testing.assert_array_equal(yb, b(params["1"], x(3, 4)))
    np.testing.assert_array_equal(yc, -x(3, 4))
    merged = li.Parallel([a, b], merge=lambda *ys: jnp.concatenate(ys, -1))
    assert merged(params, x(3, 4)).shape == (3, 7)


def test_keywords_reach_only_the_layers_that_accept_them():
    model = li.Sequential([li.Linear(3), li.Residual([li.BatchNorm(), li.nn.relu]), li.Linear(1)])
    params = li.dry_run(model, jax.random.key(0), x(8, 2))
    out, updates = li.apply(model, params, x(8, 2), train=True, mutable=True)
    assert shapes(updates) == {"1": {"layer": {"0": {"count": (), "mean": (3,), "var": (3,)}}}}
    assert out.shape == (8, 1)


def dropout_by_hand(x, key, rate=0.5):
    return li.Dropout(rate)({}, x, train=True, key=key)


def test_sequential_folds_the_layer_index_into_the_key():
    model = li.Sequential([li.Dropout(0.5), jnp.exp, li.Dropout(0.5)])
    key = jax.random.key(7)
    got = model({"0": {}, "2": {}}, x(4, 16), train=True, key=key)
    k0, k2 = jax.random.fold_in(key, 0), jax.random.fold_in(key, 2)
    want = dropout_by_hand(jnp.exp(dropout_by_hand(x(4, 16), k0)), k2)
    np.testing.assert_array_equal(got, want)


def test_two_dropouts_never_share_a_mask():
    ones = jnp.ones((8, 32))
    twins = [li.Dropout(0.5), li.Dropout(0.5)]
    nested = [li.Sequential([li.Dropout(0.5)]), li.Sequential([li.Dropout(0.5)])]
    for model in (li.Parallel(twins), li.Parallel(nested)):
        params = li.dry_run(model, jax.random.key(0), ones)
        a, b = model(params, ones, train=True, key=jax.random.key(3))
        assert not np.array_equal(a == 0, b == 0)


def test_batch_norm_train_step_threads_buffers_under_jit():
    """The README's example: optax trains the trainable half; buffers follow PyTorch's averages."""
    model = li.Sequential([li.Conv(4, (3, 3), padding=1), li.BatchNorm(momentum=0.1), li.nn.relu])
    model = li.Sequential([model, li.GlobalAvgPool(), li.Linear(1)])
    images, targets = x(8, 6, 6, 3), x(8, 1, seed=1)
    params = li.dry_run(model, jax.random.key(0), images)
    trainable, buffers = li.partition(model, params, images)
    assert shapes(buffers) == {
        "0": {"0": {}, "1": {"count": (), "mean": (4,), "var": (4,)}},
        "1": {},
        "2": {},
    }
    optimizer = optax.adamw(1e-2, weight_decay=0.1)
    opt_state = optimizer.init(trainable)

    @jax.jit
    def train_step(trainable, buffers, opt_state, images, targets):
        def loss_fn(trainable):
            out, updates = li.apply(
                model, li.merge(trainable, buffers), images, train=True, mutable=True
            )
            return jnp.mean((out - targets) ** 2), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        steps, opt_state = optimizer.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, steps), li.merge(buffers, updates), opt_state, loss

    conv_out = model.layers[0].layers[0](params["0"]["0"], images)
    batch_mean = jnp.mean(conv_out, (0, 1, 2))
    new_trainable, new_buffers, opt_state, loss = train_step(
        trainable, buffers, opt_state, images, targets
    )
    np.testing.assert_allclose(new_buffers["0"]["1"]["mean"], 0.1 * batch_mean, rtol=1e-5)
    assert not np.allclose(new_trainable["2"]["kernel"], trainable["2"]["kernel"])
    for _ in range(2):
        new_trainable, new_buffers, opt_state, loss = train_step(
            new_trainable, new_buffers, opt_state, images, targets
        )
    evaluation = model(li.merge(new_trainable, new_buffers), images)  # running statistics
    assert evaluation.shape == (8, 1) and bool(jnp.isfinite(evaluation).all())


@pytest.mark.parametrize("combinator", [li.Sequential, li.Parallel])
def test_combinators_refuse_entries_that_are_not_callable(combinator):
    with pytest.raises(li.errors.ConfigureLayerError, match="Sequential entry 1 is a int"):
        combinator([li.Linear(2), 3])
