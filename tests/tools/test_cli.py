"""``lazyinit inspect``: prints a model's summary; bad input is one line and a non-zero exit."""

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

from lazyinit.__main__ import main

MODELS = textwrap.dedent(
    """
    import jax
    import lazyinit as li

    class MLP(li.Layer):
        fc1: li.Layer = li.Linear(16)
        fc2: li.Layer = li.Linear(3)

        def __call__(self, params, x):
            return self.fc2(params["fc2"], jax.nn.relu(self.fc1(params["fc1"], x)))

    model = MLP()

    def make(features=4):
        return li.Sequential([li.Linear(features), li.nn.relu, li.Linear(1)])

    class Dropout(li.Layer):
        def __call__(self, params, x, *, train):
            return x if not train else x * 0.5

    not_a_model = 42
    """
)


@pytest.fixture
def models(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(MODELS)
    (tmp_path / "broken.py").write_text("import lazyinit\n1 / 0\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys, *argv):
    code = main(["inspect", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_prints_the_summary_of_a_model_from_a_file(models, capsys):
    code, out, err = run(capsys, "my_models.py:model", "--input", "10x10:float32")
    assert (code, err) == (0, "")
    assert "MLP summary" in out
    fc1 = next(line for line in out.splitlines() if line.strip().startswith("fc1"))
    assert fc1.split() == ["fc1", "Linear", "float32[10,10]", "float32[10,16]", "kernel:"] + [
        "float32[10,16]",
        "176",
        "704",
        "B",
    ]
    assert "227 parameters in 4 arrays, 908 B" in out


def test_inspect_takes_a_module_name_a_factory_a_dtype_and_keywords(models, capsys):
    code, out, _ = run(capsys, "my_models:make", "-i", "2x3", "--dtype", "bfloat16", "--repr")
    assert code == 0
    assert "kernel: bfloat16[3,4]" in out and "21 parameters in 4 arrays, 42 B" in out
    assert "(0): Linear(in_features=3, out_features=4)" in out
    code, out, _ = run(capsys, "my_models:Dropout", "-i", "2x3:int32", "--kw", "train=True")
    assert code == 0 and "int32[2,3], train=True" in out


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (
            ["my_models.py:modle", "-i", "3x4"],
            2,
            r"has no attribute 'modle' \(did you mean 'model'\?\)",
        ),
        (["my_models.py", "-i", "3x4"], 2, r"expected MODULE:ATTR"),
        (["nowhere.py:model", "-i", "3x4"], 2, r"no such file: 'nowhere.py'"),
        (["no_such_module:model", "-i", "3x4"], 2, r"cannot import 'no_such_module'"),
        (["broken.py:model", "-i", "3x4"], 1, r"importing 'broken.py' failed: ZeroDivisionError"),
        (["my_models.py:not_a_model", "-i", "3x4"], 2, r"object of type int, not a lazyinit model"),
        (["my_models.py:model", "-i", "3xfour"], 2, r"--input '3xfour': expected dimensions"),
        (["my_models.py:model", "-i", "3x4:float33"], 2, r"unknown dtype 'float33'"),
        (["my_models.py:model", "-i", "3x4", "--dtype", "int5"], 2, r"--dtype 'int5'"),
        (["my_models.py:model", "-i", "3x4", "--kw", "=1"], 2, r"--kw '=1': expected NAME=VALUE"),
        (
            ["my_models.py:model", "-i", "scalar"],
            1,
            r"tracing my_models.py:model on \(float32\[\]\) failed: InferShapeError: Linear at "
            r"'fc1': Linear expects inputs with at least 1 dimension",
        ),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(models, capsys, argv, code, message):
    got, out, err = run(capsys, *argv)
    assert got == code and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("lazyinit inspect: error: ")
    assert re.search(message, err), err


def test_a_multi_line_error_message_is_folded_onto_one_line(models, capsys):
    (models / "dup.py").write_text(
        textwrap.dedent(
            """
            import lazyinit as li

            class Dup(li.Layer):
                a: li.Layer = li.Linear(2)
                b: li.Layer = li.Linear(3)

                def __call__(self, params, x):
                    return self.b(params["a"], self.a(params["a"], x))
            """
        )
    )
    code, out, err = run(capsys, "dup.py:Dup", "-i", "4x4")
    assert code == 1 and err.count("\n") == 1
    assert "DuplicateParamError: Parameter 'a/kernel' is declared twice" in err


def _cli(*argv, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [*argv], capture_output=True, text=True, timeout=300, cwd=cwd, env=env, check=False
    )


@pytest.mark.slow  # starts a Python process
def test_python_dash_m_and_the_console_script_without_and_with_debug(models):
    ok = _cli(
        sys.executable, "-m", "lazyinit", "inspect", "my_models.py:model", "-i", "5x7", cwd=models
    )
    assert ok.returncode == 0 and "MLP summary" in ok.stdout
    bad = _cli(
        sys.executable,
        "-m",
        "lazyinit",
        "inspect",
        "my_models.py:model",
        "-i",
        "scalar",
        cwd=models,
    )
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    debug = _cli(
        sys.executable,
        "-m",
        "lazyinit",
        "inspect",
        "my_models.py:model",
        "-i",
        "scalar",
        "--debug",
        cwd=models,
    )
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith("lazyinit inspect: error: tracing")
    script = shutil.which("lazyinit", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the lazyinit console script is not installed next to this python")
    out = _cli(script, "inspect", "my_models:make", "-i", "2x3", cwd=models)
    assert out.returncode == 0 and "Sequential summary" in out.stdout


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "The lazyinit command line: a demo" in out
    assert "``" not in out and ":func:" not in out
