"""The dry run and ``li.load_state`` on trees of many small leaves, against ``li.load``.

The target (issue 20): on a tree of 10,000 leaves, ``li.load_state`` into a lazy state and
the dry run take at most 1.5x the time of ``li.load(path, like=...)`` of the same tree.
The model is 100 blocks of 100 float32 parameters of 8 elements (``normal``), so the tree
has as many leaves as the file; every round times, interleaved so that the machine's load
hits each alike:

* ``li.load(path, like=template)``, the template being ``ShapeDtypeStruct``s (the baseline);
* ``li.load_state(lazy, state)``, ``lazy`` being ``li.lazy_state(model, x)`` and ``state``
  the file's arrays already in memory: as numpy (``li.nest(safetensors.numpy.load_file(...))``,
  the route for foreign files) and as ``jax.Array``s (``li.load(path)``);
* ``li.dry_run(model, key, x)`` with a new key (the trace is cached), and with ``jit=True``;
* the first dry run after ``li.clear_cache()``: trace, compile and draw (once per round).

::

    python -m benchmarks.big_trees            # 10,000 leaves, 5 rounds
    python -m benchmarks.big_trees --quick    # 1,000 leaves, 1 round: a smoke test

Prints one table (medians); ``benchmarks/README.md`` quotes it.

Each round warms every path again (untimed) before timing it, since the cold row's
``li.clear_cache()`` also forgets the compiled draws. An earlier version warmed once before
all rounds, so from the second round on the ``jit=True`` row timed the compile of its one
program (2.4x-2.8x of ``li.load``); warm, it draws in about the time of the eager dry run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import safetensors.numpy

import lazyinit as li

TARGET = 1.5  # each / li.load(like=)
PER_BLOCK = 100


class Block(li.Layer):
    """100 parameters of 8 elements: a block of a tree of many small leaves."""

    def specs(self, x: Any) -> dict[str, li.Param]:
        return {f"p{i}": li.Param((8,), li.initializers.normal(1.0)) for i in range(PER_BLOCK)}

    def __call__(self, params: Any, x: Any) -> Any:
        return x


class Blocks(li.Layer):
    blocks: int

    def children(self) -> dict[str, li.Layer]:
        return {f"block{i}": Block() for i in range(self.blocks)}

    def __call__(self, params: Any, x: Any) -> Any:
        for i in range(self.blocks):
            x = Block()(params[f"block{i}"], x)
        return x


def seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    jax.block_until_ready([leaf for leaf in jax.tree.leaves(fn()) if isinstance(leaf, jax.Array)])
    return time.perf_counter() - start


ROWS = [  # (name, what it times)
    ("load", "`li.load(path, like=template)`"),
    ("load_state numpy", "`li.load_state(lazy, numpy state)`"),
    ("load_state jax", "`li.load_state(lazy, jax.Array state)`"),
    ("dry_run", "`li.dry_run(model, new key, x)`"),
    ("dry_run jit", "`li.dry_run(..., jit=True)`, new key"),
    ("dry_run cold", "`li.dry_run` after `li.clear_cache()`"),
]


def measure(leaves: int, rounds: int, folder: str) -> dict[str, list[float]]:
    model, x = Blocks(leaves // PER_BLOCK), jnp.ones((1, 8))
    params = li.dry_run(model, jax.random.key(0), x)
    path, plain = os.path.join(folder, "tree.safetensors"), os.path.join(folder, "plain")
    li.save(path, params, overwrite=True)
    flat = {f"{b}/{n}": jax.device_get(v) for b, sub in params.items() for n, v in sub.items()}
    safetensors.numpy.save_file(flat, plain)
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
    lazy = li.lazy_state(model, x)
    as_numpy = li.nest(safetensors.numpy.load_file(plain))
    as_jax, _ = li.load(path)
    calls: dict[str, Callable[[int], Any]] = {
        "load": lambda r: li.load(path, like=like),
        "load_state numpy": lambda r: li.load_state(lazy, as_numpy),
        "load_state jax": lambda r: li.load_state(lazy, as_jax),
        "dry_run": lambda r: li.dry_run(model, jax.random.key(r + 1), x),
        "dry_run jit": lambda r: li.dry_run(model, jax.random.key(r + 1), x, jit=True),
    }
    times: dict[str, list[float]] = {name: [] for name, _ in ROWS}
    for r in range(rounds):
        # Every warm row is timed warm: ``li.clear_cache()`` below also forgets the compiled
        # draws (the one program of ``jit=True`` included), so each round warms every path
        # again first, untimed; otherwise the ``jit=True`` row would time a compile.
        for call in calls.values():
            seconds(lambda c=call: c(0))
        for name, call in calls.items():
            times[name].append(seconds(lambda c=call, r=r: c(r)))
        li.clear_cache()
        times["dry_run cold"].append(seconds(lambda r=r: li.dry_run(model, jax.random.key(r), x)))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 leaves, 1 round")
    parser.add_argument("--leaves", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    leaves = 1_000 if args.quick else args.leaves
    rounds = 1 if args.quick else args.rounds
    with tempfile.TemporaryDirectory() as folder:
        times = measure(leaves, rounds, folder)
    load = statistics.median(times["load"])
    print(
        f"Trees of {leaves:,} float32[8] leaves ({leaves // PER_BLOCK} blocks of {PER_BLOCK}), "
        f"median (min-max) of {rounds} interleaved round(s); load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    print("| what | time | vs li.load | target | met |")
    print("|---|---:|---:|---:|---|")
    for name, what in ROWS:
        t = times[name]
        value = statistics.median(t)
        cell = f"{value:.3f} s" + (f" ({min(t):.3f}-{max(t):.3f})" if len(t) > 1 else "")
        graded = name.startswith(("load_state", "dry_run")) and name != "dry_run cold"
        target = f"<= {TARGET}x" if graded else ""
        met = ("met" if value / load <= TARGET else "MISSED") if graded else ""
        print(f"| {what} | {cell} | {value / load:.2f}x | {target} | {met} |")


if __name__ == "__main__":
    main()
