"""li.check_checkpoint reads only the header: its time does not grow with the file's size.

Saves the parameters of one MLP shape at two widths (the same paths, files of
about 10 MB and 1 GB), then times ``li.check_checkpoint(path, model, x)``
(median of repeats, the model's lazy state built each time) against
``li.load(path, like=...)`` of the same file, in the same process::

    python -m benchmarks.check_checkpoint            # 10 MB and 1 GB files (needs ~3 GB of RAM)
    python -m benchmarks.check_checkpoint --quick    # 1 MB and 10 MB: a smoke test

Prints one table; the README's "Checkpoint header check" section quotes it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

import lazyinit as li


def mlp(width: int) -> li.Layer:
    return li.Sequential(
        [li.Linear(width), li.nn.relu, li.Linear(width), li.nn.relu, li.Linear(10)]
    )


def width_for(nbytes: int) -> int:
    """The width whose two width x width float32 kernels make about ``nbytes``."""
    return int((nbytes / 8) ** 0.5)


def save_zeros(path: str, model: li.Layer, x: jax.ShapeDtypeStruct) -> int:
    abstract = li.dry_run(model, 0, x)  # abstract: ShapeDtypeStructs, nothing allocated
    li.save(path, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract))
    return os.path.getsize(path)


def median_seconds(repeats: int, fn, *args, **kwargs) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 MB and 10 MB files, few repeats")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    targets = [1 << 20, 10 << 20] if args.quick else [10 << 20, 1 << 30]
    repeats = 3 if args.quick else args.repeats
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for target in targets:
            width = width_for(target)
            model, x = mlp(width), jax.ShapeDtypeStruct((2, width), jnp.float32)
            path = os.path.join(folder, f"mlp{width}.safetensors")
            size = save_zeros(path, model, x)
            report = li.check_checkpoint(path, model, x)
            assert report.ok, report
            check = median_seconds(repeats, li.check_checkpoint, path, model, x)
            like = li.lazy_state(model, x)
            load = median_seconds(max(1, repeats // 10), li.load, path, like=like)
            rows.append((size, len(report.loaded), check, load))
            os.remove(path)
    print(f"li.check_checkpoint vs li.load, median of {repeats} / {max(1, repeats // 10)} runs")
    print(f"{'file':>10} {'arrays':>7} {'check_checkpoint':>17} {'load':>10} {'load/check':>11}")
    for size, arrays, check, load in rows:
        print(
            f"{size / 2**20:>8.1f}MB {arrays:>7} {check * 1e3:>14.2f} ms "
            f"{load * 1e3:>7.0f} ms {load / check:>10.0f}x"
        )
    small, large = rows[0][2], rows[-1][2]
    print(f"check time, largest / smallest file: {large / small:.2f}x")


if __name__ == "__main__":
    main()
