"""A cache may change speed, never results: every function that gets no sample answers the
same in a fresh process and in one that has run other models, shapes and calls before.

Each function is asked once in a fresh Python process and once in a process that first
dry-runs the same models on other input sizes, calls them eagerly on other shapes and under
``jax.vmap`` (what used to leave a trace behind that later answers read), and both answers
are compared, error messages included.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts Python processes

ROOT = pathlib.Path(__file__).resolve().parents[2]

PROBE = r'''
import json, sys, tempfile, os
import jax, jax.numpy as jnp, numpy as np, torch
import lazyinit as li
from lazyinit.interop.flax import from_flax_variables, to_flax_variables
from lazyinit.interop.torch import from_torch_state_dict, to_torch_state_dict
from seed_models import LazyMLP
from style_models import styles

def history():
    """What a notebook may have run before: other sizes, eager calls, vmap, dtypes."""
    for model in (LazyMLP(), *styles().values()):
        params = li.dry_run(model, jax.random.key(1), jnp.ones((4, 3)))
        model(params, jnp.ones((128, 3)))
        jax.vmap(lambda x: model(params, x))(jnp.ones((5, 2, 3)))
        li.summary(model, jnp.ones((9, 3)))
    mlp = LazyMLP()
    li.dry_run(mlp, jax.random.key(2), jnp.ones((4, 8), jnp.int32).astype(jnp.float32))
    mlp(li.dry_run(mlp, 0, jnp.ones((2, 8))), jnp.ones((128, 8)))

def ask(fn):
    try:
        return ["ok", fn()]
    except Exception as e:
        return ["error", type(e).__name__, str(e)]

def shapes(tree):
    return jax.tree.map(lambda a: [list(a.shape), str(a.dtype)], tree)

def answers():
    torch.manual_seed(0)
    full = torch.nn.Module()
    full.fc1, full.fc2 = torch.nn.Linear(7, 10), torch.nn.Linear(10, 1)
    params7 = li.dry_run(LazyMLP(), 0, jnp.ones((2, 7)))
    out = {}
    for style, model in styles().items():
        params = li.dry_run(model, 0, jnp.ones((2, 3)))
        out[f"lazy_state/{style}"] = ask(lambda: repr(li.lazy_state(model)))
        out[f"describe/{style}"] = ask(lambda: str(li.describe(model)))
        out[f"summary/{style}"] = ask(lambda: str(li.summary(model)))
        out[f"partition/{style}"] = ask(lambda: shapes(li.partition(model, params)))
        out[f"to_torch/{style}"] = ask(
            lambda: {k: list(v.shape) for k, v in to_torch_state_dict(model, params).items()}
        )
        out[f"to_flax/{style}"] = ask(lambda: shapes(to_flax_variables(model, params)))
    out["lazy_state/mlp"] = ask(lambda: repr(li.lazy_state(LazyMLP())))
    out["from_torch/mlp7"] = ask(lambda: shapes(from_torch_state_dict(LazyMLP(), full)[0]))
    out["from_flax/mlp7"] = ask(
        lambda: shapes(from_flax_variables(LazyMLP(), to_flax_variables(LazyMLP(), params7))[0])
    )
    path = os.path.join(tempfile.mkdtemp(), "mlp7.safetensors")
    li.save(path, params7)
    out["check_checkpoint/mlp7"] = ask(lambda: str(li.check_checkpoint(path, LazyMLP())))
    out["load/mlp7"] = ask(lambda: str(li.load(path, like=li.lazy_state(LazyMLP()))[1]))
    return out

if sys.argv[1] == "used":
    history()
print(json.dumps(answers()))
'''


def _answers(kind: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE, kind],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_functions_without_a_sample_answer_the_same_in_a_fresh_and_a_used_process():
    fresh, used = _answers("fresh"), _answers("used")
    assert sorted(fresh) == sorted(used)
    differ = {k: (fresh[k], used[k]) for k in fresh if fresh[k] != used[k]}
    assert not differ, differ
    # The answers are the declarations' (not an error for every model): the seed's own flow.
    assert fresh["from_torch/mlp7"][0] == "ok"
    assert fresh["from_torch/mlp7"][1]["fc1"]["kernel"] == [[7, 10], "float32"]
    assert fresh["partition/fields"][0] == "ok" and fresh["partition/inline"][0] == "error"
    assert fresh["summary/fields"][0] == "error"  # a summary needs a sample, always
