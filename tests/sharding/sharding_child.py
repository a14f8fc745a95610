"""Running tests that need a JAX of their own: another device count, several processes.

JAX fixes its device count when it starts and the main pytest process has
already started it with one CPU device, so multi-device tests run in child
processes with ``XLA_FLAGS`` set. A child that fails fails its parent test with
the child's output; a child that hangs is killed at the timeout; no child
outlives its test.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def env(devices: int) -> dict[str, str]:
    """The environment of a child that sees ``devices`` simulated CPU devices."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={devices}")
    return {
        **os.environ,
        "XLA_FLAGS": " ".join(flags),
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "sharding"), str(ROOT)]),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(commands: list[list[str]], devices: int, timeout: float) -> list[str]:
    """Runs ``commands`` at once, each with ``devices`` devices; returns their outputs.

    Fails the calling test, with every child's output, if one exits non-zero (the
    others are killed at once: they might wait for it in a collective) or if they
    do not all finish within ``timeout`` seconds. No child outlives this call.
    """
    logs = [tempfile.TemporaryFile("w+") for _ in commands]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=env(devices), stdout=log, stderr=subprocess.STDOUT)
        for cmd, log in zip(commands, logs)
    ]
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            codes = [p.poll() for p in procs]
            if None not in codes or any(codes):
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
            log.close()
    codes = [p.returncode for p in procs]
    if any(codes):
        timed_out = time.monotonic() > deadline
        why = f"timed out after {timeout:.0f} s" if timed_out else "failed"
        pytest.fail(f"child processes {why}, exit codes {codes}:\n" + _show(commands, outputs))
    return outputs


def _show(commands: list[list[str]], outputs: list[str]) -> str:
    noise = re.compile(r"^\[Gloo\].*\n", re.M)
    return "\n".join(
        f"--- {' '.join(c[1:])}\n{noise.sub('', o)[-8000:]}" for c, o in zip(commands, outputs)
    )


def pytest_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
