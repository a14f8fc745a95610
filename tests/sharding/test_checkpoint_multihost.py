"""Two processes, 4 simulated CPU devices each, load one checkpoint against an 8-device template:
each reads about its half of the file and holds only its own shards (checkpoint_host_worker.py)."""

import json
import os
import sys

import numpy as np
import pytest
from sharding_child import free_port, run

import lazyinit as li

pytestmark = pytest.mark.slow  # starts Python processes

MiB = 1 << 20


@pytest.mark.skipif(
    not os.path.exists("/proc/self/clear_refs") or not os.path.exists("/proc/self/io"),
    reason="measures bytes read and peak memory through Linux's /proc (CI runs on Linux)",
)
def test_each_process_reads_about_its_half_and_keeps_only_its_shards(tmp_path):
    kernels = {
        str(i): {"kernel": np.arange(1024 * 1024, dtype=np.float32).reshape(1024, 1024) + i}
        for i in range(4)
    }
    head = {"head": {"bias": np.full(1024, 0.5, np.float32)}}
    li.save(tmp_path / "kernels.safetensors", {**kernels, **head})
    li.save(tmp_path / "warm.safetensors", {"0": kernels["0"], **head})
    size = os.path.getsize(tmp_path / "kernels.safetensors")  # 16 MiB and a header
    port = free_port()
    worker = "tests/sharding/checkpoint_host_worker.py"
    run(
        [[sys.executable, worker, str(port), str(i), str(tmp_path)] for i in range(2)],
        devices=4,
        timeout=180,
    )
    for pid in range(2):
        got = json.loads((tmp_path / f"process{pid}.json").read_text())
        assert got["right"], pid  # every local shard holds its slice of the saved values
        assert got["processes"] == [pid]  # shards on its own devices, arrays spanning both
        assert got["shards"] == 8 * MiB  # rows [512 pid, 512 (pid + 1)) of every kernel
        # It reads its half of the file (whole 1 MiB chunks, the 4 KiB bias, the header) ...
        assert 0.45 * size < got["read"] < 0.6 * size, got["read"]
        # ... and never holds more than its shards and a few buffers: a process that read
        # the whole file, or held a whole kernel it keeps a part of, would exceed this.
        assert got["peak"] < 0.75 * size, got["peak"]
        # li.check_checkpoint foretold it from the header: each device's arrays, and a peak
        # for each process at least what was measured.
        assert len(got["device_bytes"]) == 8  # every device of both processes
        assert set(got["device_bytes"].values()) == {2 * MiB + 1024}  # a kernel and bias slice
        assert set(got["process_bytes"]) == {"0", "1"}
        # (Not "within 2x of the measured peak": VmHWM's reset is best effort, and a process
        # whose earlier high-water mark stands measures a growth of 0.)
        assert got["peak"] <= got["process_bytes"][str(pid)] <= 2 * got["shards"]
