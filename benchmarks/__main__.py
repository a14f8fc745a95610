"""``python -m benchmarks``: lazyinit against flax.linen, haiku, equinox and hand-written JAX.

``--quick`` runs every figure at tiny sizes with one repeat, on the MLP (a smoke test: the
figures mean nothing); ``--figures 1 4 7`` chooses figures; ``--out FILE`` also writes the
tables there. The figures of ``benchmarks/registry.py``'s ``FIGURES`` run only when named:
``--figures memory`` runs every ``memory-*`` one (peak memory of init, checkpoints and
conversion, each case in a fresh process), ``--figures big-trees`` one by its name; they print
their own tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

from . import common, figures, figures_transforms, registry
from .report import machine_line

# --quick is CI's smoke test: every figure (but 9a) runs once at tiny sizes, on the MLP (figure 8:
# the decoder). Every library is measured in figures 1, 2, 3 and 5 (one fresh process); the later
# figures compare hand-written JAX and lazyinit only, each other library's model being checked
# abstractly (apply, loss, parameter count) by tests/e2e/test_benchmarks.py. --libs and --models
# choose others.
QUICK_MODELS = ("mlp",)
QUICK_LIBS = ("jax", "lazyinit")  # figures 4 and 6-8 in --quick
QUICK_SKIPS = ("9a",)  # unless --figures names it; li.Repeat is compiled by its own tests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, one repeat: checks that it runs"
    )
    parser.add_argument(
        "--reps", type=int, default=None, help="repeats per measurement (default 3)"
    )
    parser.add_argument(
        "--figures", nargs="*", default=None, help="figures to run: 1..9 (default all)"
    )
    parser.add_argument(
        "--models",
        nargs="*",
        default=None,
        choices=common.MODELS,
        help="models (default: all; with --quick, the MLP)",
    )
    parser.add_argument(
        "--libs", nargs="*", default=None, help="libraries (default: all installed)"
    )
    parser.add_argument("--out", default=None, help="also write the tables to this file")
    args = parser.parse_args(argv)
    common.real_compiles()

    libs = tuple(args.libs or registry.available())
    missing = [lib for lib in common.LIBRARIES if lib not in registry.available()]
    cfg = figures.Config(
        sizes=common.QUICK if args.quick else common.FULL,
        quick=args.quick,
        reps=args.reps or (1 if args.quick else 3),
        libs=libs,
        models=tuple(args.models or (QUICK_MODELS if args.quick else common.MODELS)),
    )
    named = [n for n in args.figures or () if n in registry.FIGURES or n == "memory"]
    chosen = set(n for n in args.figures or "123456789" if n not in named)
    out = [
        f"# lazyinit benchmarks{' (--quick: tiny sizes, figures meaningless)' if args.quick else ''}",
        "",
    ]
    out += [machine_line(), f"Repeats: {cfg.reps}; libraries: {', '.join(libs)}"]
    if missing:
        out.append(f"Not installed, skipped: {', '.join(missing)} (pip install -e '.[bench]')")
    print("\n".join(out) + "\n", flush=True)

    def emit(table) -> None:
        text = table.render()
        print(text, flush=True)
        out.append("\n" + text)

    t0 = time.perf_counter()
    if chosen & set("1235"):
        fr = figures.fresh(cfg)
        for n, fig in (
            ("1", figures.figure1),
            ("2", figures.figure2),
            ("3", figures.figure3),
            ("5", figures.figure5),
        ):
            if n in chosen:
                emit(fig(cfg, fr))
    later = cfg  # figures 4, 6, 7, 8; --quick: hand-written JAX against lazyinit only
    if args.quick and not args.libs:
        later = dataclasses.replace(cfg, libs=tuple(l for l in libs if l in QUICK_LIBS))
    if "4" in chosen:
        emit(figures.figure4(later))
    if "6" in chosen:
        emit(figures.figure6(later))
    if "7" in chosen:
        emit(figures.figure7(later))
    if "8" in chosen:
        for table in figures.figure8(later):
            emit(table)
    if "9" in chosen:  # li.Repeat, remat, li.Ensemble (benchmarks/figures_transforms.py)
        nine = tuple(figures_transforms.FIGURES)
        if args.quick and not args.figures:  # 9a compiles 8 train steps: --figures 9 runs it
            nine = tuple(name for name in nine if name not in QUICK_SKIPS)
        for table in figures_transforms.run(args.quick, nine):
            emit(table)
    for name in sorted(registry.FIGURES):  # --figures memory: memory-checkpoint, -convert, -init
        if name in named or ("memory" in named and name.startswith("memory-")):
            registry.run_figure(name, ["--quick"] if args.quick else [])
    out.append(f"\nTotal time: {time.perf_counter() - t0:.0f} s\n")
    print(out[-1], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
