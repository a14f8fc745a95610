"""The notebooks run top to bottom on a fresh kernel, and the examples run, as the README shows them.

Each notebook executes with nbclient on a kernel started from this very
interpreter (``sys.executable -m ipykernel_launcher``, through a kernelspec
written for the test), so the notebooks use the environment under test, not
whatever ``python3`` kernel a machine has installed. A failing cell fails the
test with the cell's source and traceback.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "lazyinit-test-python"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A JUPYTER_PATH whose only kernelspec runs this interpreter."""
    home = tmp_path_factory.mktemp("jupyter")
    spec = home / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "lazyinit tests",
                "language": "python",
                "env": {"PYTHONPATH": str(ROOT)},
            }
        )
    )
    return {"JUPYTER_PATH": str(home), "JUPYTER_PLATFORM_DIRS": "1"}


def test_the_four_notebooks_exist_and_are_stored_without_outputs():
    import nbformat

    names = {p.stem for p in NOTEBOOKS}
    assert {"quickstart", "from_pytorch", "training", "scale"} <= names
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, kernel_env, monkeypatch, tmp_path):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    for name, value in kernel_env.items():
        monkeypatch.setenv(name, value)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=300,
        resources={"metadata": {"path": str(tmp_path)}},  # files a notebook writes go here
    )
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{e}", pytrace=False)


EXAMPLES = {  # steps enough to show learning, few enough for CI; what must be printed at the end
    "mlp.py": (["--steps", "150"], r"held-out accuracy after 150 steps: (0\.[89]\d*|1\.0+)$"),
    "cnn.py": (["--steps", "80"], r"held-out accuracy after 80 steps: (0\.[89]\d*|1\.0+)$"),
    "gpt.py": (["--steps", "60"], r"loss 3\.\d+ -> [01]\.\d+ after 60 steps"),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_script_runs(name, tmp_path):
    script = ROOT / "examples" / name
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(script), *EXAMPLES[name][0]],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "summary" in out.stdout and "parameters in" in out.stdout
    assert re.search(EXAMPLES[name][1], out.stdout.strip().splitlines()[-1]), out.stdout[-500:]
    steps = EXAMPLES[name][0][1]
    assert f"| {steps}/{steps} [" in out.stderr  # the tqdm progress bar, complete
