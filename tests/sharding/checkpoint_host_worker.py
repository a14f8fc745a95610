"""One of the two processes of test_checkpoint_multihost.py: ``python checkpoint_host_worker.py
PORT ID DIR``.

The parent saved ``DIR/kernels.safetensors`` (4 kernels of 1024 x 1024 float32 and a bias) and
``DIR/warm.safetensors``, and set ``XLA_FLAGS`` so that each process has 4 simulated CPU devices;
joined on 127.0.0.1 they form one 8-device mesh. The worker loads the warm-up file (every code
path once), then loads the kernels against a template sharded over all 8 devices, measuring the
bytes it read (``/proc/self/io`` ``rchar``) and its peak resident memory during the load
(``VmHWM``, reset just before through ``/proc/self/clear_refs``). It writes what it measured,
its shards' bytes and where they live, whether their values are right, and what
``li.check_checkpoint`` foretold, to ``DIR/process<ID>.json``.
"""

import json
import sys


def status(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def main(port: int, pid: int, folder: str) -> None:
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=pid,
        initialization_timeout=60,
        heartbeat_timeout_seconds=20,
        shutdown_timeout_seconds=20,
    )
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    import lazyinit as li

    assert (jax.device_count(), jax.local_device_count()) == (8, 4)
    mesh = jax.make_mesh((2, 4), ("fsdp", "tensor"))
    kernel = NamedSharding(mesh, PartitionSpec("fsdp", "tensor"))
    bias = NamedSharding(mesh, PartitionSpec("tensor"))

    def like(n: int, kernels: int) -> dict:
        tree = {
            str(i): {"kernel": jax.ShapeDtypeStruct((n, n), jnp.float32, sharding=kernel)}
            for i in range(kernels)
        }
        tree["head"] = {"bias": jax.ShapeDtypeStruct((n,), jnp.float32, sharding=bias)}
        return tree

    warm, _ = li.load(f"{folder}/warm.safetensors", like=like(1024, 1))
    jax.block_until_ready(warm)
    del warm
    template = like(1024, 4)
    report = li.check_checkpoint(f"{folder}/kernels.safetensors", template)

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before, read = status("VmRSS"), rchar()
    tree, _ = li.load(f"{folder}/kernels.safetensors", like=template)
    jax.block_until_ready(tree)
    read, peak = rchar() - read, status("VmHWM") - before

    values = {
        str(i): np.arange(1024 * 1024, dtype=np.float32).reshape(1024, 1024) + i for i in range(4)
    }
    right, shards, local = True, 0, []
    for name, leaf in [(k, v["kernel"]) for k, v in tree.items() if k != "head"]:
        for s in leaf.addressable_shards:
            right &= bool(np.array_equal(np.asarray(s.data), values[name][s.index]))
            shards += s.data.nbytes
            local.append(s.device.process_index)
        local.append(-1 if leaf.is_fully_addressable else pid)
    for s in tree["head"]["bias"].addressable_shards:
        right &= bool(np.array_equal(np.asarray(s.data), np.full(1024, 0.5, np.float32)[s.index]))
    with open(f"{folder}/process{pid}.json", "w") as f:
        json.dump(
            {
                "read": read,
                "peak": peak,
                "shards": shards,
                "right": right,
                "processes": sorted(set(local)),
                "device_bytes": report.device_bytes,
                "process_bytes": {str(k): v for k, v in report.process_bytes.items()},
            },
            f,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
