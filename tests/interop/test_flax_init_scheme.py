"""How a wrapped flax module's variables are drawn, pinned (golden values).

Each variable at lazyinit path ``P`` is the leaf ``P`` (relative to the
wrapper) of ``module.init(li.param_key(root, P), ...)``: a function of the
root key and the path only, as for lazyinit's own layers, so adding or
reordering other layers never changes it. flax's ``init`` is traced once per
module (not once per leaf), and each leaf keeps only the operations it needs.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import lazyinit as li
from lazyinit.interop import flax as li_flax
from lazyinit.interop.flax import FlaxModule


def _model():
    return li.Sequential([FlaxModule(nn.Dense(3)), li.nn.relu, FlaxModule(nn.Dense(2))])


def test_golden_values():
    params = li.dry_run(_model(), jax.random.key(0), jnp.ones((2, 4)))
    np.testing.assert_allclose(
        params["0"]["params"]["kernel"][0], [0.47177646, 0.98631114, 0.34647843], rtol=1e-6
    )
    np.testing.assert_allclose(
        params["2"]["params"]["kernel"][:, 0], [-0.26290366, 0.58371162, 0.16833062], rtol=1e-6
    )


def test_each_leaf_is_flax_init_at_its_own_path_key():
    root = jax.random.key(3)
    x = jnp.ones((2, 4))
    params = li.dry_run(_model(), root, x)
    for path in (("0", "params", "kernel"), ("0", "params", "bias")):
        variables = nn.Dense(3).init(li.param_key(root, path), x)
        np.testing.assert_array_equal(
            params["0"]["params"][path[-1]], variables["params"][path[-1]]
        )
    variables = nn.Dense(2).init(li.param_key(root, ("2", "params", "kernel")), jnp.ones((2, 3)))
    np.testing.assert_array_equal(params["2"]["params"]["kernel"], variables["params"]["kernel"])


def test_flax_traces_init_once_per_module():
    calls = []

    class Counted(nn.Module):
        @nn.compact
        def __call__(self, x):
            calls.append(1)
            for _ in range(3):
                x = nn.Dense(4)(x)
            return x

    li_flax._INITS.clear()
    li.dry_run(FlaxModule(Counted()), jax.random.key(0), jnp.ones((1, 2)))
    # the wrapper's shape inference (1), eval_shape of init (1), the dry run's forward (1),
    # and one trace for all six leaves' draws (1): not one per leaf
    assert len(calls) <= 4, len(calls)


def test_one_compiled_call_gives_the_same_values():
    eager = li.dry_run(_model(), jax.random.key(5), jnp.ones((2, 4)))
    joint = li.dry_run(_model(), jax.random.key(5), jnp.ones((2, 4)), jit=True)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(joint)):
        np.testing.assert_array_equal(a, b)
