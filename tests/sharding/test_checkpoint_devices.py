"""Sharded saves and loads on 8 simulated CPU devices, in a child pytest (see checkpoint_devices.py)."""

import re

import pytest
from sharding_child import pytest_command, run

pytestmark = pytest.mark.slow  # starts Python processes


def test_sharded_saves_and_loads_on_eight_devices():
    (out,) = run([pytest_command("tests/sharding/checkpoint_devices.py")], devices=8, timeout=300)
    passed = re.search(r"(\d+) passed", out)
    assert passed and int(passed.group(1)) == 43 and "skipped" not in out, out
