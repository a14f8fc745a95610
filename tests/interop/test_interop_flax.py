"""lazyinit.interop.flax: flax.linen modules as lazyinit layers, and params converted with flax's."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyinit as li
from lazyinit.interop.flax import FlaxModule, from_flax_variables, to_flax_variables


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _equal(a, b):
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        bool((x == y).all()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def _shapes(tree):
    return jax.tree.map(jnp.shape, tree)


class FlaxCNN(nn.Module):
    """Conv (with logical axes), BatchNorm, Dropout and Dense, in compact style."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        init = nn.with_partitioning(nn.initializers.lecun_normal(), (None, None, "embed", "mlp"))
        x = nn.Conv(4, (3, 3), kernel_init=init)(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.Dropout(0.5, deterministic=not train)(x)
        return nn.Dense(2)(x.mean((1, 2)))


def _model():
    return li.Sequential([FlaxModule(FlaxCNN()), li.nn.relu, li.Linear(3)])


X = jnp.ones((2, 6, 6, 3))


# ---------------------------------------------------------------------------
# FlaxModule: the dry run infers a flax module's variables.


def test_dry_run_infers_the_flax_variables_under_the_layer_path(key):
    params = li.dry_run(_model(), key, X)
    assert _shapes(params) == {
        "0": {
            "params": {
                "Conv_0": {"kernel": (3, 3, 3, 4), "bias": (4,)},
                "BatchNorm_0": {"scale": (4,), "bias": (4,)},
                "Dense_0": {"kernel": (4, 2), "bias": (2,)},
            },
            "batch_stats": {"BatchNorm_0": {"mean": (4,), "var": (4,)}},
        },
        "2": {"kernel": (2, 3), "bias": (3,)},
    }


def test_each_leaf_is_flax_s_own_init_with_the_key_of_its_path(key):
    params = li.dry_run(_model(), key, X)
    leaf_key = li.param_key(key, "0/params/Conv_0/kernel")
    expected = FlaxCNN().init(leaf_key, X)["params"]["Conv_0"]["kernel"].value
    assert bool((params["0"]["params"]["Conv_0"]["kernel"] == expected).all())
    assert bool((params["0"]["batch_stats"]["BatchNorm_0"]["var"] == 1).all())


def test_specs_carry_flax_s_axes_and_collections_as_trainable_flags():
    t = li.trace(_model(), X)
    kernel = t.params[("0", "params", "Conv_0", "kernel")]
    assert kernel.axes == (None, None, "embed", "mlp")
    assert kernel.trainable
    assert not t.params[("0", "batch_stats", "BatchNorm_0", "mean")].trainable


def test_abstract_dry_run_allocates_nothing(key):
    params = li.dry_run(_model(), key, jax.ShapeDtypeStruct(X.shape, X.dtype))
    leaves = jax.tree.leaves(params)
    assert leaves and all(isinstance(l, jax.ShapeDtypeStruct) for l in leaves)
    assert params["0"]["params"]["Conv_0"]["kernel"].shape == (3, 3, 3, 4)


def test_dry_run_is_repeatable_and_dtype_choices_apply(key):
    model = _model()
    assert _equal(li.dry_run(model, key, X), li.dry_run(model, key, X))
    half = li.dry_run(model, key, X, dtype={"*": "float32", "0/params": "bfloat16"})
    assert half["0"]["params"]["Dense_0"]["kernel"].dtype == jnp.bfloat16
    assert half["0"]["batch_stats"]["BatchNorm_0"]["mean"].dtype == jnp.float32


def test_jit_and_grad_go_through_the_wrapped_module(key):
    model = _model()
    params = li.dry_run(model, key, X)
    y = jax.jit(model)(params, X)
    assert y.shape == (2, 3)
    grads = jax.grad(lambda p: jnp.sum(model(p, X) ** 2))(params)
    assert _shapes(grads) == _shapes(params)
    assert float(jnp.abs(grads["0"]["params"]["Conv_0"]["kernel"]).sum()) > 0


def test_output_equals_flax_apply_on_the_same_variables(key):
    params = li.dry_run(FlaxModule(FlaxCNN()), key, X)
    x = jax.random.normal(jax.random.key(1), X.shape)
    _close(FlaxModule(FlaxCNN())(params, x), FlaxCNN().apply(params, x))


def test_lazy_state_is_one_placeholder_until_the_dry_run(key):
    model = _model()
    lazy = li.lazy_state(model)
    assert lazy["0"] == li.Uninitialized()
    assert li.has_uninitialized(lazy)
    params = li.dry_run(model, key, X, state=lazy)
    assert not li.has_uninitialized(params)


def test_a_flax_checkpoint_loads_into_the_lazy_state_and_the_dry_run_keeps_it(key):
    model = _model()
    variables = FlaxCNN().init(jax.random.key(7), X)
    variables = jax.tree.map(lambda v: v.value if isinstance(v, nn.Partitioned) else v, variables,
                             is_leaf=lambda v: isinstance(v, nn.Partitioned))  # fmt: skip
    state, report = li.load_state(li.lazy_state(model), {"0": variables}, strict=False)
    assert "0/params/Conv_0/kernel" in report.loaded
    params = li.dry_run(model, key, X, state=state)
    assert _equal(params["0"], variables)


def test_batch_stats_are_buffers_updated_by_a_mutable_apply(key):
    model = _model()
    params = li.dry_run(model, key, X)
    trainable, buffers = li.partition(model, params, X)
    assert _shapes(buffers["0"]["batch_stats"]) == {"BatchNorm_0": {"mean": (4,), "var": (4,)}}
    assert jax.tree.leaves(trainable["0"]["batch_stats"]) == []  # the nesting is kept, empty
    x = jax.random.normal(jax.random.key(1), X.shape) + 3
    rngs = {"dropout": jax.random.key(2)}
    out, updates = li.apply(model, params, x, train=True, rngs=rngs, mutable=True)
    assert _shapes(updates) == {"0": {"batch_stats": {"BatchNorm_0": {"mean": (4,), "var": (4,)}}}}
    _, flax_updates = FlaxCNN().apply(
        params["0"], x, train=True, rngs={"dropout": jax.random.key(2)}, mutable=["batch_stats"]
    )
    _close(updates["0"]["batch_stats"]["BatchNorm_0"]["mean"],
           flax_updates["batch_stats"]["BatchNorm_0"]["mean"])  # fmt: skip


def test_training_mode_outside_a_mutable_apply_is_an_error(key):
    model = _model()
    params = li.dry_run(model, key, X)
    with pytest.raises(
        li.errors.UpdateBuffersError,
        match=r"FlaxModule\(FlaxCNN\) updates its batch_stats in this call\. Call "
        r"li\.apply\(model, params, x, \.\.\., mutable=True\)",
    ):
        model(params, X, train=True, rngs={"dropout": jax.random.key(1)})


def test_two_wrapped_modules_get_different_values_from_their_paths(key):
    model = li.Sequential([FlaxModule(nn.Dense(4)), FlaxModule(nn.Dense(4))])
    params = li.dry_run(model, key, jnp.ones((1, 4)))
    a, b = params["0"]["params"]["kernel"], params["1"]["params"]["kernel"]
    assert not bool((a == b).all())


def test_a_bad_input_names_the_layer_path():
    model = li.Sequential([li.Linear(4), FlaxModule(nn.Conv(2, (3, 3)))])
    with pytest.raises(li.errors.InferShapeError, match=r"at '1'"):
        li.trace(model, jnp.ones((2,)))


# ---------------------------------------------------------------------------
# Params of lazyinit's layers <-> variables of their flax equivalents.


def _bn_variables(variables):
    """Running statistics that are not the defaults."""
    return {**variables, "batch_stats": {"mean": jnp.arange(4.0), "var": jnp.arange(1.0, 5.0)}}


LAYERS = {
    "dense": (nn.Dense(3), li.Linear(3), (2, 5), None),
    "conv": (nn.Conv(4, (3, 3), strides=2, padding=1), li.Conv(4, (3, 3), stride=2, padding=1), (2, 7, 7, 3), None),
    "conv-groups": (nn.Conv(4, (2,), feature_group_count=2, padding="VALID"), li.Conv(4, (2,), groups=2), (2, 6, 4), None),
    "convtranspose-same": (nn.ConvTranspose(4, (3, 3), strides=(2, 2), padding="SAME"), li.ConvTranspose(4, (3, 3), stride=2, padding="SAME"), (1, 4, 4, 3), None),
    "convtranspose-valid": (nn.ConvTranspose(2, (2,), strides=(3,), padding="VALID"), li.ConvTranspose(2, (2,), stride=3, padding="VALID"), (1, 5, 3), None),
    "batchnorm": (nn.BatchNorm(use_running_average=True), li.BatchNorm(), (2, 3, 4), _bn_variables),
    "layernorm": (nn.LayerNorm(epsilon=1e-5), li.LayerNorm(), (2, 3, 6), None),
    "instancenorm": (nn.InstanceNorm(epsilon=1e-5), li.InstanceNorm(affine=True), (2, 5, 3), None),
    "rmsnorm": (nn.RMSNorm(epsilon=1e-6), li.RMSNorm(), (2, 3, 6), None),
    "groupnorm": (nn.GroupNorm(num_groups=2, epsilon=1e-5), li.GroupNorm(2), (2, 4, 6), None),
    "embed": (nn.Embed(11, 4), li.Embedding(11, 4), "ids", None),
    "attention": (nn.MultiHeadDotProductAttention(num_heads=2), li.MultiHeadAttention(num_heads=2), (2, 5, 8), None),
}  # fmt: skip


@pytest.mark.parametrize("name", list(LAYERS))
def test_each_layer_converts_both_ways_with_equal_outputs(name):
    module, layer, shape, adjust = LAYERS[name]
    if shape == "ids":
        x = jax.random.randint(jax.random.key(1), (2, 5), 0, 11)
    else:
        x = jax.random.normal(jax.random.key(1), shape)
    variables = module.init(jax.random.key(0), x)
    variables = {**variables, "params": jax.tree.map(lambda v: v + 0.1, variables["params"])}
    if adjust is not None:
        variables = adjust(variables)
    params, _ = from_flax_variables(layer, variables, x)
    _close(layer(params, x), module.apply(variables, x))
    back = to_flax_variables(layer, params, x)
    assert _equal(back, variables)
    _close(module.apply(back, x), layer(params, x))


class FlaxMLP(nn.Module):
    """The seed's LazyMLP in flax, with setup names that mirror lazyinit's fields."""

    def setup(self):
        self.fc1 = nn.Dense(10)
        self.fc2 = nn.Dense(1)

    def __call__(self, x):
        return nn.relu(self.fc2(nn.relu(self.fc1(x))))


class LazyMLP(li.Layer):
    fc1: li.Layer = li.Linear(10)
    fc2: li.Layer = li.Linear(1)

    def __call__(self, params, x):
        return jax.nn.relu(self.fc2(params["fc2"], jax.nn.relu(self.fc1(params["fc1"], x))))


def test_a_whole_model_converts_both_ways(key):
    x = jax.random.normal(jax.random.key(1), (4, 3))
    variables = FlaxMLP().init(key, x)
    params, _ = from_flax_variables(LazyMLP(), variables, x)
    _close(LazyMLP()(params, x), FlaxMLP().apply(variables, x))
    assert _equal(to_flax_variables(LazyMLP(), params), variables)


def test_compact_names_map_with_rename(key):
    flax_model = nn.Sequential([nn.Dense(10), nn.relu, nn.Dense(1), nn.relu])
    x = jax.random.normal(jax.random.key(1), (4, 3))
    variables = flax_model.init(key, x)
    rename = {"fc1": "layers_0", "fc2": "layers_2"}
    params, _ = from_flax_variables(LazyMLP(), variables, x, rename=rename)
    _close(LazyMLP()(params, x), flax_model.apply(variables, x))
    assert _equal(to_flax_variables(LazyMLP(), params, rename=rename), variables)


def test_a_model_with_a_flax_module_inside_exports_its_variables_as_they_are(key):
    model = li.Sequential([FlaxModule(nn.Dense(4)), li.nn.relu, li.BatchNorm()])
    params = li.dry_run(model, key, jnp.ones((2, 3)))
    variables = to_flax_variables(model, params, jnp.ones((2, 3)))
    assert _shapes(variables) == {
        "params": {"0": {"kernel": (3, 4), "bias": (4,)}, "2": {"scale": (4,), "bias": (4,)}},
        "batch_stats": {"2": {"mean": (4,), "var": (4,)}},
    }
    assert _equal(from_flax_variables(model, variables, jnp.ones((2, 3)))[0], params)


def test_bad_variables_are_all_listed_and_left_unchanged(key):
    x = jnp.ones((4, 3))
    variables = FlaxMLP().init(key, x)
    bad = {"params": {"fc1": dict(variables["params"]["fc1"]), "fc9": variables["params"]["fc2"]}}
    bad["params"]["fc1"]["kernel"] = jnp.ones((10, 3))
    before = jax.tree.map(lambda a: a, bad)
    with pytest.raises(li.errors.StateMismatchError) as info:
        from_flax_variables(LazyMLP(), bad, x)
    message = str(info.value)
    assert len(info.value.problems) == 6  # 5 and a rename= hint: fc2 may be fc9
    assert "rename={'fc2': 'fc9'}" in info.value.problems[-1]
    assert (
        "size mismatch for 'params/fc1/kernel' (Linear at 'fc1', parameter 'fc1/kernel'): "
        "found shape (10, 3), expected (3, 10) (the same sizes in another order" in message
    )
    assert "missing key 'params/fc2/kernel' (Linear at 'fc2', parameter 'fc2/kernel')" in message
    assert "unexpected key 'params/fc9/bias'" in message
    assert _equal(bad, before) and bad["params"]["fc1"]["kernel"].shape == (10, 3)


def test_a_missing_variable_raises_with_match_pinned(key):
    variables = FlaxMLP().init(key, jnp.ones((4, 3)))
    del variables["params"]["fc2"]["bias"]
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"missing key 'params/fc2/bias' \(Linear at 'fc2', parameter 'fc2/bias'\)",
    ):
        from_flax_variables(LazyMLP(), variables, jnp.ones((4, 3)))
