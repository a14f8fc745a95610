"""Mixed precision: compute_dtype on built-in layers, li.mixed_precision, float32 params kept."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lazyinit as li

LAYERS = {
    "linear": (li.Linear(4, compute_dtype="bfloat16"), lambda: jnp.ones((2, 3))),
    "conv": (li.Conv(4, (3, 3), compute_dtype="bfloat16"), lambda: jnp.ones((1, 6, 6, 2))),
    "conv_transpose": (
        li.ConvTranspose(4, (3, 3), compute_dtype="bfloat16"),
        lambda: jnp.ones((1, 4, 4, 2)),
    ),
    "embedding": (li.Embedding(10, 4, compute_dtype="bfloat16"), lambda: jnp.ones((2, 3), int)),
    "attention": (
        li.MultiHeadAttention(2, causal=True, compute_dtype="bfloat16"),
        lambda: jnp.ones((1, 5, 8)),
    ),
    "layer_norm": (li.LayerNorm(compute_dtype="bfloat16"), lambda: jnp.ones((2, 8))),
    "rms_norm": (li.RMSNorm(compute_dtype="bfloat16"), lambda: jnp.ones((2, 8))),
    "group_norm": (li.GroupNorm(2, compute_dtype="bfloat16"), lambda: jnp.ones((2, 3, 3, 4))),
    "batch_norm": (li.BatchNorm(compute_dtype="bfloat16"), lambda: jnp.ones((4, 3))),
    "instance_norm": (
        li.InstanceNorm(affine=True, compute_dtype="bfloat16"),
        lambda: jnp.ones((2, 5, 3)),
    ),
}


def test_batchnorm_statistics_stay_float32(key):
    layer = li.BatchNorm(compute_dtype="bfloat16")
    x = jnp.linspace(0.0, 1.0, 12).reshape(4, 3)
    params = li.dry_run(layer, key, x)
    out, updates = li.apply(layer, params, x, train=True, mutable=True)
    assert out.dtype == jnp.bfloat16
    assert updates["mean"].dtype == updates["var"].dtype == jnp.float32
    np.testing.assert_allclose(updates["mean"], 0.1 * x.mean(0), rtol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_compute_dtype_computes_in_it_and_keeps_float32_params(name, key):
    layer, sample = LAYERS[name]
    x = sample()
    params = li.dry_run(layer, key, x)
    assert {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    assert li.trace(layer, x).outputs.dtype == jnp.bfloat16
    y = jax.jit(layer)(params, x)
    assert y.dtype == jnp.bfloat16
    if jnp.issubdtype(x.dtype, jnp.floating):
        grads = jax.grad(lambda p: layer(p, x).astype(jnp.float32).sum())(params)
        assert {a.dtype for a in jax.tree.leaves(grads)} == {jnp.dtype("float32")}


def test_same_params_as_full_precision(key):
    x = jnp.ones((2, 3))
    full = li.Sequential([li.Linear(8), li.nn.relu, li.Linear(2)])
    half = li.mixed_precision(full)
    a, b = li.dry_run(full, key, x), li.dry_run(half, key, x)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_allclose(half(a, x).astype(jnp.float32), full(a, x), rtol=2e-2, atol=2e-2)


def test_mixed_precision_reaches_nested_layers():
    model = li.Sequential(
        [
            li.Repeat(li.Residual([li.LayerNorm(), li.Linear(4)]), 2),
            li.Ensemble(li.Linear(3), 2),
            li.nn.relu,
        ]
    )
    half = li.mixed_precision(model, "float16")
    assert half.layers[0].block.layer.layers[0].compute_dtype == jnp.float16
    assert half.layers[0].block.layer.layers[1].compute_dtype == jnp.float16
    assert half.layers[1].layer.compute_dtype == jnp.float16
    assert half.layers[2] is li.nn.relu
    assert model.layers[1].layer.compute_dtype is None  # the original is unchanged


@pytest.mark.parametrize("dtype", ["int8", "not-a-dtype"])
def test_mixed_precision_refuses_non_float(dtype):
    with pytest.raises(li.errors.InvalidArgumentError, match=r"compute_dtype=.*Pass 'bfloat16'"):
        li.mixed_precision(li.Linear(2), dtype)


def _digits_accuracy(model, key, steps=80):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = jnp.asarray(digits.data / 16.0, jnp.float32)
    y = jnp.asarray(digits.target, jnp.int32)
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    params = li.dry_run(model, key, x_train[:1])
    optimizer = optax.adam(1e-2)

    def loss_fn(p):
        logits = model(p, x_train).astype(jnp.float32)  # the loss in full precision
        return optax.softmax_cross_entropy_with_integer_labels(logits, y_train).mean()

    def step(carry, _):
        p, s = carry
        grads = jax.grad(loss_fn)(p)
        updates, s = optimizer.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), None

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), length=steps))(
        params
    )
    assert {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype("float32")}
    logits = model(params, x_test).astype(jnp.float32)
    return float(jnp.mean(logits.argmax(-1) == y_test))


def test_bfloat16_training_matches_float32_accuracy_on_digits(key):
    model = li.Sequential([li.Linear(32), li.nn.relu, li.Linear(10)])
    full = _digits_accuracy(model, key)
    half = _digits_accuracy(li.mixed_precision(model, "bfloat16"), key)
    assert full > 0.85
    assert abs(full - half) <= 0.01, (full, half)
