"""The example scripts run, learn and print their summaries (examples/; the notebooks are in
test_notebooks.py, a file of their own so that two pytest-xdist workers share the load)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts Python processes

ROOT = pathlib.Path(__file__).resolve().parents[2]


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
