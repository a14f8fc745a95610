"""Two processes on 127.0.0.1, 4 simulated CPU devices each, one mesh (see multi_host_worker.py)."""

import json
import sys

import jax
import numpy as np
import optax
import pytest
from sharding_child import free_port, run
from sharding_models import mlp, regression_step

import lazyinit as li

pytestmark = pytest.mark.slow  # starts Python processes


def test_two_processes_materialize_train_and_agree_with_one(tmp_path):
    port = free_port()
    worker = "tests/sharding/multi_host_worker.py"
    run(
        [[sys.executable, worker, str(port), str(i), str(tmp_path)] for i in range(2)],
        devices=4,
        timeout=180,
    )
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(4, 8)
    y = np.ones((4, 8), np.float32)
    ref = li.dry_run(mlp(), jax.random.key(0), x)
    opt = optax.adam(1e-2)
    ref_new, _, ref_loss = regression_step(mlp(), opt)(ref, opt.init(ref), x, y)
    ref_loaded = {"0": li.dry_run(mlp(), jax.random.key(7), x)["0"], "2": ref["2"]}
    expected = {"0/kernel": [4, 4], "0/bias": [4], "2/kernel": [4, 4], "2/bias": [4]}

    for pid in range(2):
        shards = json.loads((tmp_path / f"shards{pid}.json").read_text())
        assert set(shards) == set(expected)
        for path, info in shards.items():
            assert not info["fully_addressable"], path
            assert info["local"] == [[pid, expected[path]]] * 4, path  # its own 4 shards only
        got = np.load(tmp_path / f"process{pid}.npz")
        for path in expected:
            layer, name = path.split("/")
            np.testing.assert_array_equal(got[f"params/{path}"], ref[layer][name], err_msg=path)
            np.testing.assert_allclose(
                got[f"new/{path}"], ref_new[layer][name], rtol=1e-5, atol=1e-6
            )
            np.testing.assert_array_equal(got[f"loaded/{path}"], ref_loaded[layer][name])
        np.testing.assert_allclose(got["loss"], ref_loss, rtol=1e-6)

        message = (tmp_path / f"mismatch{pid}.txt").read_text()
        other = 1 - pid
        mine, theirs = (16, 24) if pid == 0 else (24, 16)
        assert message.startswith(
            "The 2 processes disagree on what to materialize; nothing was materialized (3):\n"
        ), message
        assert (
            f"'0/kernel': process {pid} has float32(8, {mine}) P('fsdp', 'tensor'), "
            f"process {other} has float32(8, {theirs}) P('fsdp', 'tensor')"
        ) in message
        assert "Every process must dry-run the same model with the same key" in message
