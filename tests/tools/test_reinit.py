"""li.reinit: re-drawn paths equal a fresh dry run's values; every other leaf is the very same object.

And model surgery with it: a new head, the old params as ``state=`` of
``li.dry_run_with_report(..., strict=False)``, whose report says what was kept,
initialized and ignored.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from style_models import STYLES, Fields, styles

import lazyinit as li

X = jnp.ones((4, 8))


def flat(tree):
    return {"/".join(k.key for k in path): v for path, v in jax.tree.leaves_with_path(tree)}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    "paths, redrawn",
    [
        ("head", {"head/kernel", "head/bias"}),
        (("head", "body/bias"), {"head/kernel", "head/bias", "body/bias"}),
        ("*/bias", {"body/bias", "norm/bias", "head/bias"}),
    ],
)
def test_redrawn_paths_equal_a_fresh_dry_run_and_the_rest_are_the_same_objects(
    style, paths, redrawn
):
    model = styles()[style]
    params = li.dry_run(model, jax.random.key(0), X)
    new = li.reinit(model, params, jax.random.key(1), X, paths=paths)
    fresh = flat(li.dry_run(model, jax.random.key(1), X))
    old, new_flat = flat(params), flat(new)
    assert new_flat.keys() == old.keys()
    for p in old:
        if p in redrawn:
            np.testing.assert_array_equal(new_flat[p], fresh[p])
            assert not np.array_equal(new_flat[p], old[p]) or p.endswith("bias")  # zeros
        else:
            assert new_flat[p] is old[p], p


def test_redrawn_leaves_keep_their_dtype_and_kept_ones_their_dtype_too():
    model = Fields()
    params = li.dry_run(model, jax.random.key(0), X, dtype={"*": "bfloat16", "norm": "float32"})
    new = li.reinit(model, params, jax.random.key(1), X, paths="head")
    fresh = li.dry_run(model, jax.random.key(1), X, dtype="bfloat16")
    assert new["head"]["kernel"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(new["head"]["kernel"], fresh["head"]["kernel"])
    assert new["body"]["kernel"] is params["body"]["kernel"]
    assert new["norm"]["var"] is params["norm"]["var"]


def test_reinit_is_pure():
    model = Fields()
    params = li.dry_run(model, jax.random.key(0), X)
    before = {p: v for p, v in flat(params).items()}
    li.reinit(model, params, jax.random.key(1), X, paths="head")
    assert {p: v for p, v in flat(params).items()} == before  # same objects, nothing replaced


def test_a_pattern_that_matches_nothing_is_refused_listing_the_layers():
    model = Fields()
    params = li.dry_run(model, jax.random.key(0), X)
    with pytest.raises(
        li.errors.InvalidArgumentError, match=r"'haed' match no parameter.*body, head, norm"
    ):
        li.reinit(model, params, jax.random.key(1), X, paths=["head", "haed"])


def test_an_abstract_sample_is_refused():
    model = Fields()
    params = li.dry_run(model, jax.random.key(0), X)
    with pytest.raises(
        li.errors.InvalidArgumentError, match=r"li.reinit draws values.*array sample"
    ):
        li.reinit(
            model, params, jax.random.key(1), jax.ShapeDtypeStruct(X.shape, X.dtype), paths="head"
        )


def test_placeholders_are_refused():
    model = Fields()
    state = li.lazy_state(model, X)
    with pytest.raises(
        li.errors.UninitializedParamError, match=r"body/kernel.*placeholders.*li.dry_run"
    ):
        li.reinit(model, state, jax.random.key(1), X, paths="head")
    planned = li.dry_run(model, jax.random.key(0), jax.ShapeDtypeStruct(X.shape, X.dtype))
    with pytest.raises(li.errors.UninitializedParamError, match=r"body/kernel.*ShapeDtypeStructs"):
        li.reinit(model, planned, jax.random.key(1), X, paths="head")


def test_params_missing_a_layer_are_refused():
    model = Fields()
    params = dict(li.dry_run(model, jax.random.key(0), X))
    del params["body"]
    with pytest.raises(
        li.errors.StateMismatchError, match=r"missing key 'body/kernel'\n  missing key 'body/bias'"
    ):
        li.reinit(model, params, jax.random.key(1), X, paths="head")


def test_surgery_new_head_then_reinit_the_block_below_it():
    """The fine-tuning recipe of docs/beyond-pytorch.md, checked value by value."""
    old_model = li.Sequential([li.Linear(16), li.nn.relu, li.Linear(16), li.nn.relu, li.Linear(4)])
    new_model = li.Sequential([li.Linear(16), li.nn.relu, li.Linear(16), li.nn.relu, li.Linear(5)])
    old = li.dry_run(old_model, jax.random.key(0), X)
    state = {k: v for k, v in old.items() if k != "4"}  # the old head does not fit: drop it
    state["adapter"] = old["4"]  # something the new model does not have: ignored, and reported
    params, report = li.dry_run_with_report(
        new_model, jax.random.key(1), X, state=state, strict=False
    )
    assert report.kept == ("0/bias", "0/kernel", "2/bias", "2/kernel")
    assert report.initialized == ("4/bias", "4/kernel")
    assert report.unexpected == ("adapter/bias", "adapter/kernel")
    assert params["0"]["kernel"] is old["0"]["kernel"]
    params = li.reinit(new_model, params, jax.random.key(2), X, paths="2")
    fresh = li.dry_run(new_model, jax.random.key(2), X)
    np.testing.assert_array_equal(params["2"]["kernel"], fresh["2"]["kernel"])
    assert params["0"]["kernel"] is old["0"]["kernel"]
    assert params["4"]["kernel"].shape == (16, 5)


SHARDED = r"""
import jax, jax.numpy as jnp, numpy as np
import lazyinit as li

assert jax.device_count() == 4
mesh = jax.make_mesh((2, 2), ("data", "model"))
model = li.Sequential([li.Linear(8), li.nn.relu, li.Linear(4)])
x = jnp.ones((2, 6))
rules = {"embed": "data", "mlp": "model"}
params = li.dry_run(model, jax.random.key(0), x, mesh=mesh, rules=rules)
new = li.reinit(model, params, jax.random.key(1), x, paths="2")
fresh = li.dry_run(model, jax.random.key(1), x)
for name in ("kernel", "bias"):
    assert new["0"][name] is params["0"][name]
    assert new["2"][name].sharding == params["2"][name].sharding, name
    np.testing.assert_array_equal(new["2"][name], fresh["2"][name])
assert params["2"]["kernel"].sharding.spec == jax.sharding.PartitionSpec("data", "model")
print("sharded reinit ok", new["2"]["kernel"].sharding.spec)
"""


@pytest.mark.slow  # starts a Python process
def test_redrawn_leaves_keep_their_sharding_on_a_mesh():
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(root),
    }
    out = subprocess.run(
        [sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "sharded reinit ok" in out.stdout
