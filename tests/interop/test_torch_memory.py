"""from_torch_state_dict at one copy: each entry is read as a view of the tensor's own memory,
converted, and dropped before the next, and no param shares memory with the caller's state.
(The peak itself is measured by ``python -m benchmarks.convert_memory``, never here.)"""

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import lazyinit as li
from lazyinit.interop import Rule, _torch_state
from lazyinit.interop.torch import from_torch_state_dict, register

ROOT = Path(__file__).resolve().parents[2]


class Probed(torch.nn.Linear):
    """An nn.Linear whose rule records what it is handed."""


SEEN: list[dict] = []


def _probe(layer, leaves):
    def to_lazy(w):
        SEEN.append({"pointer": w.unsafe_buffer_pointer(), "live": len(jax.live_arrays())})
        return (jnp.transpose(w),)

    return [Rule((("kernel",),), (("weight",),), to_lazy, lambda k: (jnp.transpose(k),))]


@pytest.fixture(autouse=True)
def _probe_registered():  # the root conftest.py undoes it after each test
    register(li.Linear, Probed)(_probe)


def _models(n=6, width=32, dtype=torch.float32):
    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(*[Probed(width, width, bias=False) for _ in range(n)])
    torch_model.to(dtype)
    model = li.Sequential([li.Linear(width, use_bias=False) for _ in range(n)])
    return torch_model, model, jnp.ones((1, width))


def test_each_entry_reaches_its_rule_as_a_view_of_the_tensors_memory():
    torch_model, model, x = _models()
    SEEN.clear()
    params, _ = from_torch_state_dict(model, torch_model, x)
    pointers = [layer.weight.data_ptr() for layer in torch_model]
    assert [s["pointer"] for s in SEEN] == pointers  # no copy first
    # One entry at a time: at the k-th rule, the k params made so far and its one view are live.
    base = SEEN[0]["live"]
    assert [s["live"] - base for s in SEEN] == list(range(len(SEEN)))
    SEEN.clear()


def test_no_param_shares_memory_with_the_state():
    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    model = li.Sequential([li.Linear(4), li.LayerNorm()])
    params, _ = from_torch_state_dict(model, torch_model, jnp.ones((1, 4)))
    before = jax.tree.map(np.array, params)
    with torch.no_grad():  # the caller edits its tensors in place afterwards
        for p in torch_model.parameters():
            p.add_(1.0)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params), before)


def test_a_dtype_conversion_happens_one_entry_at_a_time(monkeypatch):
    torch_model, model, x = _models(n=4, dtype=torch.float64)
    fetched = []
    array = _torch_state.Entry.array
    monkeypatch.setattr(_torch_state.Entry, "array", lambda self: fetched.append(1) or array(self))
    SEEN.clear()
    params, _ = from_torch_state_dict(model, torch_model, x, dtype="float32")
    assert len(fetched) == 4
    assert params["3"]["kernel"].dtype == jnp.float32
    SEEN.clear()


def test_entries_are_converted_only_when_their_rule_runs(monkeypatch):
    """An import refused for a bad key converts nothing (it read shapes and dtypes only)."""
    torch_model, model, x = _models(n=3, dtype=torch.float64)
    fetched = []
    array = _torch_state.Entry.array
    monkeypatch.setattr(_torch_state.Entry, "array", lambda self: fetched.append(1) or array(self))
    state = dict(torch_model.state_dict())
    state["extra.weight"] = state["0.weight"]
    with pytest.raises(li.errors.StateMismatchError, match=r"unexpected key 'extra\.weight'"):
        from_torch_state_dict(model, state, x, dtype="float32")
    assert fetched == [1, 1]  # only the tie check read two of them: 'extra.weight' and '0.weight'


@pytest.mark.slow  # starts Python processes
def test_the_memory_benchmark_runs_and_prints_its_table():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.convert_memory", "--quick"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "### memory-convert: from_torch_state_dict, 8 float32 kernels of 256 x 256" in out.stdout
    assert len(re.findall(r"\d\.\d\dx +\|", out.stdout)) >= 6  # three rows, two ratios each


def test_the_memory_figure_is_registered_by_name():
    from benchmarks.registry import FIGURES

    assert FIGURES["memory-convert"] == "benchmarks.convert_memory"
