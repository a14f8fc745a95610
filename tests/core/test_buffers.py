"""Non-trainable state: declared with ``trainable=False``, kept from the optimizer, updated functionally."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lazyinit as li


class RunningMean(li.Layer):
    """A minimal stateful leaf: a trainable scale and a running mean buffer."""

    def specs(self, x, *, train=False):
        d = x.shape[-1]
        return {
            "scale": li.Param((d,), li.initializers.ones),
            "mean": li.Param((d,), li.initializers.zeros, trainable=False),
        }

    def __call__(self, params, x, *, train=False):
        mean = params["mean"]
        if train:
            mean = 0.5 * mean + 0.5 * x.mean(axis=0)
            li.update_buffers(params, mean=mean)
        return (x - mean[None]) * params["scale"][None]


MODEL = li.Sequential([li.Linear(3), RunningMean()])
X = jnp.arange(8.0).reshape(2, 4)


def test_partition_and_merge_split_by_the_trainable_flag(key):
    params = li.dry_run(MODEL, key, X)
    trainable, buffers = li.partition(MODEL, params)
    assert jax.tree.map(jnp.shape, buffers) == {"0": {}, "1": {"mean": (3,)}}
    assert jax.tree.map(jnp.shape, trainable) == {
        "0": {"kernel": (4, 3), "bias": (3,)},
        "1": {"scale": (3,)},
    }
    assert jax.tree.map(jnp.shape, li.merge(trainable, buffers)) == jax.tree.map(jnp.shape, params)
    with_sample, _ = li.partition(MODEL, params, X)
    assert jax.tree.structure(with_sample) == jax.tree.structure(trainable)


def test_partition_asks_for_a_sample_when_specs_need_the_input(key):
    class NeedsRank(li.Layer):
        def specs(self, x):
            return {"w": li.Param((x.ndim,), li.initializers.zeros, trainable=False)}

        def __call__(self, params, x):
            return x

    params = li.dry_run(NeedsRank(), key, X)  # caches a trace, which partition must not use
    with pytest.raises(
        li.errors.InferShapeError,
        match=r"li.partition needs the structure of NeedsRank at '<root>', which names its "
        r"parameters only when traced .* Pass a sample as for li.dry_run",
    ):
        li.partition(NeedsRank(), params)
    trainable, buffers = li.partition(NeedsRank(), params, X)
    assert trainable == {} and buffers["w"].shape == (2,)


def test_mutable_apply_returns_updates_by_path(key):
    params = li.dry_run(MODEL, key, X)
    out, updates = li.apply(MODEL, params, X, train=True, mutable=True)
    assert out.shape == (2, 3)
    hidden = MODEL.layers[0](params["0"], X)
    np.testing.assert_allclose(updates["1"]["mean"], 0.5 * hidden.mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(li.apply(MODEL, params, X), MODEL(params, X))


def test_updating_buffers_outside_a_mutable_call_is_an_error(key):
    params = li.dry_run(MODEL, key, X)
    with pytest.raises(
        li.errors.UpdateBuffersError, match=r"updated its buffers \['mean'\] outside a mutable call"
    ):
        MODEL(params, X, train=True)


def test_jitted_train_step_never_lets_the_optimizer_touch_buffers(key):
    params = li.dry_run(MODEL, key, X)
    trainable, buffers = li.partition(MODEL, params)
    opt = optax.adamw(0.1, weight_decay=0.5)  # decay would move buffers if it saw them
    opt_state = opt.init(trainable)

    @jax.jit
    def step(trainable, buffers, opt_state):
        def loss_fn(t):
            out, new = li.apply(MODEL, li.merge(t, buffers), X, train=True, mutable=True)
            return jnp.mean(out**2), new

        (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        updates, opt_state = opt.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), li.merge(buffers, new), opt_state, loss

    new_trainable, new_buffers, opt_state, _ = step(trainable, buffers, opt_state)
    assert jax.tree.structure(new_trainable) == jax.tree.structure(trainable)
    hidden = MODEL.layers[0](params["0"], X)
    np.testing.assert_allclose(new_buffers["1"]["mean"], 0.5 * hidden.mean(axis=0), rtol=1e-6)
    assert not np.allclose(new_trainable["1"]["scale"], trainable["1"]["scale"])
