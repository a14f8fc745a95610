"""Strict JAX settings for every test: rank promotion raises and PRNG key reuse is an error.

Library code must never rely on implicit rank promotion. Docstring examples
show user code, which may (``x * params["scale"]``), so doctests run with
JAX's default.

One JAX persistent compilation cache serves the whole test run: set in the environment before
the pytest-xdist workers start, it is inherited by them and by every Python process a test
starts (docs pages, notebooks, examples, sharding children), so a program compiled by one is
loaded by the others instead of compiled again. A cache changes speed, never results: an entry
is looked up by a hash of the compiled program, compiler options and devices, and an entry that
cannot be read is compiled again. Its size limit turns on JAX's file lock, so that two processes
never read an entry half written. The run that made the folder removes it at the end; a
``JAX_COMPILATION_CACHE_DIR`` already set is used as it is and kept.
"""

import importlib
import os
import shutil
import tempfile

if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # xdist's controller, or a run without it
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lazyinit-tests-jax-")
    os.environ["LAZYINIT_TESTS_JAX_CACHE_OWNER"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # every program
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 * 2**30))

import jax  # noqa: E402  (after the environment that configures it)
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_debug_key_reuse", True)
# A plugin may have imported jax before this file set its environment: say it again.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)
jax.config.update(
    "jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"])
)

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


def pytest_unconfigure(config):
    if os.environ.get("LAZYINIT_TESTS_JAX_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _user_code_may_promote_ranks(request):
    if isinstance(request.node, pytest.DoctestItem):
        with jax.numpy_rank_promotion("allow"):
            yield
    else:
        yield


_REGISTRIES = (
    ("lazyinit.interop._torch_rules", "REGISTRY"),
    ("lazyinit.interop.flax", "_REGISTRY"),
)


@pytest.fixture(autouse=True)
def _rules_registered_in_a_test_end_with_it():
    """A test's (or a doctest's) ``register`` of a conversion rule is undone after it, so that no
    test sees the rules another registered: registries are process state."""
    tables = [getattr(importlib.import_module(m), name) for m, name in _REGISTRIES]
    saved = [{k: dict(v) for k, v in r._by_layer.items()} for r in tables]
    yield
    for registry, table in zip(tables, saved):
        registry._by_layer = table


@pytest.fixture
def key():
    return jax.random.key(0)
