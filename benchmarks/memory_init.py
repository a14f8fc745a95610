"""Peak memory of the dry run at the memory limit, in fresh processes (issue 20, the init side).

Every measurement runs in a fresh process with 8 simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``), on 8 kernels of 4096 x 4096 float32
(512 MiB of parameters, ``lecun_normal``, as ``li.Linear`` draws them), beside what a user would
write by hand with ``jax.nn.initializers``. The figure is the peak resident set size during the
first call (compilation included) minus the resident size just before it, divided by the
parameter bytes (:class:`benchmarks.child.PeakRSS`); the parameters themselves are 1.0x.

* ``li.dry_run`` eager (one cached kernel per kind of parameter) against the initializer
  called once per kernel;
* ``li.dry_run(..., jit=True)`` against the same initializers in one ``jax.jit``;
* ``li.dry_run(..., mesh=...)``, each kernel sharded over the 8 devices by rows, against that
  ``jax.jit`` with ``out_shardings``.

On a CPU the 8 simulated devices are the host's memory, so the sharded rows count every
device's shards. On a GPU the parameters live in device memory and the host only compiles:
there the figure that matters is the device's peak (``memory_stats()['peak_bytes_in_use']``),
which the children report too where the backend keeps it (never on a CPU).

::

    python -m benchmarks.memory_init           # 512 MiB, 3 rounds (needs about 2 GiB of RAM)
    python -m benchmarks.memory_init --quick   # 8 MiB, 1 round: a smoke test (ratios meaningless)

Prints one table; ``benchmarks/README.md`` quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

KERNELS = 8
DEVICES = 8
GOAL = 1.25  # the issue's: peak growth / parameter bytes
ROWS = [  # (lazyinit's case, what it runs, the hand-written reference's case, what that runs)
    ("eager", "`li.dry_run` eager", "hand-eager", "`jax.nn.initializers` by hand, eager"),
    ("jit", "`li.dry_run(..., jit=True)`", "hand-jit", "the same in one `jax.jit`"),
    (
        "mesh",
        f"`li.dry_run(..., mesh={DEVICES} devices)`, kernels sharded",
        "hand-mesh",
        "the same in one `jax.jit` with `out_shardings`",
    ),
]
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# One measurement, in a child process.


def _device_bytes(stat: str) -> int | None:
    import jax

    stats = jax.devices()[0].memory_stats()
    return None if not stats else int(stats.get(stat, 0))


def measure(case: str, width: int) -> dict[str, Any]:
    """The peak growth of ``case``'s first call, in this (fresh) process."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    import lazyinit as li

    from .child import PeakRSS

    model = li.Sequential([li.Linear(width, use_bias=False) for _ in range(KERNELS)])
    x, key = jnp.ones((1, width)), jax.random.key(0)
    mesh = jax.make_mesh((DEVICES,), ("fsdp",))
    sharding = NamedSharding(mesh, PartitionSpec("fsdp", None))
    init, shape = jax.nn.initializers.lecun_normal(), (width, width)

    def by_hand(k: jax.Array) -> list[jax.Array]:
        return [init(k_i, shape, jnp.float32) for k_i in jax.random.split(k, KERNELS)]

    calls = {
        "eager": lambda: li.dry_run(model, key, x),
        "jit": lambda: li.dry_run(model, key, x, jit=True),
        "mesh": lambda: li.dry_run(model, key, x, mesh=mesh, rules={"embed": "fsdp", "mlp": None}),
        "hand-eager": lambda: by_hand(key),
        "hand-jit": lambda: jax.jit(by_hand)(key),
        "hand-mesh": lambda: jax.jit(by_hand, out_shardings=[sharding] * KERNELS)(key),
    }
    jnp.zeros(1).block_until_ready()  # the backend is up before anything is measured
    device_before = _device_bytes("bytes_in_use")
    with PeakRSS() as mem:
        out = jax.block_until_ready(calls[case]())
    device_peak = _device_bytes("peak_bytes_in_use")
    nbytes = sum(leaf.nbytes for leaf in jax.tree.leaves(out))
    return {
        "case": case,
        "peak": mem.delta,
        "bytes": nbytes,
        "device_peak": None if device_peak is None else device_peak - (device_before or 0),
    }


# ---------------------------------------------------------------------------
# The table.


def _child(case: str, width: int) -> dict[str, Any]:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env = {
        **os.environ,
        "XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={DEVICES}"]),
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory_init", "--child", case, "--width", str(width)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    if proc.returncode:
        raise RuntimeError(f"memory_init child {case!r} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def table(width: int, rounds: int) -> tuple[list[str], dict[str, float]]:
    """The table's lines, and each case's median peak / parameter bytes."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for _ in range(rounds):  # interleaved, each case in a fresh process
        for case, _, ref, _ in ROWS:
            for c in (case, ref):
                runs.setdefault(c, []).append(_child(c, width))
    nbytes = runs["eager"][0]["bytes"]
    ratios = {c: statistics.median(r["peak"] for r in rs) / nbytes for c, rs in runs.items()}

    def cell(c: str) -> str:
        peaks = [r["peak"] for r in runs[c]]
        low, high = min(peaks), max(peaks)
        spread = f" ({_mib(low)}-{_mib(high)})" if rounds > 1 else ""
        return f"{_mib(statistics.median(peaks))}{spread} | {ratios[c]:.2f}x"

    lines = [
        f"Peak memory growth of the dry run: {KERNELS} float32 kernels of {width} x {width} "
        f"({_mib(nbytes)}), {DEVICES} simulated CPU devices, a fresh process per measurement, "
        f"median of {rounds} round(s)",
        "",
        "| case | peak growth | x params | hand-written reference | peak growth | x params "
        "| goal | met |",
        "|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for case, what, ref, ref_what in ROWS:
        met = "pass" if ratios[case] <= GOAL else "MISS"
        lines.append(f"| {what} | {cell(case)} | {ref_what} | {cell(ref)} | <= {GOAL}x | {met} |")
    device = [r["device_peak"] for rs in runs.values() for r in rs]
    if all(d is not None for d in device):
        lines += ["", "Device peak (memory_stats), median per case:"]
        lines += [
            f"* {c}: {_mib(statistics.median(r['device_peak'] for r in rs))}"
            for c, rs in runs.items()
        ]
    return lines, ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 MiB, 1 round: a smoke test")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=int, default=None, help="kernel size (default 4096)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    width = args.width or (512 if args.quick else 4096)
    if args.child:
        print(json.dumps(measure(args.child, width)), flush=True)
        return
    from .__main__ import machine_line

    print(machine_line(), flush=True)
    lines, _ = table(width, 1 if args.quick else args.rounds)
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
