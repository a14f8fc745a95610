"""Peak host memory of ``li.save`` and ``li.load`` at the memory limit, in fresh processes (issue 20).

Every row runs in a fresh process with 8 simulated CPU devices, on 8 kernels of 4096 x 4096
float32 (512 MiB of parameters), beside the reference a user would write by hand with the
format's own library (``safetensors.numpy``). The figure is the peak resident set size during
the call minus the resident size just before it, divided by the parameter bytes: the kernel's
exact high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` just before the call),
or, where that cannot be reset, ``psutil`` samples every millisecond. A load keeps what it
loaded, so its floor is 1.0x; a save of arrays already in memory is measured as the extra.

Then two processes of 4 simulated devices each (JAX's distributed runtime, gloo) load a 256 MiB
checkpoint against a template sharded over all 8 devices, and each reports the bytes it read
(``/proc/self/io`` ``rchar``) and its peak growth against the shards it keeps.

On a GPU the loaded arrays live in device memory, not in the process: the load rows then
measure only the host's staging (what ``li.check_checkpoint(...).process_bytes`` reports,
beside ``device_bytes``), and the save rows the device-to-host copies of one piece at a time.

::

    python -m benchmarks.memory_checkpoint          # 512 MiB (needs about 3 GiB of RAM), 2 processes at 256 MiB
    python -m benchmarks.memory_checkpoint --quick  # 32 MiB, 2 processes at 16 MiB: a smoke test

Prints one table; ``benchmarks/README.md`` quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

KERNELS = 8
GOALS = {  # the goals: peak / parameter bytes (a save: extra / parameter bytes)
    "save": 0.25,
    "save-sharded": 0.25,
    "load": 1.25,
    "load-lazy": 1.25,
    "load-sharded": 1.25,
}
ROWS = [  # (case, what the row measures, its hand-written reference)
    ("save", "`li.save` (params in memory), extra", "save-ref"),
    ("save-sharded", "`li.save` (params sharded over 8 devices), extra", "save-ref-sharded"),
    ("load", "`li.load(path)`", "load-ref"),
    ("load-lazy", "`li.load(path, like=lazy state)`", "load-ref"),
    ("load-sharded", "`li.load(path, like=sharded template)`", "load-ref-sharded"),
]
REFERENCES = {
    "save-ref": "`safetensors.numpy.save_file` of `np.asarray` leaves",
    "save-ref-sharded": "`safetensors.numpy.save_file` of `np.asarray` leaves",
    "load-ref": "`safetensors.numpy.load_file` + `jnp.asarray`",
    "load-ref-sharded": "`safetensors.numpy.load_file` + `jax.device_put(a, sharding)`",
}


# ---------------------------------------------------------------------------
# Measuring one call in this process.


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _rchar() -> int:
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
    except (OSError, StopIteration):
        return -1


class Peak:
    """The peak resident set size during a ``with`` block minus the size before it, and the bytes
    read meanwhile (``rchar``, -1 where ``/proc/self/io`` is missing)."""

    def __enter__(self) -> Peak:
        self.exact = True
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident size
        except OSError:
            self.exact = False
        if self.exact:
            self.before = _status("VmRSS")
        else:
            import psutil

            proc = psutil.Process()
            self.before = self._peak = proc.memory_info().rss
            self._stop = threading.Event()

            def sample() -> None:
                while not self._stop.is_set():
                    self._peak = max(self._peak, proc.memory_info().rss)
                    time.sleep(0.001)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        self._read = _rchar()
        return self

    def __exit__(self, *exc: Any) -> None:
        read = _rchar()
        self.read = read - self._read if read >= 0 else -1
        if self.exact:
            self.delta = _status("VmHWM") - self.before
        else:
            self._stop.set()
            self._thread.join()
            self.delta = self._peak - self.before


# ---------------------------------------------------------------------------
# The cases, each in a fresh process.


def _model(width: int) -> Any:
    import lazyinit as li

    return li.Sequential([li.Linear(width, use_bias=False) for _ in range(KERNELS)])


def _values(width: int) -> dict[str, dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        str(i): {"kernel": rng.standard_normal((width, width), dtype=np.float32)}
        for i in range(KERNELS)
    }


def _mesh() -> Any:
    import jax

    return jax.make_mesh((2, 4), ("a", "b"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)


def _sharding(mesh: Any) -> Any:
    import jax

    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("a", "b"))


def _case(case: str, path: str, width: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import safetensors.numpy

    import lazyinit as li

    jnp.zeros(1).block_until_ready()  # the backend is up before anything is measured
    nbytes = KERNELS * width * width * 4
    x = jax.ShapeDtypeStruct((1, width), jnp.float32)
    keep: Any = None
    if case.startswith("save"):
        sharding = _sharding(_mesh()) if case.endswith("sharded") else None
        params = {
            k: {"kernel": jax.device_put(v["kernel"], sharding)} for k, v in _values(width).items()
        }
        jax.block_until_ready(params)
        out = path + f".{case}.safetensors"
        with Peak() as peak:
            if case.startswith("save-ref"):
                flat = {f"{k}/kernel": np.asarray(v["kernel"]) for k, v in params.items()}
                safetensors.numpy.save_file(flat, out)
                del flat
            else:
                li.save(out, params)
        os.remove(out)
        return {"case": case, "bytes": nbytes, "peak": peak.delta, "read": peak.read}
    like: Any = None
    if case == "load-lazy":
        like = li.lazy_state(_model(width), x)
    elif case == "load-sharded":
        sharding = _sharding(_mesh())
        abstract = li.dry_run(_model(width), 0, x)
        like = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract
        )
    elif case == "load-ref-sharded":
        sharding = _sharding(_mesh())
    foretold = None
    if not case.startswith("load-ref"):  # what li.check_checkpoint says first, from the header
        report = li.check_checkpoint(path, like if like is not None else li.Uninitialized())
        foretold = report.process_bytes[0]
    with Peak() as peak:
        if case == "load-ref":
            keep = {k: jnp.asarray(a) for k, a in safetensors.numpy.load_file(path).items()}
        elif case == "load-ref-sharded":
            keep = {
                k: jax.device_put(a, sharding) for k, a in safetensors.numpy.load_file(path).items()
            }
        else:
            keep, _ = li.load(path, like=like)
        jax.block_until_ready(keep)
    del keep
    return {
        "case": case,
        "bytes": nbytes,
        "peak": peak.delta,
        "read": peak.read,
        "foretold": foretold,
    }


def _prepare(path: str, width: int) -> None:
    import lazyinit as li

    li.save(path, _values(width), overwrite=True)


# ---------------------------------------------------------------------------
# Two processes, 4 devices each, one 8-device template.


def _worker(port: int, pid: int, path: str, width: int) -> dict[str, Any]:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=pid,
        initialization_timeout=60,
    )
    import jax.numpy as jnp

    import lazyinit as li

    assert (jax.device_count(), jax.local_device_count()) == (8, 4)
    sharding = jax.sharding.NamedSharding(
        jax.make_mesh((2, 4), ("fsdp", "tensor")), jax.sharding.PartitionSpec("fsdp", "tensor")
    )
    kernels = KERNELS // 2
    abstract = {
        str(i): {"kernel": jax.ShapeDtypeStruct((width, width), jnp.float32)}
        for i in range(kernels)
    }
    like = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), abstract
    )
    small = {"0": {"kernel": jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=sharding)}}
    li.load(path + ".warm", like=small)  # every code path once, before measuring
    foretold = li.check_checkpoint(path, like).process_bytes[pid]
    with Peak() as peak:
        tree, _ = li.load(path, like=like)
        jax.block_until_ready(tree)
    mine = sum(s.data.nbytes for leaf in jax.tree.leaves(tree) for s in leaf.addressable_shards)
    return {
        "pid": pid,
        "file": os.path.getsize(path),
        "read": peak.read,
        "peak": peak.delta,
        "shards": mine,
        "foretold": foretold,
        "local_only": all(not leaf.is_fully_addressable for leaf in jax.tree.leaves(tree)),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={devices}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu", "PYTHONPATH": path}


def _child(request: dict[str, Any], devices: int = 8) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.memory_checkpoint", "--child", json.dumps(request)],
        env=_env(devices),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen, timeout: float = 900) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"a measuring process failed:\n{err[-4000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _one(request: dict[str, Any], devices: int = 8) -> dict[str, Any]:
    return _result(_child(request, devices))


# ---------------------------------------------------------------------------
# The table.


def _ratio(r: dict[str, Any]) -> float:
    return r["peak"] / r["bytes"]


def _verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "**missed**"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 MiB of kernels: a smoke test")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        req = json.loads(args.child)
        if req["kind"] == "prepare":
            _prepare(req["path"], req["width"])
            result: dict[str, Any] = {"ok": True}
        elif req["kind"] == "prepare-pair":
            _prepare_pair(req["path"], req["width"])
            result = {"ok": True}
        elif req["kind"] == "worker":
            result = _worker(req["port"], req["pid"], req["path"], req["width"])
        else:
            result = _case(req["kind"], req["path"], req["width"])
        print(json.dumps(result), flush=True)
        return
    width = 1024 if args.quick else 4096  # 8 kernels: 32 MiB (--quick) or 512 MiB
    pair_width = width  # 4 kernels: 16 MiB (--quick) or 256 MiB
    cases = [c for row in ROWS for c in (row[0], row[2])]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "kernels.safetensors")
        _one({"kind": "prepare", "path": path, "width": width})
        for case in dict.fromkeys(cases):
            results[case] = _one({"kind": case, "path": path, "width": width})
        os.remove(path)
        pair = os.path.join(folder, "pair.safetensors")
        _one({"kind": "prepare-pair", "path": pair, "width": pair_width})
        port = _free_port()
        procs = [
            _child({"kind": "worker", "port": port, "pid": i, "path": pair, "width": pair_width}, 4)
            for i in range(2)
        ]
        workers = [_result(p) for p in procs]
    _print(results, workers, width)


def _prepare_pair(path: str, width: int) -> None:
    """The 2-process file holds 4 kernels; a tiny one beside it warms each worker up."""
    import numpy as np

    import lazyinit as li

    tree = {str(i): {"kernel": np.full((width, width), i, np.float32)} for i in range(KERNELS // 2)}
    li.save(path, tree, overwrite=True)
    li.save(path + ".warm", {"0": {"kernel": np.ones((8, 8), np.float32)}}, overwrite=True)


def _print(results: dict[str, dict[str, Any]], workers: list[dict[str, Any]], width: int) -> None:
    mib = KERNELS * width * width * 4 / 2**20
    print(
        f"Peak host memory during the call minus before it / parameter bytes: {KERNELS} kernels "
        f"of {width} x {width} float32 ({mib:.0f} MiB), fresh process per row, 8 simulated CPU "
        "devices (a save: the extra over the params it writes); the last column is the peak "
        "li.check_checkpoint reported from the header before the load"
    )
    print("| case | lazyinit | hand-written reference | goal | foretold |")
    print("|---|---:|---|---|---:|")
    for case, title, ref in ROWS:
        r = results[case]
        ratio, goal = _ratio(r), GOALS[case]
        reference = f"{REFERENCES[ref]}: {_ratio(results[ref]):.2f}x"
        told = "-" if r.get("foretold") is None else f"{r['foretold'] / r['bytes']:.2f}x"
        print(
            f"| {title} | {ratio:.2f}x | {reference} | <= {goal}x ({_verdict(ratio, goal)}) "
            f"| {told} |"
        )
    print()
    print(
        "Two processes of 4 simulated devices each, one template sharded over all 8 (P('fsdp', "
        "'tensor') on a 2 x 4 mesh): each process's bytes read and peak growth during li.load"
    )
    print(
        "| process | file | read | read / file | its shards | peak growth | peak / shards | goal "
        "| foretold |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for w in sorted(workers, key=lambda w: w["pid"]):
        read, peak = w["read"] / w["file"], w["peak"] / w["shards"]
        ok = read <= 0.55 and peak <= 1.25 and w["local_only"]
        print(
            f"| {w['pid']} | {w['file'] / 2**20:.1f} MiB | {w['read'] / 2**20:.1f} MiB | "
            f"{read:.2f} | {w['shards'] / 2**20:.1f} MiB | {w['peak'] / 2**20:.1f} MiB | "
            f"{peak:.2f}x | read about half, peak <= 1.25x ({'met' if ok else '**missed**'}) "
            f"| {w['foretold'] / w['shards']:.2f}x |"
        )


if __name__ == "__main__":
    main()
