"""Scaling past one device: one model on 1 device, on 8 devices, on 2 processes; a 7B plan.

    python examples/scale.py           # all four parts
    python examples/scale.py plan      # only the memory plan of the 7B-shaped decoder

The parameters carry logical axis names (``Linear``'s kernel is ``('embed',
'mlp')``); a rules table maps them to mesh axes, and ``li.dry_run(..., mesh=,
rules=)`` draws every parameter straight into its shard on each device, with the
values of the one-device run. JAX fixes its device count when it starts, so the
8-device part re-runs this script with 8 simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``) and the 2-process part
starts two copies of it with 4 devices each, joined by ``jax.distributed`` on
127.0.0.1. On real hardware the same code runs unchanged on GPUs or TPUs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import AbstractMesh, AxisType, NamedSharding
from models import llama_decoder, mlp

import lazyinit as li

# FSDP over 'fsdp', tensor parallelism over 'tensor'; the 10 classes stay whole.
RULES = {"embed": "fsdp", "mlp": "tensor", "heads": "tensor", "kv": None, "vocab": None}
KEY = 0


def data() -> tuple[np.ndarray, np.ndarray]:
    """The same batch in every process: 32 MNIST-sized inputs and their labels."""
    x = np.sin(np.arange(32 * 784, dtype=np.float32) / 97.0).reshape(32, 784)
    return x, np.arange(32) % 10


def train(model: li.Layer, params: li.Params, steps: int = 3) -> list[float]:
    """A few jit-compiled Adam steps that keep each parameter's sharding."""
    opt, (x, y) = optax.adam(1e-3), data()

    def step(params, state, x, y):
        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(model(p, x), y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    shardings = jax.tree.map(lambda a: a.sharding, params)
    step = jax.jit(step, out_shardings=(shardings, None, None))
    state, losses = opt.init(params), []
    for _ in range(steps):
        params, state, loss = step(params, state, x, y)
        losses.append(float(loss))
    return losses


def describe(params: li.Params) -> None:
    for path, a in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = "/".join(k.key for k in path)
        shards = {tuple(s.data.shape) for s in a.addressable_shards}
        spec = a.sharding.spec if isinstance(a.sharding, NamedSharding) else "one device"
        print(f"  {name:10} {str(a.shape):11} {str(spec):22} local shards {sorted(shards)}")


def checksum(params: li.Params) -> float:
    """A number that changes with any parameter value (gathered first when sharded)."""
    if jax.process_count() > 1:
        params = multihost_utils.process_allgather(params, tiled=True)
    return float(sum(np.abs(np.asarray(a, np.float64)).sum() for a in jax.tree.leaves(params)))


def report(params: li.Params, model: li.Layer) -> None:
    result = {"checksum": checksum(params), "losses": train(model, params)}
    if jax.process_index() == 0:
        print("RESULT " + json.dumps(result), flush=True)


def auto_mesh(shape: tuple[int, ...], names: tuple[str, ...]) -> jax.sharding.Mesh:
    # Auto axes let XLA propagate shardings through plain layers (jax.make_mesh defaults
    # to Explicit axes, where a matmul over a sharded dimension must say its out_sharding).
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape))


# ---------------------------------------------------------------------------
# The parts.


def one_device() -> None:
    model, (x, _) = mlp(hidden=(256, 256)), data()
    params = li.dry_run(model, jax.random.key(KEY), x)
    describe(params)
    report(params, model)


def eight_devices() -> None:
    assert jax.device_count() == 8, jax.devices()
    model, (x, _) = mlp(hidden=(256, 256)), data()
    mesh = auto_mesh((2, 4), ("fsdp", "tensor"))
    params = li.dry_run(model, jax.random.key(KEY), x, mesh=mesh, rules=RULES)
    describe(params)
    try:  # a layout that cannot work is refused before anything is compiled
        li.dry_run(model, jax.random.key(KEY), x, mesh=mesh, rules=RULES, axes={"5": (None, "mlp")})
    except li.errors.ShardParamError as e:
        print("  with axes={'5': (None, 'mlp')}:", str(e).splitlines()[1].strip())
    report(params, model)


def two_processes(process_id: int, port: int) -> None:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=process_id,
        initialization_timeout=60,
        heartbeat_timeout_seconds=10,  # if the other process dies, do not wait for it long
        shutdown_timeout_seconds=10,
    )
    model, (x, _) = mlp(hidden=(256, 256)), data()
    mesh = auto_mesh((2, 4), ("fsdp", "tensor"))  # 8 devices, 4 in each process
    params = li.dry_run(model, jax.random.key(KEY), x, mesh=mesh, rules=RULES)
    if process_id == 0:
        print(f"  process 0 holds {len(params['1']['kernel'].addressable_shards)} of 8 shards:")
        describe(params)
    report(params, model)


def plan_7b() -> None:
    ids = jax.ShapeDtypeStruct((1, 2048), jnp.int32)  # a signature, not data
    mesh = AbstractMesh((4, 2), ("fsdp", "tensor"))  # 8 devices this machine need not have
    rules = {**RULES, "vocab": "tensor"}
    start = time.perf_counter()
    plan = li.plan(llama_decoder(), ids, mesh=mesh, rules=rules)
    first = time.perf_counter() - start
    start = time.perf_counter()
    bf16 = li.plan(llama_decoder(), ids, mesh=mesh, rules=rules, dtype="bfloat16")
    again = time.perf_counter() - start
    print(plan)
    print(
        f"In bfloat16: {bf16.bytes_per_device / 2**30:.2f} GiB per device. Planned in "
        f"{first * 1e3:.0f} ms; re-planned (trace cached) in {again * 1e3:.0f} ms. "
        f"Live arrays: {len(jax.live_arrays())}."
    )


# ---------------------------------------------------------------------------
# Running each part in a JAX of its own.


def run(commands: list[list[str]], devices: int, timeout: float = 300) -> list[str]:
    """Runs copies of this script at once, each seeing ``devices`` CPU devices; their outputs.

    If one fails, the others are killed at once (a process left alone would wait for
    it in a collective); so are all of them after ``timeout`` seconds.
    """
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    logs = [tempfile.TemporaryFile("w+") for _ in commands]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, *c], env=env, stdout=f, stderr=subprocess.STDOUT
        )
        for c, f in zip(commands, logs)
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
    for f in logs:
        f.seek(0)
        outputs.append(f.read())
        f.close()
    for c, p, out in zip(commands, procs, outputs):
        if p.returncode:
            raise SystemExit(f"scale.py {' '.join(c)} failed ({p.returncode}):\n{out[-6000:]}")
    return outputs


def show(output: str) -> dict:
    lines = [line for line in output.splitlines() if not line.startswith("[Gloo]")]
    print("\n".join(line for line in lines if not line.startswith("RESULT ")))
    results = [json.loads(line[7:]) for line in lines if line.startswith("RESULT ")]
    print(f"  checksum {results[0]['checksum']:.6f}, losses {results[0]['losses']}")
    return results[0]


def main() -> None:
    parts = sys.argv[1:]
    if parts == ["one"]:
        return one_device()
    if parts == ["eight"]:
        return eight_devices()
    if parts[:1] == ["process"]:
        return two_processes(int(parts[1]), int(parts[2]))
    if parts == ["plan"]:
        return plan_7b()
    if parts:
        raise SystemExit(__doc__)

    print("[1] One device")
    one = show(run([["one"]], devices=1)[0])
    print("\n[2] Eight simulated devices, mesh fsdp=2 x tensor=4")
    eight = show(run([["eight"]], devices=8)[0])
    print("\n[3] Two processes of 4 devices each, joined on 127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    two = show(run([["process", str(i), str(port)] for i in range(2)], devices=4)[0])
    same = one["checksum"] == eight["checksum"] == two["checksum"]
    close = np.allclose(one["losses"], eight["losses"], rtol=1e-5) and np.allclose(
        one["losses"], two["losses"], rtol=1e-5
    )
    print(f"\nSame initial values everywhere: {same}; same losses (to float32 rounding): {close}")
    print("\n[4] Memory plan of a LLaMA-7B-shaped decoder on 8 devices, allocating nothing")
    plan_7b()
    if not (same and close):
        raise SystemExit("the sharded runs differ from the one-device run")


if __name__ == "__main__":
    main()
