"""Per-call overhead of an eager (not jit-compiled) apply: `8 x Linear(64) + relu` on (8, 64).

The model is tiny, so the time is mostly Python and dispatch: the cost of
lazyinit's call (the params check against the specs included) against
hand-written JAX and flax.linen, measured side by side in one process.

    python -m benchmarks.eager_apply [--quick]

Figure 6 of the benchmark suite (``python -m benchmarks``) includes these rows.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import lazyinit as li

DEPTH, WIDTH, BATCH = 8, 64, 8


def _hand(ws: list[tuple[jax.Array, jax.Array]], x: jax.Array) -> jax.Array:
    for w, b in ws:
        x = jax.nn.relu(x @ w + b)
    return x


class _FlaxMLP(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for _ in range(DEPTH):
            x = nn.relu(nn.Dense(WIDTH)(x))
        return x


def _timed(fn: Callable[[], Any], calls: int) -> float:
    fn().block_until_ready()
    start = time.perf_counter()
    for _ in range(calls):
        fn().block_until_ready()
    return (time.perf_counter() - start) / calls


TITLE = f"{DEPTH} x Linear({WIDTH}) + relu"
BASE = "jax"


def measure(calls: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each implementation, ``rounds`` interleaved rounds of ``calls`` calls."""
    x = jnp.ones((BATCH, WIDTH))
    model = li.Sequential([layer for _ in range(DEPTH) for layer in (li.Linear(WIDTH), li.nn.relu)])
    params = li.dry_run(model, jax.random.key(0), x)
    ws = [(params[str(2 * i)]["kernel"], params[str(2 * i)]["bias"]) for i in range(DEPTH)]
    flax_model = _FlaxMLP()
    variables = flax_model.init(jax.random.key(0), x)
    impls = {
        BASE: lambda: _hand(ws, x),
        "lazyinit": lambda: model(params, x),
        "flax": lambda: flax_model.apply(variables, x),
    }
    times: dict[str, list[float]] = {name: [] for name in impls}
    for _ in range(rounds):  # interleaved, so that a noisy neighbour hits every library alike
        for name, fn in impls.items():
            times[name].append(_timed(fn, calls))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few calls: a smoke test")
    args = parser.parse_args(argv)
    times = measure(*((5, 2) if args.quick else (200, 7)))
    rounds = len(times[BASE])
    base = statistics.median(times[BASE])
    print(
        f"Eager apply, {DEPTH} x Linear({WIDTH}) + relu on ({BATCH}, {WIDTH}); median of {rounds}"
    )
    print(f"| {'library':<26} | {'per call':>9} | {'vs JAX':>6} |")
    print(f"|{'-' * 28}|{'-' * 11}|{'-' * 8}|")
    for name, ts in times.items():
        t = statistics.median(ts)
        print(f"| {name:<26} | {t * 1e6:7.0f} us | {t / base:5.2f}x |")


if __name__ == "__main__":
    main()
