"""Sharded materialization on 8 simulated CPU devices.

JAX fixes its device count when it starts, and the main test process has one
device, so ``test_sharding_devices.py`` runs this file in a child pytest with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``. Its name does not
match ``test_*.py`` so that the main run does not collect it directly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from sharding_models import RULES, llama_decoder, mlp

import lazyinit as li

pytestmark = pytest.mark.skipif(
    jax.device_count() != 8,
    reason="needs 8 devices: test_sharding_devices.py runs this file with XLA_FLAGS set",
)

X = jnp.ones((4, 8))

# mesh shape -> (axis names, rules, {path: (expected spec, expected shard shape)})
CASES = {
    (8,): (
        ("fsdp",),
        {"embed": "fsdp", "mlp": None},
        {
            "0/kernel": (P("fsdp", None), (1, 16)),
            "0/bias": (P(None), (16,)),
            "2/kernel": (P(None, "fsdp"), (16, 1)),
            "2/bias": (P("fsdp"), (1,)),
        },
    ),
    (2, 4): (
        ("fsdp", "tensor"),
        RULES,
        {
            "0/kernel": (P("fsdp", "tensor"), (4, 4)),
            "0/bias": (P("tensor"), (4,)),
            "2/kernel": (P("tensor", "fsdp"), (4, 4)),
            "2/bias": (P("fsdp"), (4,)),
        },
    ),
    (4, 2): (
        ("fsdp", "tensor"),
        RULES,
        {
            "0/kernel": (P("fsdp", "tensor"), (2, 8)),
            "0/bias": (P("tensor"), (8,)),
            "2/kernel": (P("tensor", "fsdp"), (8, 2)),
            "2/bias": (P("fsdp"), (2,)),
        },
    ),
}


def flat(params):
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(k.key for k in path): leaf for path, leaf in leaves}


def assert_same_values(a, b):
    a, b = flat(a), flat(b)
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_array_equal(np.asarray(a[path]), np.asarray(b[path]), err_msg=path)


def auto_mesh(shape, names):
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))


@pytest.mark.parametrize(
    "shape, axis_type",
    [
        ((8,), AxisType.Auto),
        ((2, 4), AxisType.Auto),
        ((4, 2), AxisType.Auto),
        ((2, 4), AxisType.Explicit),
    ],
    ids=str,
)
def test_each_parameter_lands_in_its_rules_sharding_with_the_unsharded_values(
    key, shape, axis_type
):
    names, rules, expected = CASES[shape]
    mesh = jax.make_mesh(shape, names, axis_types=(axis_type,) * len(shape))
    params = li.dry_run(mlp(), key, X, mesh=mesh, rules=rules)
    for path, leaf in flat(params).items():
        spec, shard_shape = expected[path]
        assert leaf.sharding.spec == spec, path
        assert leaf.sharding.is_equivalent_to(NamedSharding(mesh, spec), leaf.ndim), path
        assert len(leaf.addressable_shards) == 8
        assert {s.data.shape for s in leaf.addressable_shards} == {shard_shape}, path
    assert_same_values(params, li.dry_run(mlp(), key, X))


def test_no_device_ever_holds_a_whole_parameter(key):
    """The compiled draw's per-device memory is below one full kernel's size."""
    mesh = auto_mesh((2, 4), ("fsdp", "tensor"))
    model, x = li.Linear(1024), jnp.ones((1, 512))
    draw = jax.jit(lambda k: li.dry_run(model, k, x, mesh=mesh, rules=RULES))
    stats = draw.lower(key).compile().memory_analysis()
    kernel_bytes = 512 * 1024 * 4
    assert stats.output_size_in_bytes < kernel_bytes / 4  # this device's shards: 1/8 of it
    assert stats.temp_size_in_bytes + stats.output_size_in_bytes < kernel_bytes


def test_each_device_draws_only_its_shards_without_temporaries(key):
    """Issue 20: eight 1024 x 1024 kernels over 8 devices, more than one group's worth, are
    drawn by one kernel compiled for their kind: per device, its shard and no temporaries."""
    from lazyinit import _drawing, _materialize

    li.clear_cache()
    mesh = auto_mesh((8,), ("fsdp",))
    model = li.Sequential([li.Linear(1024, use_bias=False) for _ in range(8)])
    x = jnp.ones((1, 1024))
    params = li.dry_run(model, key, x, mesh=mesh, rules={"embed": "fsdp", "mlp": None})
    assert not _drawing._PROGRAMS
    ((init, *_), kernel), *others = _drawing._KERNELS.items()
    assert not others
    stats = kernel.lower(key, _materialize.param_words(("0", "kernel"), init)).compile()
    stats = stats.memory_analysis()
    shard = 1024 * 1024 * 4 // 8
    assert stats.output_size_in_bytes < shard + 64  # the shard and the finite check
    assert stats.temp_size_in_bytes < shard // 16
    assert_same_values(params, li.dry_run(model, key, x))


def test_a_sharded_draw_names_nonfinite_values(key):
    def nan_at_the_last_row(k, shape, dtype):
        return jnp.zeros(shape, dtype).at[-1, -1].set(jnp.nan)

    mesh = auto_mesh((8,), ("fsdp",))
    model = li.Sequential([li.Linear(16, kernel_init=nan_at_the_last_row)])
    with pytest.warns(li.errors.NonFiniteParamWarning, match=r"'0/kernel' \(nan_at_the_last_row\)"):
        li.dry_run(model, key, jnp.ones((1, 8)), mesh=mesh, rules={"embed": "fsdp", "mlp": None})


def test_abstract_dry_run_on_a_real_mesh_plans_the_same_shardings(key):
    mesh = auto_mesh((2, 4), ("fsdp", "tensor"))
    abstract = li.dry_run(
        mlp(), key, jax.ShapeDtypeStruct((4, 8), "float32"), mesh=mesh, rules=RULES
    )
    real = li.dry_run(mlp(), key, X, mesh=mesh, rules=RULES)
    for path, leaf in flat(abstract).items():
        assert isinstance(leaf, jax.ShapeDtypeStruct)
        assert leaf.sharding == flat(real)[path].sharding


# ---------------------------------------------------------------------------
# Loaded state: placed in the planned layout, never overwritten.


def test_loaded_host_and_single_device_state_is_placed_and_kept_bit_for_bit(key):
    mesh = auto_mesh((4, 2), ("fsdp", "tensor"))
    loaded = li.dry_run(mlp(), jax.random.key(7), X)
    state = {"0": jax.tree.map(np.asarray, loaded["0"]), "2": loaded["2"]}  # host and device 0
    params, report = li.dry_run_with_report(
        mlp(), key, X, state=state, mesh=mesh, rules=RULES, strict=False
    )
    assert_same_values(params, loaded)
    assert report.kept == ("0/bias", "0/kernel", "2/bias", "2/kernel")
    assert report.initialized == report.resharded == ()
    for path, (spec, shard_shape) in CASES[(4, 2)][2].items():
        assert flat(params)[path].sharding.spec == spec
        assert {s.data.shape for s in flat(params)[path].addressable_shards} == {shard_shape}


def test_partial_state_keeps_the_loaded_part_and_draws_the_rest_sharded(key):
    mesh = auto_mesh((2, 4), ("fsdp", "tensor"))
    loaded = li.dry_run(mlp(), jax.random.key(7), X)
    params = li.dry_run(mlp(), key, X, state={"0": loaded["0"]}, mesh=mesh, rules=RULES)
    assert_same_values(params["0"], loaded["0"])
    assert_same_values(params["2"], li.dry_run(mlp(), key, X)["2"])
    assert params["2"]["kernel"].sharding.spec == P("tensor", "fsdp")


def test_a_loaded_array_sharded_another_way_is_an_error_unless_reshard(key):
    mesh = auto_mesh((2, 4), ("fsdp", "tensor"))
    other = li.dry_run(mlp(), key, X, mesh=mesh, rules={"embed": "tensor", "mlp": "fsdp"})
    with pytest.raises(
        li.errors.ReshardStateError,
        match=r"'0/kernel' \(8, 16\): loaded as P\('tensor', 'fsdp'\) over mesh \{'fsdp': 2, "
        r"'tensor': 4\}, the plan is P\('fsdp', 'tensor'\) over mesh \{'fsdp': 2, 'tensor': 4\}"
        r"(.|\n)*Pass reshard=True to move loaded arrays to the planned layout",
    ) as info:
        li.dry_run(mlp(), key, X, state=other, mesh=mesh, rules=RULES)
    assert len(info.value.problems) == 4
    params, report = li.dry_run_with_report(
        mlp(), key, X, state=other, mesh=mesh, rules=RULES, reshard=True, strict=False
    )
    assert report.resharded == report.kept == ("0/bias", "0/kernel", "2/bias", "2/kernel")
    assert params["0"]["kernel"].sharding.spec == P("fsdp", "tensor")
    assert_same_values(params, other)


def test_a_placeholders_device_wins_over_the_plan(key):
    mesh = auto_mesh((2, 4), ("fsdp", "tensor"))
    state = li.lazy_state(mlp())
    state["2"]["bias"] = state["2"]["bias"].to(jax.devices()[3])
    params = li.dry_run(mlp(), key, X, state=state, mesh=mesh, rules=RULES)
    assert params["2"]["bias"].sharding == jax.sharding.SingleDeviceSharding(jax.devices()[3])
    assert params["0"]["kernel"].sharding.spec == P("fsdp", "tensor")


def test_load_places_each_array_where_its_template_says(key, tmp_path):
    mesh = auto_mesh((2, 4), ("fsdp", "tensor"))
    saved = li.dry_run(mlp(), key, X)
    li.save(tmp_path / "mlp.safetensors", saved)
    like = li.dry_run(mlp(), key, jax.ShapeDtypeStruct(X.shape, X.dtype), mesh=mesh, rules=RULES)
    like["2"]["bias"] = li.lazy_state(mlp())["2"]["bias"].to(jax.devices()[3])
    with jax.default_device(jax.devices()[5]):
        placed, _ = li.load(tmp_path / "mlp.safetensors", like=like)
        as_saved, _ = li.load(tmp_path / "mlp.safetensors")
    assert_same_values(placed, saved)
    assert_same_values(as_saved, saved)
    assert placed["0"]["kernel"].sharding.spec == P("fsdp", "tensor")  # the mesh template
    assert {s.data.shape for s in placed["0"]["kernel"].addressable_shards} == {(4, 4)}
    assert placed["2"]["bias"].devices() == {jax.devices()[3]} and placed["2"]["bias"].committed
    # without a template: the default device, uncommitted, as jnp.asarray puts it
    for leaf in jax.tree.leaves(as_saved):
        assert leaf.devices() == {jax.devices()[5]} and not leaf.committed


# ---------------------------------------------------------------------------
# Training on the mesh.


def make_step(model, opt, shardings=None):
    def loss_fn(params, ids):
        logits = model(params, ids[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()

    def step(params, state, ids):
        loss, grads = jax.value_and_grad(loss_fn)(params, ids)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    return jax.jit(step, out_shardings=(shardings, None, None))  # keep the params' layout


def test_a_sharded_decoder_and_its_optax_train_step_match_the_unsharded_ones(key):
    model = llama_decoder(num_layers=1, d_model=16, num_heads=4, ffn=32, vocab=64)
    ids = jax.random.randint(jax.random.key(1), (8, 9), 0, 64)
    opt = optax.adamw(1e-2)
    mesh = auto_mesh((2, 4), ("fsdp", "tensor"))

    params = li.dry_run(model, key, ids[:, :-1], mesh=mesh, rules=RULES)
    batch = jax.device_put(ids, NamedSharding(mesh, P("fsdp", None)))
    step = make_step(model, opt, jax.tree.map(lambda a: a.sharding, params))
    new, _, loss = step(params, opt.init(params), batch)

    ref_params = li.dry_run(model, key, ids[:, :-1])
    assert_same_values(params, ref_params)
    ref_new, _, ref_loss = make_step(model, opt)(ref_params, opt.init(ref_params), ids)

    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    for path, leaf in flat(new).items():
        assert leaf.sharding.is_equivalent_to(flat(params)[path].sharding, leaf.ndim), path
        np.testing.assert_allclose(leaf, flat(ref_new)[path], rtol=1e-5, atol=1e-6, err_msg=path)
