"""A save needs no second copy of the tree, a load no second copy of the file: peak memory of
each in a fresh process (memory_child.py), against the issue's goals (issue 20). Memory in a
fresh process does not depend on the machine's load; no time is measured."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lazyinit as li

pytestmark = [
    pytest.mark.slow,  # starts Python processes
    pytest.mark.skipif(
        not os.path.exists("/proc/self/clear_refs"),
        reason="measures peak memory through Linux's /proc/self/clear_refs (CI runs on Linux)",
    ),
]

HERE = Path(__file__).resolve().parent


def peak(case, folder):
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env = {
        **os.environ,
        "XLA_FLAGS": " ".join([*flags, "--xla_force_host_platform_device_count=8"]),
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run(
        [sys.executable, str(HERE / "memory_child.py"), case, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return got["peak"] / got["params"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory")
    kernels = {str(i): np.full((1024, 2048), i, np.float32) for i in range(4)}
    li.save(folder / "kernels.safetensors", kernels)
    return folder


@pytest.mark.parametrize("case", ["save", "save-sharded"])
def test_save_writes_the_arrays_as_they_are(folder, case):
    assert peak(case, folder) <= 0.25  # extra memory over the params it writes


@pytest.mark.parametrize("case", ["load", "load-sharded"])
def test_load_reads_straight_into_the_arrays(folder, case):
    assert peak(case, folder) <= 1.25  # the loaded arrays themselves are 1.0
