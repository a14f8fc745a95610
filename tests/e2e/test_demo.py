"""``python -m lazyinit demo`` tells the seed's story end to end."""

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts Python processes


def test_demo_runs_and_training_lowers_the_loss():
    out = subprocess.run(
        [sys.executable, "-m", "lazyinit", "demo"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Uninitialized(shape=(?, 10), dtype=float32)" in text
    assert "li.has_uninitialized(params) -> False" in text
    assert "kept every loaded value: True" in text
    losses = [float(v) for v in re.findall(r"loss (\d+\.\d+)", text)]
    assert len(losses) >= 2 and losses[-1] < losses[0] / 5
