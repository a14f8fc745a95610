"""One of the two processes of test_sharding_multihost.py: ``python multi_host_worker.py PORT ID OUT``.

The parent sets ``XLA_FLAGS`` so that each process has 4 simulated CPU devices;
joined on 127.0.0.1 they form one 8-device mesh. The worker materializes the
model across both processes, runs a jit-compiled train step, gathers the values
and writes them, with where its shards live, to ``OUT/process<ID>.npz``. Then
both processes dry-run models of different widths, which must fail on both with
an error naming the differing paths (written to ``OUT/mismatch<ID>.txt``)
rather than hang.
"""

import json
import sys


def by_path(tree):
    import jax

    return {"/".join(k.key for k in p): a for p, a in jax.tree_util.tree_flatten_with_path(tree)[0]}


def main(port: int, pid: int, out: str) -> None:
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
    import numpy as np
    import optax
    from jax.experimental import multihost_utils
    from sharding_models import RULES, mlp, regression_step

    import lazyinit as li

    assert (jax.device_count(), jax.local_device_count()) == (8, 4)
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(4, 8)  # the same on both processes
    y = np.ones((4, 8), np.float32)
    auto = (jax.sharding.AxisType.Auto,) * 2  # sharding propagates through plain layers
    mesh = jax.make_mesh((2, 4), ("fsdp", "tensor"), axis_types=auto)
    params = li.dry_run(mlp(), jax.random.key(0), x, mesh=mesh, rules=RULES)

    shards = {
        path: {
            "fully_addressable": a.is_fully_addressable,
            "spec": str(a.sharding.spec),
            "local": [[s.device.process_index, list(s.data.shape)] for s in a.addressable_shards],
        }
        for path, a in by_path(params).items()
    }
    with open(f"{out}/shards{pid}.json", "w") as f:
        json.dump(shards, f)

    opt = optax.adam(1e-2)
    step = regression_step(mlp(), opt, jax.tree.map(lambda a: a.sharding, params))
    new, _, loss = step(params, opt.init(params), x, y)
    # A checkpoint read on every host (here: drawn locally with another key) is placed
    # in the planned layout and kept; the rest is drawn.
    host = jax.tree.map(np.asarray, li.dry_run(mlp(), jax.random.key(7), x)["0"])
    loaded = li.dry_run(mlp(), jax.random.key(0), x, state={"0": host}, mesh=mesh, rules=RULES)
    assert loaded["0"]["kernel"].sharding == params["0"]["kernel"].sharding

    gathered = {}
    for name, tree in [("params", params), ("new", new), ("loaded", loaded)]:
        whole = multihost_utils.process_allgather(tree, tiled=True)
        gathered |= {f"{name}/{p}": v for p, v in by_path(whole).items()}
    np.savez(f"{out}/process{pid}.npz", loss=np.asarray(loss), **gathered)

    if pid == 1:  # a mesh of this process's devices only: no other process takes part
        local = jax.sharding.Mesh(np.array(jax.local_devices()).reshape(2, 2), ("fsdp", "tensor"))
        alone = li.dry_run(mlp(), jax.random.key(0), x, mesh=local, rules=RULES)
        assert alone["0"]["kernel"].is_fully_addressable

    try:
        li.dry_run(mlp(width=16 if pid == 0 else 24), jax.random.key(0), x, mesh=mesh, rules=RULES)
    except li.errors.ProcessMismatchError as e:
        message = str(e)
    else:
        message = "no error"
    with open(f"{out}/mismatch{pid}.txt", "w") as f:
        f.write(message)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
