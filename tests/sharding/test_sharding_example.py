"""examples/scale.py runs top to bottom: 1 device, 8 devices, 2 processes, then the 7B plan."""

import sys

import pytest
from sharding_child import run

pytestmark = pytest.mark.slow  # starts Python processes


def test_scale_example_runs_and_every_layout_agrees():
    (out,) = run([[sys.executable, "examples/scale.py"]], devices=1, timeout=300)
    assert "Same initial values everywhere: True; same losses (to float32 rounding): True" in out
    assert "  process 0 holds 4 of 8 shards:" in out
    assert (
        "6,738,415,616 parameters in 291 arrays: 25.10 GiB in all, 3.14 GiB per device on 8 "
        "device(s)"
    ) in out
    assert "In bfloat16: 1.57 GiB per device." in out
    assert "Live arrays: 0." in out
