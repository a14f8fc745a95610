"""Figure 9 (issue 11): li.Repeat, remat and li.Ensemble against flax and hand-written JAX.

    python -m benchmarks.figures_transforms [--quick] [--out FILE]

9a. Train-step trace+compile time of the GPT decoder (examples/models.py) at 12, 24 and 48
    layers: ``li.Repeat`` vs unrolled lazyinit vs flax ``nn.scan`` vs flax unrolled, and the
    time per step of ``li.Repeat`` against the unrolled lazyinit model; at the deepest depth
    also ``li.Repeat(..., unroll=k)`` for k = 2, 4, 8 (step and compile against unrolled).
9b. Remat: the train step's temporary memory (``memory_analysis()``) at sequence length 1024,
    ``li.Repeat(..., remat=True)`` against ``remat=False``, with their losses.
9c. An ensemble of 8 MLPs: dry run and train step, ``li.Ensemble`` against hand-vmapped JAX.
9d. Abstract dry run of a 48-layer ``li.Repeat`` decoder against a 12-layer one (cold caches).

Every measurement of a figure runs in this process with fresh functions (compile times are
of new ``jax.jit`` objects, so nothing is reused); ratios are against baselines of the same run.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import lazyinit as li
from examples import models

from . import common
from .models_flax import Decoder as FlaxBlock
from .report import Table, fmt_bytes, fmt_time, machine_line, median, ratio, verdict


@dataclasses.dataclass(frozen=True)
class Sizes:
    depths: tuple[int, ...] = (12, 24, 48)
    width: int = 128
    heads: int = 4
    vocab: int = 512
    seq: int = 128
    batch: int = 4
    remat_seq: int = 1024
    remat_layers: int = 4
    ensemble: int = 8
    mlp: tuple[int, ...] = (64, 256, 256, 10)
    mlp_batch: int = 128
    reps: int = 3


FULL = Sizes()
QUICK = Sizes(
    depths=(1, 2),
    width=16,
    heads=2,
    vocab=31,
    seq=8,
    batch=2,
    remat_seq=32,
    remat_layers=1,
    ensemble=2,
    mlp=(6, 8, 3),
    mlp_batch=4,
    reps=1,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def seconds(fn: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits.astype(jnp.float32))
    return -jnp.take_along_axis(logp, labels[..., None], -1).mean()


def tokens(s: Sizes, seq: int | None = None) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, s.vocab, (s.batch, (seq or s.seq) + 1)).astype(np.int32)
    return jnp.asarray(ids[:, :-1]), jnp.asarray(ids[:, 1:])


# ---------------------------------------------------------------------------
# The four decoders.


def lazy_gpt(
    s: Sizes, layers: int, scanned: bool, remat: bool = False, seq: int = 0, unroll: int = 1
) -> Any:
    one = models.gpt_decoder(1, s.width, s.heads, s.vocab, max(seq, s.seq))
    blocks = (
        li.Repeat(one.blocks.layers[0], layers, remat=remat, unroll=unroll)
        if scanned
        else li.Sequential([one.blocks.layers[0]] * layers)
    )
    return dataclasses.replace(one, blocks=blocks)


class _ScanBlock(nn.Module):
    width: int
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> tuple[jax.Array, None]:
        return FlaxBlock(self.width, self.heads)(x, mask), None


class FlaxGPT(nn.Module):
    vocab: int
    width: int
    heads: int
    layers: int
    max_len: int
    scanned: bool

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        wte = nn.Embed(self.vocab, self.width, embedding_init=nn.initializers.normal(0.02))
        wpe = self.param("wpe", nn.initializers.normal(0.02), (self.max_len, self.width))
        x = wte(ids) + wpe[None, : ids.shape[1]]
        mask = nn.make_causal_mask(ids)
        if self.scanned:
            stack = nn.scan(
                _ScanBlock,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast,),
                length=self.layers,
            )
            x, _ = stack(self.width, self.heads)(x, mask)
        else:
            for _ in range(self.layers):
                x = FlaxBlock(self.width, self.heads)(x, mask)
        return wte.attend(nn.LayerNorm(epsilon=1e-5)(x))


def sgd_step(loss: Any) -> Any:
    def step(p: Any, x: jax.Array, y: jax.Array) -> tuple[Any, jax.Array]:
        value, grads = jax.value_and_grad(loss)(p, x, y)
        return jax.tree.map(lambda a, g: a - 1e-3 * g, p, grads), value

    return step


def gpt_step(lib: str, s: Sizes, layers: int) -> tuple[Any, Any]:
    """``(train_step, params)`` of one of the four decoders (or ``li.Repeat`` at an
    ``unroll`` of ``unrolled_by``)."""
    x, _ = tokens(s)
    if lib.startswith("lazyinit"):
        scanned = lib.startswith("lazyinit Repeat")
        model = lazy_gpt(s, layers, scanned=scanned, unroll=UNROLLED_BY.get(lib, 1))
        params = li.dry_run(model, jax.random.key(0), x)
        return sgd_step(lambda p, x, y: xent(model(p, x), y)), params
    net = FlaxGPT(s.vocab, s.width, s.heads, layers, s.seq, scanned=lib == "flax nn.scan")
    params = jax.jit(net.init)(jax.random.key(0), x)["params"]
    return sgd_step(lambda p, x, y: xent(net.apply({"params": p}, x), y)), params


LIBS = ("lazyinit Repeat", "lazyinit unrolled", "flax nn.scan", "flax unrolled")
UNROLLS = (2, 4, 8)  # li.Repeat(..., unroll=k), measured at the deepest depth beside LIBS
UNROLLED_BY = {f"lazyinit Repeat unroll={k}": k for k in UNROLLS}
STEP_TARGET, COMPILE_TARGET = 1.05, 0.6  # scanned vs unrolled at the deepest depth (issue 20)


def figure9a(s: Sizes) -> Table:
    x, y = tokens(s)
    compile_s: dict[tuple[str, int], float] = {}
    step_s: dict[tuple[str, int], float] = {}
    deep, shallow = s.depths[-1], s.depths[0]
    for layers in s.depths:
        ready = {}
        for lib in (*LIBS, *UNROLLED_BY) if layers == deep else LIBS:
            step, params = gpt_step(lib, s, layers)
            t0 = time.perf_counter()
            compiled = jax.jit(step).lower(params, x, y).compile()
            compile_s[lib, layers] = time.perf_counter() - t0
            jax.block_until_ready(compiled(params, x, y))
            ready[lib] = (compiled, params)
            log(f"9a {lib} {layers} layers: compile {compile_s[lib, layers]:.2f} s")
        runs: dict[str, list[float]] = {lib: [] for lib in ready}
        for _ in range(max(5, s.reps)):  # interleaved, so that load changes hit all alike
            for lib, (compiled, params) in ready.items():
                runs[lib].append(seconds(compiled, params, x, y))
        step_s.update({(lib, layers): median(r) for lib, r in runs.items()})
    t = Table(
        f"9a. GPT train step: trace+compile time by depth (width {s.width}, seq {s.seq})",
        ["layers", "", *LIBS, "Repeat / unrolled", "nn.scan / unrolled"],
    )
    for layers in s.depths:
        for what, table in (("compile", compile_s), ("step", step_s)):
            t.add(
                layers,
                what,
                *(fmt_time(table[lib, layers]) for lib in LIBS),
                ratio(table["lazyinit Repeat", layers], table["lazyinit unrolled", layers]),
                ratio(table["flax nn.scan", layers], table["flax unrolled", layers]),
            )
    for lib, k in UNROLLED_BY.items():  # the Repeat column holds li.Repeat(..., unroll=k)
        for what, table in (("compile", compile_s), ("step", step_s)):
            repeat, unrolled = table[lib, deep], table["lazyinit unrolled", deep]
            t.add(deep, f"{what}, unroll={k}", fmt_time(repeat), fmt_time(unrolled), "", "")
            t.rows[-1] += [ratio(repeat, unrolled), ""]
    own = compile_s["lazyinit Repeat", deep] / compile_s["lazyinit Repeat", shallow]
    vs_flax = compile_s["lazyinit Repeat", deep] / compile_s["flax nn.scan", deep]
    step = step_s["lazyinit Repeat", deep] / step_s["lazyinit unrolled", deep]
    t.notes = [
        f"Repeat {deep} vs {shallow} layers: {own:.2f}x (target <= 1.3x: {verdict(own, 1.3)}).",
        f"Repeat vs flax nn.scan at {deep} layers: {vs_flax:.2f}x "
        f"(target <= 1.1x: {verdict(vs_flax, 1.1)}).",
        f"Repeat step vs unrolled at {deep} layers: {step:.2f}x "
        f"(target <= 1.05x: {verdict(step, 1.05)}).",
    ]
    unrolled = step_s["lazyinit unrolled", deep], compile_s["lazyinit unrolled", deep]
    for lib, k in (("lazyinit Repeat", 1), *UNROLLED_BY.items()):
        step, comp = step_s[lib, deep] / unrolled[0], compile_s[lib, deep] / unrolled[1]
        t.notes.append(
            f"Repeat(unroll={k}) vs unrolled at {deep} layers: step {step:.2f}x (target <= "
            f"{STEP_TARGET}x: {verdict(step, STEP_TARGET)}), compile {comp:.2f}x (target <= "
            f"{COMPILE_TARGET}x: {verdict(comp, COMPILE_TARGET)})."
        )
    return t


def figure9b(s: Sizes) -> Table:
    x, y = tokens(s, s.remat_seq)
    t = Table(
        f"9b. Remat: train step temporary memory ({s.remat_layers} layers, seq {s.remat_seq})",
        ["li.Repeat", "temp memory", "loss"],
    )
    temp, losses = {}, {}
    for remat in (False, True):
        model = lazy_gpt(s, s.remat_layers, scanned=True, remat=remat, seq=s.remat_seq)
        params = li.dry_run(model, jax.random.key(0), x)
        step = sgd_step(lambda p, x, y, m=model: xent(m(p, x), y))
        compiled = jax.jit(step).lower(params, x, y).compile()
        analysis = compiled.memory_analysis()
        temp[remat] = getattr(analysis, "temp_size_in_bytes", None)
        losses[remat] = float(compiled(params, x, y)[1])
        t.add(f"remat={remat}", fmt_bytes(temp[remat]), f"{losses[remat]:.6f}")
        log(f"9b remat={remat}: temp {temp[remat]}")
    share = None if not temp[False] or temp[True] is None else temp[True] / temp[False]
    t.notes = [
        f"remat / no remat: {share:.2f}x (target <= 0.5x: {verdict(share, 0.5)}); "
        f"losses equal: {np.isclose(losses[True], losses[False], rtol=1e-5)}."
        if share is not None
        else "memory_analysis() gave no temporary size on this backend."
    ]
    return t


def figure9c(s: Sizes) -> Table:
    n = s.ensemble
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(s.mlp_batch, s.mlp[0])), jnp.float32)
    y = jnp.asarray(rng.integers(0, s.mlp[-1], s.mlp_batch), jnp.int32)
    layers: list[Any] = []
    for w in s.mlp[1:-1]:
        layers += [li.Linear(w), li.nn.relu]
    model = li.Ensemble(li.Sequential([*layers, li.Linear(s.mlp[-1])]), n)
    dims = list(zip(s.mlp[:-1], s.mlp[1:]))
    lecun = jax.nn.initializers.lecun_normal()

    def init_one(key: jax.Array) -> list[dict[str, jax.Array]]:
        keys = jax.random.split(key, len(dims))
        return [{"kernel": lecun(k, d), "bias": jnp.zeros(d[1])} for k, d in zip(keys, dims)]

    def apply_one(p: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
        for i, layer in enumerate(p):
            x = x @ layer["kernel"] + layer["bias"]
            x = jax.nn.relu(x) if i < len(p) - 1 else x
        return x

    hand_init = jax.jit(lambda key: jax.vmap(init_one)(jax.random.split(key, n)))

    def ens_loss(apply: Any) -> Any:
        return lambda p, x, y: xent(apply(p, x), jnp.broadcast_to(y, (n, *y.shape)))

    lazy_step = jax.jit(sgd_step(ens_loss(model)))
    hand_step = jax.jit(sgd_step(ens_loss(jax.vmap(apply_one, in_axes=(0, None)))))
    init: dict[str, list[float]] = {"lazyinit": [], "jax": []}
    train: dict[str, list[float]] = {"lazyinit": [], "jax": []}
    first = {
        "lazyinit": seconds(lambda: li.dry_run(model, jax.random.key(0), x)),
        "jax": seconds(hand_init, jax.random.key(0)),
    }
    lp = li.dry_run(model, jax.random.key(0), x)
    hp = hand_init(jax.random.key(0))
    jax.block_until_ready((lazy_step(lp, x, y), hand_step(hp, x, y)))
    for r in range(s.reps):  # FULL: 3
        init["lazyinit"].append(seconds(li.dry_run, model, jax.random.key(r + 1), x))
        init["jax"].append(seconds(hand_init, jax.random.key(r + 1)))
        train["lazyinit"].append(seconds(lazy_step, lp, x, y))
        train["jax"].append(seconds(hand_step, hp, x, y))
    t = Table(
        f"9c. Ensemble of {n} MLPs {s.mlp}, batch {s.mlp_batch}: li.Ensemble vs hand-vmapped JAX",
        ["", "li.Ensemble", "hand-written vmap", "ratio"],
    )
    t.add("first dry run / init", fmt_time(first["lazyinit"]), fmt_time(first["jax"]), "")
    dry = median(init["lazyinit"]) / median(init["jax"])
    step = median(train["lazyinit"]) / median(train["jax"])
    t.add(
        "dry run / init (warm)",
        fmt_time(median(init["lazyinit"])),
        fmt_time(median(init["jax"])),
        f"{dry:.2f}x",
    )
    t.add(
        "train step",
        fmt_time(median(train["lazyinit"])),
        fmt_time(median(train["jax"])),
        f"{step:.2f}x",
    )
    t.notes = [f"Targets <= 1.1x: dry run {verdict(dry, 1.1)}, train step {verdict(step, 1.1)}."]
    return t


def figure9d(s: Sizes) -> Table:
    ids = jax.ShapeDtypeStruct((s.batch, s.seq), jnp.int32)
    times = {}
    for layers in (s.depths[0], s.depths[-1]):
        runs = []
        for _ in range(s.reps):  # FULL: 3
            li.clear_cache()
            model = lazy_gpt(s, layers, scanned=True)
            runs.append(seconds(lambda m=model: li.dry_run(m, jax.random.key(0), ids)))
        times[layers] = median(runs)
    shallow, deep = s.depths[0], s.depths[-1]
    t = Table(
        "9d. Abstract dry run of a li.Repeat decoder (cold caches)",
        ["layers", "time"],
    )
    for layers, v in times.items():
        t.add(layers, fmt_time(v))
    r = times[deep] / times[shallow]
    t.notes = [
        f"{deep} vs {shallow} layers: {r:.2f}x (target <= 1.0x, noise aside: {verdict(r, 1.1)})."
    ]
    return t


FIGURES = {"9a": figure9a, "9b": figure9b, "9c": figure9c, "9d": figure9d}


def run(quick: bool, chosen: tuple[str, ...] = tuple(FIGURES)) -> list[Table]:
    s = QUICK if quick else FULL
    return [FIGURES[name](s) for name in chosen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.figures_transforms")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    parser.add_argument("--figures", nargs="*", default=list(FIGURES), choices=list(FIGURES))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    common.real_compiles()
    out = [machine_line(), ""]
    print(out[0], flush=True)
    for table in run(args.quick, tuple(args.figures)):
        text = table.render()
        print(text, flush=True)
        out.append(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
