"""The eight figures of issue 7: measurements, then one table each with targets met or missed.

Figures 1, 2, 3 and 5 are decided by first calls, so each of their measurements runs in a fresh
process (:mod:`benchmarks.child`); the others run in this process, warmed up, with the libraries
interleaved within each repeat. Every ratio is against a baseline measured in the same run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

import lazyinit as li

from . import common, eager_apply
from .registry import build
from .report import Table, fmt_bytes, median, ratio, spread, verdict

ROOT = Path(__file__).resolve().parent.parent
BASE = "jax"  # the hand-written baseline


@dataclasses.dataclass
class Config:
    sizes: common.Sizes
    quick: bool
    reps: int
    libs: tuple[str, ...]
    models: tuple[str, ...]

    def log(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def timed(fn: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def keys():
    i = 1000
    while True:
        i += 1
        yield jax.random.key(i)


# ---------------------------------------------------------------------------
# Figures 1, 2, 3, 5: first calls, each in a fresh process.

MODES = ("eager", "jit", "abstract")


def _children(reqs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", json.dumps(reqs)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    if proc.returncode:
        raise RuntimeError(f"benchmarks.child failed on {reqs}:\n{proc.stderr[-3000:]}")
    return [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]


def fresh(cfg: Config) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """``{(mode, model, lib): [one result per repeat]}``."""
    warm = 1 if cfg.quick else 2
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for rep in range(cfg.reps):
        reqs = [
            {"quick": cfg.quick, "lib": lib, "model": m, "mode": mode, "warm": warm}
            for m in cfg.models
            for lib in cfg.libs
            for mode in MODES
        ]
        if cfg.quick:  # a smoke test: one process for everything
            results = _children(reqs)
        else:
            results = []
            for req in reqs:
                cfg.log(
                    f"fresh process {rep + 1}/{cfg.reps}: {req['model']} {req['lib']} {req['mode']}"
                )
                results += _children([req])
        for r in results:
            out[(r["mode"], r["model"], r["lib"])].append(r)
    return out


def _get(runs: list[dict[str, Any]], field: str) -> list[float]:
    vals: list[float] = []
    for r in runs:
        v = r.get(field)
        vals += v if isinstance(v, list) else [] if v is None else [v]
    return vals


def figure1(cfg: Config, fr: dict) -> Table:
    t = Table(
        "1. Eager dry run / init",
        [
            "model",
            "library",
            "first call, fresh process",
            "vs jax",
            "later calls (new key)",
            "vs jax",
            "target",
            "met",
        ],
        notes=[
            "flax `model.init`, haiku `init`, equinox's constructor, hand-written JAX drawing each leaf "
            "eagerly; lazyinit `li.dry_run(model, key, x)` (per-leaf cached kernels). Target: lazyinit's "
            "first call at most 1.1x hand-written JAX's."
        ],
    )
    for m in cfg.models:
        base_first = median(_get(fr[("eager", m, BASE)], "first"))
        base_later = median(
            _get(fr[("eager", m, BASE)], "second") + _get(fr[("eager", m, BASE)], "later")
        )
        for lib in cfg.libs:
            runs = fr[("eager", m, lib)]
            first, later = _get(runs, "first"), _get(runs, "second") + _get(runs, "later")
            target = lib == "lazyinit"
            t.add(
                common.TITLES[m],
                lib,
                spread(first),
                ratio(median(first), base_first),
                spread(later),
                ratio(median(later), base_later),
                "<= 1.1x" if target else "",
                verdict(median(first) / base_first, 1.1) if target and base_first else "",
            )
    return t


def figure2(cfg: Config, fr: dict) -> Table:
    t = Table(
        "2. Jit-compiled dry run / init",
        [
            "model",
            "library",
            "first call (trace + compile)",
            "vs jax",
            "second call, new key",
            "vs jax",
        ],
        notes=[
            "`jax.jit` of each library's init (equinox: `eqx.filter_jit`); lazyinit: "
            "`li.dry_run(..., jit=True)`, and its default per-leaf cached kernels (from figure 1's runs). "
            "Each first call in a fresh process."
        ],
    )
    for m in cfg.models:
        base = fr[("jit", m, BASE)]
        b1, b2 = median(_get(base, "first")), median(_get(base, "second"))
        rows = [(lib, fr[("jit", m, lib)]) for lib in cfg.libs]
        if "lazyinit" in cfg.libs:
            rows.append(("lazyinit (default: per-leaf kernels)", fr[("eager", m, "lazyinit")]))
        for name, runs in rows:
            first, second = _get(runs, "first"), _get(runs, "second")
            name = "lazyinit (jit=True)" if name == "lazyinit" else name
            t.add(
                common.TITLES[m],
                name,
                spread(first),
                ratio(median(first), b1),
                spread(second),
                ratio(median(second), b2),
            )
    return t


def figure3(cfg: Config, fr: dict) -> Table:
    t = Table(
        "3. Abstract dry run (`jax.eval_shape` of init; lazyinit with `ShapeDtypeStruct` samples)",
        [
            "model",
            "library",
            "first, fresh process",
            "vs jax",
            "first trace, warm process",
            "vs jax",
            "repeat, same signature",
            "vs jax",
            "target",
            "met",
        ],
        notes=[
            "'first trace, warm process': a new function each call (lazyinit: after `li.clear_cache()`). "
            "Targets (lazyinit, M2 and M3): first trace at most 1.5x hand-written JAX's; repeat at most 2x."
        ],
    )
    for m in cfg.models:
        base = fr[("abstract", m, BASE)]
        b = [median(_get(base, f)) for f in ("first", "new_trace", "repeat")]
        for lib in cfg.libs:
            runs = fr[("abstract", m, lib)]
            v = [_get(runs, f) for f in ("first", "new_trace", "repeat")]
            target = lib == "lazyinit" and m != "mlp"
            met = ""
            if target and b[1] and b[2]:
                met = "/".join(
                    [
                        verdict(median(v[0]) / b[0], 1.5),
                        verdict(median(v[1]) / b[1], 1.5),
                        verdict(median(v[2]) / b[2], 2.0),
                    ]
                )
            t.add(
                common.TITLES[m],
                lib,
                spread(v[0]),
                ratio(median(v[0]), b[0]),
                spread(v[1]),
                ratio(median(v[1]), b[1]),
                spread(v[2]),
                ratio(median(v[2]), b[2]),
                "1.5x / 1.5x / 2x" if target else "",
                met,
            )
    return t


def figure5(cfg: Config, fr: dict) -> Table:
    t = Table(
        "5. Peak host memory growth during the first materializing dry run (fresh process each)",
        [
            "model",
            "library",
            "parameter bytes",
            "eager: peak growth",
            "x params",
            "jit: peak growth",
            "x params",
            "target",
            "met",
        ],
        notes=[
            "Growth = peak resident set size during the call minus the size just before it. The peak is "
            "the kernel's high-water mark (`ru_maxrss`) when it rose during the call, else the largest of "
            "`psutil` samples taken every millisecond. Includes compilation. Target: lazyinit's eager "
            "(default) dry run at most 1.4x the parameter bytes."
        ],
    )
    for m in cfg.models:
        for lib in cfg.libs:
            eager, jitted = fr[("eager", m, lib)], fr[("jit", m, lib)]
            nbytes = median(_get(eager, "bytes"))
            pe, pj = median(_get(eager, "peak")), median(_get(jitted, "peak"))
            target = lib == "lazyinit"
            t.add(
                common.TITLES[m],
                lib,
                fmt_bytes(nbytes),
                spread(_get(eager, "peak"), fmt_bytes),
                ratio(pe, nbytes),
                spread(_get(jitted, "peak"), fmt_bytes),
                ratio(pj, nbytes),
                "<= 1.4x" if target else "",
                verdict(pe / nbytes, 1.4) if target and nbytes else "",
            )
    return t


# ---------------------------------------------------------------------------
# Figure 4: the materialization limit.


def limit_init(impl: common.Impl, model: str, sizes: common.Sizes) -> Any:
    """One jit-compiled call drawing lazyinit's parameters (same initializers and shapes), one key per leaf."""
    x, _ = common.batch(model, sizes)
    leaves = [
        (p.shape, p.init, np.dtype(p.dtype or np.float32))
        for p in li.trace(impl.net, x).params.values()
    ]

    def draw(key):
        ks = jax.random.split(key, len(leaves))
        return [init(k, shape, dtype) for k, (shape, init, dtype) in zip(ks, leaves)]

    return jax.jit(draw)


def figure4(cfg: Config) -> Table:
    t = Table(
        "4. Later dry runs with a new key, against the materialization limit",
        ["model", "variant", "call with a new key", "vs limit", "target", "met"],
        notes=[
            "The limit: one jit-compiled call drawing lazyinit's parameters (same shapes and "
            "initializers) with one key per leaf from `jax.random.split`. Every variant is warmed up "
            "first. Target: lazyinit's dry runs at most 1.1x the limit."
        ],
    )
    gen = keys()
    for m in cfg.models:
        cfg.log(f"figure 4: {m}")
        lazy = build("lazyinit", m, cfg.sizes)
        variants = {
            "limit": limit_init(lazy, m, cfg.sizes),
            "lazyinit (default)": lazy.init,
            "lazyinit (jit=True)": lazy.jit_init(),
        }
        for lib in cfg.libs:
            if lib != "lazyinit" and not cfg.quick:  # --quick: their jit inits ran in figure 2
                variants[f"{lib} (jit)"] = build(lib, m, cfg.sizes).jit_init()
        times: dict[str, list[float]] = defaultdict(list)
        for fn in variants.values():
            timed(fn, next(gen))
        for _ in range(cfg.reps):
            for name, fn in variants.items():
                times[name].append(timed(fn, next(gen)))
        lim = median(times["limit"])
        for name in variants:
            target = name.startswith("lazyinit")
            met = verdict(median(times[name]) / lim, 1.1) if target else ""
            t.add(
                common.TITLES[m],
                name,
                spread(times[name]),
                ratio(median(times[name]), lim),
                "<= 1.1x" if target else "",
                met,
            )
    return t


# ---------------------------------------------------------------------------
# Figure 6: eager apply.


def figure6(cfg: Config) -> Table:
    t = Table(
        "6. Eager (not jit-compiled) apply, inference mode",
        ["model", "library", "apply", "vs jax", "target", "met"],
        notes=[
            "Each warmed up once; then the libraries interleaved. Target: lazyinit at most 1.3x hand-written JAX."
        ],
    )
    reps = max(cfg.reps, 5)
    for m in cfg.models:
        cfg.log(f"figure 6: {m}")
        x, _ = common.batch(m, cfg.sizes)
        impls = {lib: build(lib, m, cfg.sizes) for lib in cfg.libs}
        variables = {lib: impl.init(jax.random.key(0)) for lib, impl in impls.items()}
        times: dict[str, list[float]] = defaultdict(list)
        for lib, impl in impls.items():
            timed(impl.apply, variables[lib], x)
        for _ in range(reps):
            for lib, impl in impls.items():
                times[lib].append(timed(impl.apply, variables[lib], x))
        base = median(times[BASE])
        for lib in cfg.libs:
            target = lib == "lazyinit"
            met = verdict(median(times[lib]) / base, 1.3) if target else ""
            t.add(
                common.TITLES[m],
                lib,
                spread(times[lib]),
                ratio(median(times[lib]), base),
                "<= 1.3x" if target else "",
                met,
            )
        del variables
    # A model so small that per-call overhead dominates: lazyinit's call, its params check
    # against the specs included, against hand-written JAX.
    cfg.log("figure 6: tiny MLP")
    tiny = eager_apply.measure(*((5, 2) if cfg.quick else (100, reps)))
    base = median(tiny[eager_apply.BASE])
    for lib, ts in tiny.items():
        target = lib == "lazyinit"
        met = verdict(median(ts) / base, 1.3) if target else ""
        t.add(
            eager_apply.TITLE,
            lib,
            spread(ts),
            ratio(median(ts), base),
            "<= 1.3x" if target else "",
            met,
        )
    return t


# ---------------------------------------------------------------------------
# Figure 7: the jit-compiled train step.


def _step(impl: common.Impl, opt: Any) -> Any:
    def step(p, s, o, x, y):
        (loss, new), grads = jax.value_and_grad(impl.loss, has_aux=True)(p, s, x, y)
        updates, o = opt.update(grads, o, p)
        return optax.apply_updates(p, updates), new, o, loss

    return step


def figure7(cfg: Config) -> Table:
    t = Table(
        "7. Jit-compiled train step (loss, grad, optax adam)",
        [
            "model",
            "library",
            "trace + compile",
            "vs best",
            "time per step",
            "vs best",
            "target",
            "met",
        ],
        notes=[
            "'best': the fastest of hand-written JAX, flax, haiku and equinox in this run. Trace + compile is "
            "`jax.jit(step).lower(...).compile()` of a new function, after each library compiled a tiny "
            "model's step once (first-use costs); steps run with params, state and "
            "optimizer state donated. Targets: lazyinit within 1.03x per step and 1.1x to compile."
        ],
    )
    compile_reps = 1 if cfg.quick else 2
    steps = 1 if cfg.quick else 2
    opt = optax.adam(1e-3)
    for m in cfg.models:
        cfg.log(f"figure 7: {m}")
        x, y = common.batch(m, cfg.sizes)
        impls = {lib: build(lib, m, cfg.sizes) for lib in cfg.libs}
        state: dict[str, Any] = {}
        for lib, impl in impls.items():
            p, s = impl.split(impl.init(jax.random.key(0)))
            state[lib] = (p, s, opt.init(p), x, y)
        compiled: dict[str, Any] = {}
        ctimes: dict[str, list[float]] = defaultdict(list)
        for lib in (
            impls if not cfg.quick else ()
        ):  # first-use costs (the library's, optax's, JAX's)
            tiny = build(lib, m, common.QUICK)
            tp, ts = tiny.split(tiny.init(jax.random.key(0)))
            xq, yq = common.batch(m, common.QUICK)
            jax.jit(_step(tiny, opt)).lower(tp, ts, opt.init(tp), xq, yq).compile()
        for _ in range(compile_reps):
            for lib, impl in impls.items():
                t0 = time.perf_counter()
                compiled[lib] = (
                    jax.jit(_step(impl, opt), donate_argnums=(0, 1, 2)).lower(*state[lib]).compile()
                )
                ctimes[lib].append(time.perf_counter() - t0)
        stimes: dict[str, list[float]] = defaultdict(list)
        for lib in impls:  # one step each to warm up
            p, s, o, loss = jax.block_until_ready(compiled[lib](*state[lib]))
            state[lib] = (p, s, o, x, y)
        for _ in range(cfg.reps):
            for lib in impls:
                for _ in range(steps):
                    t0 = time.perf_counter()
                    p, s, o, loss = jax.block_until_ready(compiled[lib](*state[lib]))
                    stimes[lib].append(time.perf_counter() - t0)
                    state[lib] = (p, s, o, x, y)
        others = [lib for lib in cfg.libs if lib != "lazyinit"]
        best_c = min(median(ctimes[lib]) for lib in others)
        best_s = min(median(stimes[lib]) for lib in others)
        for lib in cfg.libs:
            target = lib == "lazyinit"
            mc, ms = median(ctimes[lib]), median(stimes[lib])
            met = f"{verdict(mc / best_c, 1.1)}/{verdict(ms / best_s, 1.03)}" if target else ""
            t.add(
                common.TITLES[m],
                lib,
                spread(ctimes[lib]),
                ratio(mc, best_c),
                spread(stimes[lib]),
                ratio(ms, best_s),
                "1.1x / 1.03x" if target else "",
                met,
            )
        del state, compiled
    return t


# ---------------------------------------------------------------------------
# Figure 8: growth with depth.

DEPTH_MATERIALIZE = ("jax", "lazyinit", "flax")


def figure8(cfg: Config) -> list[Table]:
    libs = cfg.libs
    mat_libs = tuple(lib for lib in DEPTH_MATERIALIZE if lib in libs)
    tables = {
        "abstract": Table(
            "8a. Abstract dry run of the decoder by depth: first trace (warm process)",
            ["layers", *libs],
        ),
        "eager": Table(
            "8b. Eager dry run / init of the decoder by depth: new model, warm process",
            ["layers", *mat_libs],
        ),
        "jit": Table(
            "8c. Jit-compiled dry run / init of the decoder by depth: first call (trace + compile)",
            ["layers", *mat_libs],
        ),
    }
    res: dict[tuple[str, int, str], list[float]] = defaultdict(list)
    gen = keys()
    for depth in cfg.sizes.depths:
        cfg.log(f"figure 8: {depth} layers")
        impls = {lib: build(lib, "gpt", cfg.sizes, layers=depth) for lib in libs}
        for _ in range(cfg.reps):
            for lib, impl in impls.items():
                res[("abstract", depth, lib)].append(timed(impl.abstract_init(), next(gen)))
        for lib in mat_libs:
            if lib == "lazyinit":
                li.clear_cache()
            res[("eager", depth, lib)].append(timed(impls[lib].init, next(gen)))
            res[("jit", depth, lib)].append(timed(impls[lib].jit_init(), next(gen)))
    d = cfg.sizes.depths
    for mode, table in tables.items():
        cols = libs if mode == "abstract" else mat_libs
        for depth in d:
            table.add(depth, *[spread(res[(mode, depth, lib)]) for lib in cols])
        growth = [
            ratio(median(res[(mode, d[-1], lib)]), median(res[(mode, d[-2], lib)])) for lib in cols
        ]
        table.add(f"{d[-1]} vs {d[-2]} layers", *growth)
        if "lazyinit" in cols:
            g = median(res[(mode, d[-1], "lazyinit")]) / median(res[(mode, d[-2], "lazyinit")])
            ideal = d[-1] / d[-2]
            table.notes.append(
                f"Target: lazyinit grows linearly or better with depth: {d[-1]} vs {d[-2]} layers at most "
                f"{ideal:.1f}x (10% noise allowed): {g:.2f}x, {verdict(g, ideal * 1.1)}."
            )
    return [*tables.values(), llama(cfg)]


def llama(cfg: Config) -> Table:
    import importlib

    shape = common.LLAMA_QUICK if cfg.quick else common.LLAMA_7B
    t = Table(
        "8d. Abstract dry run of the LLaMA-7B-shaped decoder (32 layers, width 4096, 6.7B parameters)",
        [
            "library",
            "first trace (warm process)",
            "vs jax",
            "repeat, same signature",
            "vs jax",
            "target",
            "met",
        ],
        notes=[
            "A new function (lazyinit: after `li.clear_cache()`) for each first trace, after one throwaway "
            "plan of a tiny LLaMA so that JAX's own first-use costs are not counted. Targets: lazyinit at "
            "most 100 ms, and 5 ms when re-planned with the same signature."
        ],
    )
    libs = [lib for lib in cfg.libs if lib != "equinox"]
    mods = {lib: importlib.import_module(f"benchmarks.models_{lib}") for lib in libs}
    tokens = common.llama_tokens(cfg.quick)
    for mod in mods.values():
        f = mod.llama_abstract(common.LLAMA_QUICK, common.llama_tokens(True))
        f(jax.random.key(0))
    first: dict[str, list[float]] = defaultdict(list)
    repeat: dict[str, list[float]] = defaultdict(list)
    for _ in range(cfg.reps):
        for lib, mod in mods.items():
            cfg.log(f"figure 8d: {lib}")
            f = mod.llama_abstract(shape, tokens)
            first[lib].append(timed(f, jax.random.key(0)))
            repeat[lib] += [timed(f, jax.random.key(0)) for _ in range(3)]
    b1, b2 = median(first.get(BASE)), median(repeat.get(BASE))
    for lib in libs:
        m1, m2 = median(first[lib]), median(repeat[lib])
        target = lib == "lazyinit"
        met = f"{verdict(m1, 0.1)}/{verdict(m2, 0.005)}" if target else ""
        t.add(
            lib,
            spread(first[lib]),
            ratio(m1, b1),
            spread(repeat[lib]),
            ratio(m2, b2),
            "100 ms / 5 ms" if target else "",
            met,
        )
    if "equinox" in cfg.libs:
        t.notes.append(
            "equinox is left out here: its abstract init is its constructor, which never traces a forward."
        )
    return t
