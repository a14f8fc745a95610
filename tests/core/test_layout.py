"""The package's shape: a core and two wings, one public namespace, errors in one module."""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

import lazyinit as li

PACKAGE = pathlib.Path(li.__file__).resolve().parent
WINGS = ("nn", "checkpoint", "interop")


def _imports(path: pathlib.Path) -> set[str]:
    """The lazyinit modules ``path`` imports, absolute (``lazyinit._match``), at any depth."""
    tree = ast.parse(path.read_text())
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join((*base, *(node.module.split(".") if node.module else ())))
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("lazyinit")}


def _core_modules() -> list[pathlib.Path]:
    return [p for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]


def test_the_core_never_imports_a_wing():
    reaching = {
        p.name: sorted(m for m in _imports(p) if m.split(".")[1:2] and m.split(".")[1] in WINGS)
        for p in _core_modules()
    }
    reaching = {k: v for k, v in reaching.items() if v}
    # The command line and the demo sit above everything: they are the package's users.
    reaching.pop("__main__.py", None)
    reaching.pop("_demo.py", None)
    assert not reaching, f"core modules importing a wing: {reaching}"


def test_the_checker_sees_a_core_import_of_a_wing(tmp_path):
    bad = PACKAGE / "_probe_for_the_layout_test.py"
    bad.write_text("from .nn import Linear\n")
    try:
        assert "lazyinit.nn" in _imports(bad)
    finally:
        bad.unlink()


@pytest.mark.parametrize("wing", ["nn", "checkpoint"])
def test_the_two_wings_do_not_import_each_other(wing):
    other = {"nn": "checkpoint", "checkpoint": "nn"}[wing]
    for path in (PACKAGE / wing).glob("*.py"):
        assert not [m for m in _imports(path) if m.startswith(f"lazyinit.{other}")], path.name


def test_no_module_imports_another_modules_private_names():
    """``from ._recorder import _Node`` is refused; ``from . import _paths`` (a module) is the
    internal API's unit and fine."""
    private = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level):
                continue
            private += [
                f"{path.relative_to(PACKAGE)}: {a.name}"
                for a in node.names
                if a.name.startswith("_")
                and not a.name.startswith("__")
                and not _is_module(path, node, a.name)
            ]
    assert not private, private


def _is_module(path: pathlib.Path, node: ast.ImportFrom, name: str) -> bool:
    """``from . import _paths``: a module, which is the internal API's unit, not a private name."""
    base = path.parent
    for _ in range(node.level - 1):
        base = base.parent
    if node.module:
        base = base.joinpath(*node.module.split("."))
    return (base / f"{name}.py").exists() or (base / name).is_dir()


def test_the_public_namespace_is_small_and_all_of_it_is_in_all():
    # What `import lazyinit` gives, in a fresh process: in this one, other tests' imports of
    # subpackages (`lazyinit.interop`) have made them attributes of the package too.
    script = (
        "import json, lazyinit as li\n"
        "print(json.dumps([sorted(n for n in dir(li) if not n.startswith('_')), li.__all__,\n"
        "    sorted(n for n in dir(li.nn) if not n.startswith('_')), li.nn.__all__]))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    public, all_, nn_public, nn_all = json.loads(out.stdout)
    assert len(public) <= 75, public
    assert sorted(all_) == public
    assert sorted(nn_all) == [n for n in nn_public if n != "LAYERS"]


def test_errors_are_defined_once_in_lazyinit_errors():
    for name in li.errors.__all__:
        cls = getattr(li.errors, name)
        assert cls.__module__ == "lazyinit.errors", name
        assert not hasattr(li, name), f"{name} is also at the top level"


@pytest.mark.slow  # starts a Python process
def test_importing_lazyinit_imports_no_interop_and_no_torch():
    code = (
        "import sys, lazyinit; print(sorted(m for m in sys.modules "
        "if m.startswith(('torch', 'lazyinit.interop'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# The top level of lazyinit 0.1.0, as released: every name that left it is in the changelog.
RELEASED = """
initializers apply merge partition update_buffers save load check_checkpoint CheckReport
TrainingCheckpoints describe dry_run dry_run_with_report reinit lsuv warmup_stats labels errors
Layer Linear Conv ConvTranspose BatchNorm InstanceNorm LayerNorm RMSNorm GroupNorm Embedding
MultiHeadAttention Dropout MaxPool AvgPool GlobalAvgPool Flatten Residual Parallel KEY_SCHEME
param_key Sequential Repeat mixed_precision Ensemble stack_layers unstack_layers Plan memory_plan
plan Param Uninitialized Report has_uninitialized lazy_state load_state nest uninitialized_paths
Summary summary Call Trace clear_cache trace Params State
celu elu gelu glu hard_tanh leaky_relu log_softmax relu relu6 selu sigmoid silu softmax softplus
swish tanh
LazyInitError UninitializedParamError InferShapeError InvalidSpecError InvalidLayerError
InvalidArgumentError DuplicateParamError InitializerError StateMismatchError ConvertStateError
InvalidTreeError ParamsMismatchError UpdateBuffersError DeletedParamError ReadCheckpointError
ReadPickleError ReadVersionError WriteCheckpointError OverwriteCheckpointError ShardParamError
ReshardStateError ProcessMismatchError ConfigureLayerError RequireKeyError LazyInitWarning
RescaleLayerError InvalidKeyError
""".split()


def test_every_name_that_left_the_top_level_is_in_the_changelog():
    changelog = (PACKAGE.parent / "CHANGELOG.md").read_text()
    gone = [n for n in RELEASED if not hasattr(li, n)]
    assert len(gone) > 40  # the activations and the errors moved
    assert not [n for n in gone if f"`{n}`" not in changelog and f"`li.{n}" not in changelog]
    removed = [n for n in gone if not hasattr(li.nn, n) and not hasattr(li.errors, n)]
    assert sorted(removed) == sorted(
        ["memory_plan", "Call", "ConvertStateError", "ParamsMismatchError", "InvalidLayerError",
         "RequireKeyError", "InvalidKeyError", "LazyInitWarning"]
    )  # fmt: skip
