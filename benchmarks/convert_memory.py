"""Peak memory of ``from_torch_state_dict``: about the params, never a second copy of the state.

Builds a torch model of ``count`` bias-free ``nn.Linear`` layers of ``width`` x ``width``
(the default, 8 of 4096 x 4096 float32, is a 512 MiB state), then, in a fresh process per
method, measures the peak resident set size during the conversion minus the size just
before it (the torch state already resident), against the parameter bytes::

    python -m benchmarks.convert_memory            # 8 kernels of 4096 x 4096: 512 MiB (needs ~2 GB)
    python -m benchmarks.convert_memory --quick    # 8 kernels of 256 x 256: a smoke test

Methods: ``from_torch_state_dict`` given the module, and the same given its state dict with
``dtype='float32'`` (a no-op cast that must not copy the state first), against the one-liner a
user writes by hand, ``{k: jnp.asarray(v.numpy().T) for ...}``. The target: the converter's
growth at most 1.25x the parameter bytes. Memory does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys

from .report import Table

METHODS = ("module", "state dict, dtype=float32", "by hand: jnp.asarray(v.numpy().T)")
TARGET = 1.25


def _models(width: int, count: int):  # noqa: ANN202
    import torch

    import lazyinit as li

    torch.manual_seed(0)
    layers = [torch.nn.Linear(width, width, bias=False) for _ in range(count)]
    torch_model = torch.nn.Sequential(*layers)
    model = li.Sequential([li.Linear(width, use_bias=False) for _ in range(count)])
    return torch_model, model


def child(method: str, width: int, count: int) -> dict[str, float]:
    """One measurement, in this (fresh) process."""
    import jax
    import jax.numpy as jnp

    from lazyinit.interop.torch import from_torch_state_dict

    from .child import PeakRSS

    torch_model, model = _models(width, count)
    state = torch_model.state_dict()
    sample = jax.ShapeDtypeStruct((1, width), jnp.float32)
    jnp.zeros(1).block_until_ready()  # the backend is up before anything is measured
    # Imports, traces and compiles (the transpose of one kernel) outside the measurement.
    one_torch, one = _models(width, 1)
    warm, _ = from_torch_state_dict(one, one_torch, sample, dtype="float32")
    hand = {k: jnp.asarray(v.numpy().T) for k, v in one_torch.state_dict().items()}
    from_torch_state_dict(model, {}, sample, strict=False)
    del one_torch, one, warm, hand
    gc.collect()
    with PeakRSS() as mem:
        if method == METHODS[0]:
            params, _ = from_torch_state_dict(model, torch_model, sample)
        elif method == METHODS[1]:
            params, _ = from_torch_state_dict(model, state, sample, dtype="float32")
        else:
            params = {k: jnp.asarray(v.numpy().T) for k, v in state.items()}
        jax.block_until_ready(params)
    state_bytes = sum(v.numel() * v.element_size() for v in state.values())
    param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
    return {"peak": mem.delta, "state": state_bytes, "params": param_bytes}


def _run(method: str, width: int, count: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.convert_memory", "--child", method,
         "--width", str(width), "--count", str(count)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 kernels of 256 x 256")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    width = args.width or (256 if args.quick else 4096)
    if args.child is not None:
        print(json.dumps(child(args.child, width, args.count)), flush=True)
        return
    mib = 1 << 20
    table = Table(
        f"memory-convert: from_torch_state_dict, {args.count} float32 kernels of {width} x {width}",
        ["method", "peak RSS growth", "/ param bytes", "/ torch state bytes", "target"],
    )
    for method in METHODS:
        r = _run(method, width, args.count)
        ratio = r["peak"] / r["params"]
        target = "" if method.startswith("by hand") else (
            f"<= {TARGET}x: {'met' if ratio <= TARGET else 'MISSED'}"
        )  # fmt: skip
        table.add(
            method,
            f"{r['peak'] / mib:.1f} MiB",
            f"{ratio:.2f}x",
            f"{r['peak'] / r['state']:.2f}x",
            target,
        )
    table.notes.append(
        f"Parameter bytes {r['params'] / mib:.1f} MiB; the torch state's own {r['state'] / mib:.1f} "
        "MiB, resident before each measurement (fresh process per row). Peak RSS growth: the peak "
        "resident set size during the call minus the size just before it."
    )
    print(table.render())


if __name__ == "__main__":
    main()
