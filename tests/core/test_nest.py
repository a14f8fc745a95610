"""``li.nest``: flat names (``'fc1/kernel'``, ``'fc1.weight'``) as lazyinit's nested tree.

The documented route for foreign flat files, ``safetensors.numpy.load_file``
then ``li.load_state``, goes through it; a flat mapping that two trees could
share is refused with every offending name (RELIABILITY row 8).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from seed_models import LazyMLP

import lazyinit as li


def test_lazyinit_own_file_through_safetensors(tmp_path):
    x = jnp.ones((2, 5))
    params = li.dry_run(LazyMLP(), jax.random.key(0), x)
    li.save(tmp_path / "mlp.safetensors", params)
    flat = safetensors.numpy.load_file(tmp_path / "mlp.safetensors")
    assert "fc1/kernel" in flat
    with pytest.raises(li.errors.InvalidTreeError, match=r"key 'fc1/kernel'.*without '/'"):
        li.load_state(li.lazy_state(LazyMLP(), x), flat)  # why li.nest exists
    state, report = li.load_state(li.lazy_state(LazyMLP(), x), li.nest(flat))
    assert report.loaded == ("fc1/bias", "fc1/kernel", "fc2/bias", "fc2/kernel")
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_foreign_file_with_dotted_names(tmp_path):
    arrays = {
        "fc1.kernel": np.ones((5, 10), np.float32),
        "fc1.bias": np.zeros(10, np.float32),
        "fc2.kernel": np.ones((10, 1), np.float32),
        "fc2.bias": np.zeros(1, np.float32),
    }
    safetensors.numpy.save_file(arrays, tmp_path / "foreign.safetensors")
    flat = safetensors.numpy.load_file(tmp_path / "foreign.safetensors")
    tree = li.nest(flat, sep=".")
    assert jax.tree.map(np.shape, tree) == {
        "fc1": {"bias": (10,), "kernel": (5, 10)},
        "fc2": {"bias": (1,), "kernel": (10, 1)},
    }
    params = li.dry_run(LazyMLP(), jax.random.key(0), jnp.ones((2, 5)), state=tree)
    np.testing.assert_array_equal(np.asarray(params["fc1"]["kernel"]), arrays["fc1.kernel"])


def test_deep_names_keep_order_and_values():
    a, b = np.arange(3.0), np.arange(4.0)
    tree = li.nest({"enc/0/w": a, "enc/1/w": b, "head": a})
    assert list(tree) == ["enc", "head"]
    assert tree["enc"]["1"]["w"] is b


@pytest.mark.parametrize(
    "flat,kwargs,match",
    [
        ({"a": 1.0, "a/b": 2.0}, {}, r"'a' is a leaf and also the parent of 'a/b'"),
        ({"a/b/c": 1.0, "a/b": 2.0}, {}, r"'a/b' is a leaf and also the parent of 'a/b/c'"),
        ({"fc1//kernel": 1.0}, {}, r"name 'fc1//kernel': names must be non-empty"),
        ({"": 1.0}, {}, r"name '': names must be non-empty"),
        ({"/kernel": 1.0}, {}, r"name '/kernel'"),
        ({3: 1.0}, {}, r"name 3: names must be non-empty strings"),
        ({"a/b.c": 1.0}, {"sep": "."}, r"name 'a/b.c'.*without '/' inside a component"),
        ({"a": 1.0}, {"sep": ""}, r"`sep`='' must be a non-empty string"),
    ],
)
def test_refused_names(flat, kwargs, match):
    with pytest.raises(li.errors.InvalidTreeError, match=match):
        li.nest(flat, **kwargs)


def test_lists_every_problem_at_once():
    with pytest.raises(li.errors.InvalidTreeError, match=r"(?s)'x//y'.*'a' is a leaf"):
        li.nest({"x//y": 1.0, "a": 1.0, "a/b": 2.0})


def test_not_a_mapping():
    with pytest.raises(li.errors.InvalidTreeError, match=r"li.nest takes a flat mapping.*got list"):
        li.nest([("a", 1.0)])
