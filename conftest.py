"""Strict JAX settings for every test: rank promotion raises and PRNG key reuse is an error.

Library code must never rely on implicit rank promotion. Docstring examples
show user code, which may (``x * params["scale"]``), so doctests run with
JAX's default.
"""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_debug_key_reuse", True)


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
