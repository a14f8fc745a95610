"""Strict JAX settings for every test: rank promotion raises and PRNG key reuse is an error.

Library code must never rely on implicit rank promotion. Docstring examples
show user code, which may (``x * params["scale"]``), so doctests run with
JAX's default.
"""

import os

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_debug_key_reuse", True)

# Property-based tests: the same examples on every run (CI), a few; HYPOTHESIS_PROFILE=dev explores.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _user_code_may_promote_ranks(request):
    if isinstance(request.node, pytest.DoctestItem):
        with jax.numpy_rank_promotion("allow"):
            yield
    else:
        yield


@pytest.fixture
def key():
    return jax.random.key(0)
