"""Strict settings for every test: rank promotion raises, key reuse is checked, warnings are errors."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_debug_key_reuse", True)


@pytest.fixture
def key():
    return jax.random.key(0)
