"""Sharded materialization on 8 simulated CPU devices, in a child pytest (see multi_devices.py)."""

import re

import pytest
from sharding_child import pytest_command, run

pytestmark = pytest.mark.slow  # starts Python processes


def test_sharded_materialization_on_eight_devices():
    (out,) = run([pytest_command("tests/sharding/multi_devices.py")], devices=8, timeout=300)
    passed = re.search(r"(\d+) passed", out)
    assert passed and int(passed.group(1)) == 14 and "skipped" not in out, out
