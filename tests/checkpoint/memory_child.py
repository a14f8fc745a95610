"""One memory measurement in a fresh process: ``python memory_child.py CASE DIR`` (see test_memory.py).

The parent gives this process 8 simulated CPU devices. It builds 4 kernels of 1024 x 2048
float32 (32 MiB), warms every code path up on a small file (then returns the memory it freed to
the system with glibc's ``malloc_trim``), then measures one call: its peak
resident memory minus the resident memory before it (``VmHWM``, reset through
``/proc/self/clear_refs`` just before). It prints ``{"peak": bytes, "params": bytes}``. The
buffers a save assembles and a load reads rows into are set to 1 MiB, so that at this size
they are about as small a part of the parameters as the default 4 MiB is of half a gigabyte.
"""

import ctypes
import ctypes.util
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

import lazyinit as li
from lazyinit.checkpoint import _pieces, _write

_pieces.WINDOW = _write.WINDOW = 1 << 20


def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def main(case, folder):
    sharding = NamedSharding(jax.make_mesh((2, 4), ("a", "b")), PartitionSpec("a", "b"))
    place = sharding if case.endswith("sharded") else None
    shape = (1024, 2048)

    def kernels(n, where):
        return {str(i): jax.device_put(np.full(shape, i, np.float32), where) for i in range(n)}

    def like(n):
        return {str(i): jax.ShapeDtypeStruct(shape, jnp.float32, sharding=place) for i in range(n)}

    # Every code path once, on a 2 MiB kernel: small, so that little of the memory it frees
    # can serve the measured call; what it freed is handed back to the system first.
    warm = {"0": jax.device_put(np.ones((1024, 512), np.float32), place)}
    li.save(f"{folder}/warm-{case}.safetensors", warm, overwrite=True)
    like_warm = {"0": jax.ShapeDtypeStruct((1024, 512), jnp.float32, sharding=place)}
    jax.block_until_ready(li.load(f"{folder}/warm-{case}.safetensors", like=like_warm)[0])
    del warm
    params = kernels(4, place) if case.startswith("save") else None
    jax.block_until_ready(params)
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = status("VmRSS")
    if case.startswith("save"):
        li.save(f"{folder}/{case}.safetensors", params, overwrite=True)
    else:
        tree, _ = li.load(f"{folder}/kernels.safetensors", like=like(4) if place else None)
        jax.block_until_ready(tree)
    print(json.dumps({"peak": status("VmHWM") - before, "params": 4 * 1024 * 2048 * 4}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
