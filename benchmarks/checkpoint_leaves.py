"""``li.load`` against ``li.save`` by number of leaves: a checkpoint of many small arrays.

The target: loading 100,000 small leaves takes at most twice as long as
saving them. Each round saves a tree of ``n`` float32 leaves of 8
elements (100 per sub-dict) and loads it back three ways, all interleaved so
that the machine's load hits each alike:

* ``li.save(path, tree)``;
* ``li.load(path, like=template)``, the template being ``ShapeDtypeStruct``s;
* ``li.load(path)``, the tree as saved;
* the baseline a user would write by hand with the format's own library:
  ``safetensors.numpy.load_file`` then ``jnp.asarray`` on each array (no tree,
  no checks, no checksum), measured in the same run.

::

    python -m benchmarks.checkpoint_leaves           # 1,000, 10,000 and 100,000 leaves, 5 rounds
    python -m benchmarks.checkpoint_leaves --quick   # 1,000 and 5,000 leaves, 1 round: a smoke test

Prints one table (medians); ``benchmarks/README.md`` quotes it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

import lazyinit as li

TARGET = 2.0  # li.load(like=...) / li.save at 100,000 leaves


def make_tree(n: int) -> dict[str, dict[str, jax.Array]]:
    """``n`` float32 leaves of 8 elements, 100 per block (fewer in the last)."""
    blocks: dict[str, dict[str, jax.Array]] = {}
    for i in range(n):
        blocks.setdefault(f"block{i // 100}", {})[f"p{i % 100}"] = jnp.full((8,), i, jnp.float32)
    return blocks


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def by_hand(path: str) -> dict[str, jax.Array]:
    return {name: jnp.asarray(a) for name, a in safetensors.numpy.load_file(path).items()}


def measure(n: int, rounds: int, folder: str) -> dict[str, float]:
    tree = make_tree(n)
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
    path = os.path.join(folder, f"leaves{n}.safetensors")
    plain = os.path.join(folder, f"plain{n}.safetensors")
    flat = {f"{b}/{k}": np.asarray(a) for b, sub in tree.items() for k, a in sub.items()}
    safetensors.numpy.save_file(flat, plain)
    li.save(path, tree, overwrite=True)  # warm every code path once
    loaded, _ = li.load(path, like=like)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), loaded, tree))
    times: dict[str, list[float]] = {"save": [], "load_like": [], "load": [], "by_hand": []}
    for _ in range(rounds):
        times["save"].append(seconds(lambda: li.save(path, tree, overwrite=True)))
        times["load_like"].append(seconds(lambda: li.load(path, like=like)))
        times["load"].append(seconds(lambda: li.load(path)))
        times["by_hand"].append(seconds(lambda: by_hand(plain)))
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 5,000 leaves, 1 round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    sizes = [1_000, 5_000] if args.quick else [1_000, 10_000, 100_000]
    rounds = 1 if args.quick else args.rounds
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            rows.append((n, measure(n, rounds, folder)))
    print(f"li.save and li.load by number of leaves (float32[8] each), median of {rounds} rounds")
    print(
        "| leaves | li.save | li.load(like=) | li.load() | by hand | load(like=) / save "
        "| load(like=) / by hand |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, t in rows:
        print(
            f"| {n:,} | {t['save']:.3f} s | {t['load_like']:.3f} s | {t['load']:.3f} s "
            f"| {t['by_hand']:.3f} s | {t['load_like'] / t['save']:.2f}x "
            f"| {t['load_like'] / t['by_hand']:.2f}x |"
        )
    n, t = rows[-1]
    ratio = t["load_like"] / t["save"]
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"load / save at {n:,} leaves: {ratio:.2f}x (target <= {TARGET:.0f}x: {verdict})")


if __name__ == "__main__":
    main()
