"""One measurement in a fresh process: ``python -m benchmarks.child '<json request>'``.

The figures that a first call in a fresh process decides (first eager init, first jit-compiled
init, first abstract init, peak memory) run here, one library and model per process, so that no
cache of an earlier measurement (JAX's compiled primitives, lazyinit's traces and kernels) helps.
It prints one JSON line with the timings in seconds and memory in bytes.

Peak memory: a thread samples the resident set size (``psutil``) every millisecond while the call
runs, and the kernel's high-water mark (``ru_maxrss``) is used instead when it rose during the
call; the figure is that peak minus the resident size just before the call.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp

from . import common
from .registry import build


class PeakRSS:
    """The peak resident set size during a ``with`` block, minus the size before it."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self._stop = threading.Event()
        self.delta = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            time.sleep(0.001)

    def __enter__(self) -> PeakRSS:
        self._before = self._proc.memory_info().rss
        self._maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self._peak = self._before
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak = max(self._peak, self._proc.memory_info().rss)
        if maxrss > self._maxrss:
            peak = max(peak, maxrss)
        self.delta = peak - self._before


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0, out


def measure(req: dict[str, Any]) -> dict[str, Any]:
    sizes = common.QUICK if req["quick"] else common.FULL
    impl = build(req["lib"], req["model"], sizes, req.get("layers"))
    keys = [jax.random.key(i) for i in range(req["warm"] + 2)]
    jnp.zeros(1).block_until_ready()  # the backend is up before anything is timed
    mode = req["mode"]
    fn = {"eager": lambda: impl.init, "jit": impl.jit_init, "abstract": impl.abstract_init}[mode]()
    with PeakRSS() as mem:
        first, out = timed(fn, keys[0])
    result: dict[str, Any] = {"first": first, "peak": mem.delta}
    if mode != "abstract":
        result["bytes"] = common.param_bytes(out)
        del out
        result["second"] = timed(fn, keys[1])[0]
        result["later"] = [timed(fn, k)[0] for k in keys[2:]]
    else:
        result["repeat"] = [timed(fn, keys[0])[0] for _ in range(req["warm"])]
        result["new_trace"] = [timed(impl.abstract_init(), keys[0])[0] for _ in range(req["warm"])]
    return result


def main() -> None:
    reqs = json.loads(sys.argv[1])
    for req in reqs if isinstance(reqs, list) else [reqs]:
        print(json.dumps({**req, **measure(req)}), flush=True)


if __name__ == "__main__":
    main()
