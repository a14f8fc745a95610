"""Sharding plans in this process: rules, overrides, bad input, memory estimates, the 7B plan.

An ``AbstractMesh`` needs no devices, so everything here runs on the one CPU
device the main test process has. Materializing over 8 simulated devices and
over 2 processes is tested in child processes (test_sharding_devices.py,
test_sharding_multihost.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, NamedSharding
from jax.sharding import PartitionSpec as P
from sharding_models import RULES, llama_decoder, mlp

import lazyinit as li
from lazyinit import _sharding

MESH = AbstractMesh((2, 4), ("fsdp", "tensor"))
X = jax.ShapeDtypeStruct((4, 8), "float32")


def specs(params):
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(k.key for k in path): leaf.sharding.spec for path, leaf in flat}


def test_abstract_dry_run_returns_planned_shardings():
    params = li.dry_run(mlp(), 0, X, mesh=MESH, rules=RULES)
    assert specs(params) == {
        "0/kernel": P("fsdp", "tensor"),
        "0/bias": P("tensor"),
        "2/kernel": P("tensor", "fsdp"),
        "2/bias": P("fsdp"),
    }
    kernel = params["0"]["kernel"]
    assert isinstance(kernel, jax.ShapeDtypeStruct)
    assert (kernel.shape, kernel.dtype) == ((8, 16), jnp.float32)
    assert kernel.sharding == NamedSharding(MESH, P("fsdp", "tensor"))


def test_rules_as_pairs_fall_back_when_a_mesh_axis_is_taken():
    square = li.Linear(8, axes=("embed", "embed"))
    rules = [("embed", "fsdp"), ("embed", "tensor"), ("mlp", None)]
    params = li.dry_run(square, 0, X, mesh=MESH, rules=rules)
    assert specs(params) == {"kernel": P("fsdp", "tensor"), "bias": P("fsdp")}


def test_a_rule_may_split_a_dimension_over_several_mesh_axes():
    rules = {"embed": ("fsdp", "tensor"), "mlp": None}
    params = li.dry_run(mlp(width=8), 0, X, mesh=MESH, rules=rules)
    assert specs(params)["0/kernel"] == P(("fsdp", "tensor"), None)
    assert params["0"]["kernel"].sharding.shard_shape((8, 8)) == (1, 8)


def test_axes_override_per_path_with_logical_names_or_a_partition_spec():
    axes = {"0/kernel": (None, "embed"), "2": P(None, "tensor"), "*/bias": (None,)}
    params = li.dry_run(mlp(), 0, X, mesh=MESH, rules=RULES, axes=axes)
    assert specs(params) == {
        "0/kernel": P(None, "fsdp"),
        "0/bias": P(None),
        "2/kernel": P(None, "tensor"),
        "2/bias": P(None),
    }


def test_parameters_without_logical_axes_are_replicated():
    model = li.Linear(8, axes=(None, None))
    assert specs(li.dry_run(model, 0, X, mesh=MESH, rules={})) == {
        "kernel": P(None, None),
        "bias": P(None),
    }


# ---------------------------------------------------------------------------
# Bad input: each error names the path, the dimension and the mesh axis.


def test_a_logical_axis_without_a_rule_is_an_error():
    with pytest.raises(
        li.errors.ShardParamError,
        match=r"'0/kernel' \(8, 16\): dimension 1 has logical axis 'mlp', which no rule maps "
        r"to an axis of mesh \{'fsdp': 2, 'tensor': 4\} \(rules cover \['embed'\]\)\. Add "
        r"\('mlp', <mesh axis or None>\) to rules; None replicates it\.",
    ):
        li.dry_run(mlp(), 0, X, mesh=MESH, rules={"embed": "fsdp"})


def test_every_problem_is_listed_at_once():
    with pytest.raises(li.errors.ShardParamError, match=r"\(3\):\n") as info:
        li.dry_run(mlp(), 0, X, mesh=MESH, rules={"embed": "fsdp"})
    for path in ("'0/kernel'", "'0/bias'", "'2/kernel'"):
        assert path in str(info.value)


def test_a_rule_naming_a_missing_mesh_axis_is_an_error():
    rules = {**RULES, "mlp": "model"}
    with pytest.raises(
        li.errors.ShardParamError,
        match=r"'0/kernel' \(8, 16\): dimension 1 \(logical axis 'mlp'\) maps to mesh axis "
        r"'model', which the mesh lacks; its axes are \{'fsdp': 2, 'tensor': 4\}",
    ):
        li.dry_run(mlp(), 0, X, mesh=MESH, rules=rules)


def test_a_dimension_not_divisible_by_its_mesh_axis_is_an_error():
    with pytest.raises(
        li.errors.ShardParamError,
        match=r"'0/kernel' \(8, 6\): dimension 1 \(logical axis 'mlp'\) has size 6, not "
        r"divisible by mesh axis 'tensor' of size 4\. .* override this path: "
        r"axes=\{'0/kernel': \.\.\.\}",
    ):
        li.dry_run(mlp(width=6), 0, X, mesh=MESH, rules=RULES)


def test_a_split_over_two_mesh_axes_must_divide_by_their_product():
    with pytest.raises(
        li.errors.ShardParamError,
        match=r"dimension 0 \(logical axis 'embed'\) has size 12, not divisible by mesh axis "
        r"\('fsdp', 'tensor'\) of size 8",
    ):
        li.dry_run(li.Linear(4), 0, jax.ShapeDtypeStruct((2, 12), "float32"), mesh=MESH,
                   rules={"embed": ("fsdp", "tensor"), "mlp": None})  # fmt: skip


def test_an_override_of_the_wrong_length_is_an_error():
    with pytest.raises(
        li.errors.ShardParamError,
        match=r"'0/kernel' \(8, 16\): axes override \('embed',\) names 1 dimension\(s\), the "
        r"parameter has 2",
    ):
        li.dry_run(mlp(), 0, X, mesh=MESH, rules=RULES, axes={"0/kernel": ("embed",)})


def test_a_mesh_axis_used_twice_is_an_error():
    with pytest.raises(li.errors.ShardParamError, match=r"'kernel' \(8, 8\): dimension 1 \('embed'\) "
                       r"maps to mesh axes 'fsdp', all already used"):  # fmt: skip
        li.dry_run(li.Linear(8, axes=("embed", "embed")), 0, X, mesh=MESH, rules=RULES)
    with pytest.raises(li.errors.ShardParamError, match=r"'kernel' \(8, 8\): layout P\('fsdp', 'fsdp'\) "
                       "shards more than one dimension over mesh axis 'fsdp'. Use each mesh axis at "
                       "most once per parameter."):  # fmt: skip
        li.dry_run(li.Linear(8), 0, X, mesh=MESH, rules=RULES, axes={"kernel": P("fsdp", "fsdp")})
    with pytest.raises(li.errors.ShardParamError, match=r"'kernel' \(8, 8\): layout P\(\('fsdp', 'fsdp'\), "
                       r"'tensor'\) shards more than one dimension over mesh axis 'fsdp'"):  # fmt: skip
        li.dry_run(li.Linear(8), 0, X, mesh=MESH, rules={**RULES, "embed": ("fsdp", "fsdp")})


def test_malformed_rules_and_rules_without_a_mesh_are_errors():
    with pytest.raises(li.errors.ShardParamError, match=r"Rules entry \('embed', 3\) must be"):
        li.dry_run(mlp(), 0, X, mesh=MESH, rules=[("embed", 3)])
    with pytest.raises(
        TypeError, match="rules= and axes= lay parameters out on a mesh; pass mesh="
    ):
        li.dry_run(mlp(), 0, X, rules=RULES)
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh or AbstractMesh"):
        li.dry_run(mlp(), 0, X, mesh=(2, 4), rules=RULES)
    with pytest.raises(TypeError, match="An AbstractMesh has no devices to materialize on"):
        li.dry_run(mlp(), 0, jnp.ones((4, 8)), mesh=MESH, rules=RULES)


# ---------------------------------------------------------------------------
# Memory plans.


def test_memory_plan_counts_each_devices_shards():
    plan = li.plan(mlp(), X, mesh=MESH, rules=RULES)
    # kernels (8, 16) and (16, 8) split 8 ways, biases (16,) over 'tensor' and (8,) over 'fsdp'
    assert plan.total_bytes == (8 * 16 * 2 + 16 + 8) * 4
    assert plan.bytes_per_device == (16 + 16 + 4 + 4) * 4
    assert plan.devices == 8
    assert "2/kernel  x1     (16, 8)  float32  P('tensor', 'fsdp')  64 B" in str(plan)


def test_memory_plan_of_a_tree_without_shardings_counts_whole_arrays():
    plan = li.Plan.of(li.dry_run(mlp(), 0, X))
    assert plan.total_bytes == plan.bytes_per_device == (8 * 16 * 2 + 16 + 8) * 4
    assert plan.devices == 1


def test_llama_7b_plan_allocates_nothing():
    before = {id(a) for a in jax.live_arrays()}
    ids = jax.ShapeDtypeStruct((1, 2048), "int32")
    mesh = AbstractMesh((4, 2), ("fsdp", "tensor"))  # 8 devices this machine does not have
    plan = li.plan(llama_decoder(), ids, mesh=mesh, rules=RULES)
    assert [a for a in jax.live_arrays() if id(a) not in before] == []
    assert sum(r[1] * np.prod(r[2]) for r in plan.rows) == 6_738_415_616  # LLaMA-7B's count
    assert plan.total_bytes == 6_738_415_616 * 4
    norms = 65 * 4096 * 4  # the 65 RMSNorm scales are split over 'fsdp' only: a quarter each
    assert plan.bytes_per_device == (plan.total_bytes - norms) // 8 + norms // 4
    q = plan.params["blocks"]["31"]["attn"]["query"]["kernel"]
    assert (q.shape, q.sharding.spec) == ((4096, 32, 128), P("fsdp", "tensor", None))
    assert q.sharding.shard_shape(q.shape) == (1024, 16, 128)
    assert (
        "blocks/*/mlp/gate/kernel    x32    (4096, 11008)    float32  P('fsdp', 'tensor')"
        in str(plan)
    )


class Counting(li.Layer):
    """A Linear whose specs count how often they are traced."""

    traced = []

    def specs(self, x):
        if isinstance(x, jax.ShapeDtypeStruct | jax.Array | jax.core.Tracer):
            Counting.traced.append(x.shape)  # (not li.lazy_state's question without input)
        return {"kernel": li.Param((x.shape[-1], 8), li.initializers.zeros, axes=("embed", "mlp"))}

    def __call__(self, params, x):
        return x @ params["kernel"]


def test_replanning_the_same_model_and_signature_reuses_the_trace():
    li.clear_cache()
    Counting.traced.clear()
    model = li.Sequential([Counting(), li.nn.relu, li.Linear(8)])
    first = li.plan(model, X, mesh=MESH, rules=RULES)
    again = li.plan(model, jnp.zeros((4, 8)), mesh=MESH, rules=RULES)  # arrays lend shapes only
    assert Counting.traced == [(4, 8)]
    assert again == first


# ---------------------------------------------------------------------------
# Processes that disagree (the real two-process run is in test_sharding_multihost.py).


def test_processes_that_disagree_get_an_error_naming_the_differing_paths(monkeypatch):
    from jax.experimental import multihost_utils

    mine = [("0/kernel", "float32(8, 16) P('fsdp', 'tensor')"), ("<key>", "key data [0, 0]")]
    theirs = [("0/kernel", "float32(8, 24) P('fsdp', 'tensor')"), ("1/bias", "float32(2,) P()")]
    others = iter([None, None])

    def allgather(x):  # this process is 0; process 1 holds ``theirs``
        import hashlib
        import json

        text = json.dumps(theirs).encode()
        if next(others) is None and x.dtype == np.uint32:
            digest = np.frombuffer(hashlib.blake2b(text, digest_size=16).digest(), np.uint32)
            return np.stack([x, np.concatenate([[len(text)], digest]).astype(np.uint32)])
        other = np.zeros_like(x)
        other[: len(text)] = np.frombuffer(text, np.uint8)
        return np.stack([x, other])

    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    with pytest.raises(
        li.errors.ProcessMismatchError,
        match=r"The 2 processes disagree on what to materialize; nothing was materialized "
        r"\(3\):\n  '0/kernel': process 0 has float32\(8, 16\) P\('fsdp', 'tensor'\), process 1 "
        r"has float32\(8, 24\) P\('fsdp', 'tensor'\)\n  '1/bias': process 0 has nothing, process 1 "
        r"has float32\(2,\) P\(\)\n  '<key>': process 0 has key data \[0, 0\], process 1 has "
        r"nothing\nEvery process must dry-run the same model",
    ):
        _sharding.agree_across_processes(mine)


def test_processes_that_agree_pass():
    _sharding.agree_across_processes([("0/kernel", "float32(8, 16) P()")])  # one process here
