"""li.Repeat and li.Ensemble sharded on 8 simulated CPU devices (run by test_sharding_repeat.py).

Its name does not match ``test_*.py``: the main run (one device) does not collect it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import lazyinit as li

pytestmark = pytest.mark.skipif(
    jax.device_count() != 8,
    reason="needs 8 devices: test_sharding_repeat.py runs this file with XLA_FLAGS set",
)

BLOCK = li.Residual([li.LayerNorm(), li.Linear(16), li.nn.gelu_tanh, li.Linear(8)])
X = jnp.ones((4, 8))
RULES = {"layers": "stage", "embed": "fsdp", "mlp": None}


def _mesh(kind=AxisType.Auto):
    return jax.make_mesh((4, 2), ("stage", "fsdp"), axis_types=(kind, kind))


def test_layers_axis_sharded_with_the_unrolled_values():
    mesh = _mesh()
    model = li.Repeat(BLOCK, 4)
    params = li.dry_run(model, jax.random.key(0), X, mesh=mesh, rules=RULES)
    kernel = params["layer"]["1"]["kernel"]
    assert kernel.sharding == NamedSharding(mesh, P("stage", "fsdp", None))
    assert kernel.addressable_shards[0].data.shape == (1, 4, 16)
    unrolled = li.dry_run(li.Sequential([BLOCK] * 4), jax.random.key(0), X)
    for u, v in zip(jax.tree.leaves(li.unstack_layers(params)), jax.tree.leaves(unrolled)):
        np.testing.assert_array_equal(u, v)
    y = jax.jit(model)(params, X)
    np.testing.assert_allclose(y, li.Sequential([BLOCK] * 4)(unrolled, X), rtol=1e-5, atol=1e-5)


def test_layers_axis_replicated():
    mesh = _mesh(AxisType.Explicit)
    rules = {**RULES, "layers": None}
    model = li.Repeat(BLOCK, 3)
    params = li.dry_run(model, jax.random.key(0), X, mesh=mesh, rules=rules)
    assert params["layer"]["1"]["kernel"].sharding.spec == P(None, "fsdp", None)


def test_layers_axis_without_a_rule_is_named():
    with pytest.raises(li.errors.ShardParamError, match=r"logical axis 'layers'"):
        li.dry_run(li.Repeat(BLOCK, 4), jax.random.key(0), X, mesh=_mesh(), rules={"embed": "fsdp"})


def test_abstract_plan_over_an_abstract_mesh():
    mesh = jax.sharding.AbstractMesh((4, 2), ("stage", "fsdp"))
    sample = jax.ShapeDtypeStruct((4, 8), jnp.float32)
    params = li.dry_run(li.Repeat(BLOCK, 8), jax.random.key(0), sample, mesh=mesh, rules=RULES)
    assert params["layer"]["1"]["kernel"].sharding.spec == P("stage", "fsdp", None)


def test_ensemble_axis_sharded():
    mesh = _mesh()
    rules = {"ensemble": "stage", "embed": "fsdp", "mlp": None}
    model = li.Ensemble(li.Linear(8), 4)
    params = li.dry_run(model, jax.random.key(0), X, mesh=mesh, rules=rules)
    assert params["kernel"].sharding.spec == P("stage", "fsdp", None)
    assert jax.jit(model)(params, X).shape == (4, 4, 8)
