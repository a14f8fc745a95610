"""The benchmark suite runs end to end (``python -m benchmarks --quick``); no timing is asserted.

``--quick`` is a smoke test sized for CI: every figure once at tiny sizes, every library in the
figures of the first fresh process, hand-written JAX and lazyinit in the later ones.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

pytestmark = pytest.mark.slow  # starts Python processes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_output(tmp_path_factory) -> tuple[str, str]:
    out = tmp_path_factory.mktemp("bench") / "results.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout, out.read_text()


def test_quick_mode_prints_every_figure(quick_output):
    stdout, saved = quick_output
    for title in [
        "### 1.",
        "### 2.",
        "### 3.",
        "### 4.",
        "### 5.",
        "### 6.",
        "### 7.",
        "### 8a.",
        "### 8b.",
        "### 8c.",
        "### 8d.",
        "### 9b.",
        "### 9c.",
        "### 9d.",
    ]:
        assert title in stdout, title
    assert saved.startswith("# lazyinit benchmarks (--quick")
    assert "Machine:" in saved and "jax 0.10" in saved


def test_quick_mode_measures_every_library_on_the_mlp_only(quick_output):
    """--quick is small: each library once, on the MLP, in figure 1 (the CNN and GPT of every
    library are checked abstractly below); the later figures on jax and lazyinit only."""
    stdout, _ = quick_output
    fig1 = stdout.split("### 1.")[1].split("###")[0]
    rows = [line for line in fig1.splitlines() if line.startswith("| M")]
    for lib in ["jax", "lazyinit", "flax", "haiku", "equinox"]:
        assert any("M1 MLP" in line and f"| {lib} " in line for line in rows), lib
    assert all("M1 MLP" in line for line in rows), rows
    fig8a = stdout.split("### 8a.")[1].split("###")[0]
    header = next(line for line in fig8a.splitlines() if line.startswith("| layers"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["layers", "jax", "lazyinit"]
    for figure in ["6", "7"]:
        text = stdout.split(f"### {figure}.")[1].split("###")[0]
        libs = {line.split("|")[2].strip() for line in text.splitlines() if "| M1 MLP" in line}
        assert libs == {"jax", "lazyinit"}, (figure, libs)


def test_targets_have_a_verdict(quick_output):
    stdout, _ = quick_output
    lazy_rows = [
        l for l in stdout.splitlines() if l.startswith("|") and "lazyinit" in l and "x" in l
    ]
    assert lazy_rows
    assert any("pass" in l or "MISS" in l for l in lazy_rows)


@pytest.mark.parametrize("model", ["mlp", "cnn", "gpt"])
def test_implementations_agree_on_parameter_count_and_output_shapes(model):
    """Abstractly (nothing compiled): every library's model has the same parameters and outputs."""
    eqx = pytest.importorskip("equinox", reason="its filter_eval_shape takes every library's tree")
    from benchmarks import common
    from benchmarks.registry import available, build

    x, y = common.batch(model, common.QUICK)
    counts, shapes = {}, {}
    for lib in available():
        impl = build(lib, model, common.QUICK)
        abstract = impl.abstract_init()(jax.random.key(0))
        variables = jax.tree.map(  # zeros: equinox's split needs arrays
            lambda l: jnp.zeros(l.shape, l.dtype) if isinstance(l, jax.ShapeDtypeStruct) else l,
            abstract,
        )
        trainable, state = impl.split(variables)
        counts[lib] = common.param_count(trainable)
        shapes[lib] = eqx.filter_eval_shape(impl.apply, variables, x).shape
        loss, _ = eqx.filter_eval_shape(impl.loss, trainable, state, x, y)
        assert loss.shape == (), lib
    assert len(set(counts.values())) == 1, counts
    assert len(set(shapes.values())) == 1, shapes


def test_lazyinit_versions_are_the_reference_models():
    from benchmarks import common
    from benchmarks.registry import build
    from examples import models

    impl = build("lazyinit", "cnn", common.QUICK)
    assert impl.net == models.resnet_cnn(3, (4, 8), 1)


def test_the_checkpoint_leaves_benchmark_runs_in_quick_mode(capsys):
    from benchmarks import checkpoint_leaves

    checkpoint_leaves.main(["--quick"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 1,000") or "| 5,000" in line]
    assert len(rows) == 2 and all(line.count("x |") == 2 for line in rows), out
    assert "load / save at 5,000 leaves:" in out and "target <= 2x" in out


def benchmark_imports(path: Path) -> set[str]:
    """The modules of ``benchmarks/`` that ``path`` imports, at any depth (function-local too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:  # from . import x, from .x ...
            out.update([node.module] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("benchmarks."):
            out.add(node.module.split(".")[1])
    return {m.split(".")[0] for m in out}


def import_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as the modules along it, or ``[]``."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str]:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*trail, nxt])):
                return cycle
        state[node] = "done"
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return []


def test_the_benchmark_modules_import_each_other_without_a_cycle():
    graph = {p.stem: benchmark_imports(p) for p in (ROOT / "benchmarks").glob("*.py")}
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert graph["figures_transforms"] >= {"report", "models_flax"}
    assert import_cycle(graph) == [], "benchmarks/ modules import each other in a circle"


def test_figures_memory_runs_every_memory_figure_and_nothing_else(monkeypatch, capsys):
    import benchmarks.__main__ as suite
    from benchmarks import figures, registry

    ran = []
    monkeypatch.setattr(registry, "run_figure", lambda name, argv=None: ran.append((name, argv)))
    monkeypatch.setattr(figures, "fresh", lambda cfg: pytest.fail("figures 1-3 and 5 ran"))
    assert suite.main(["--figures", "memory", "--quick"]) == 0
    assert ran == [
        ("memory-checkpoint", ["--quick"]),
        ("memory-convert", ["--quick"]),
        ("memory-init", ["--quick"]),
    ]
    ran.clear()
    assert suite.main(["--figures", "big-trees"]) == 0
    assert ran == [("big-trees", [])]
