"""The activations compute what the PyTorch functions named in ``docs/layers.md`` compute.

The table on the layers page is the contract: each row names a ``li.nn`` activation, the
torch function and the torch module it equals. The test reads the table, so the page and
the code cannot drift apart, and every activation of ``li.nn`` must have a row.
"""

from __future__ import annotations

import importlib
import pathlib
import pickle
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyinit as li

torch = pytest.importorskip("torch", reason="PyTorch parity needs torch (the test extra)")

ACTIVATIONS = importlib.import_module("lazyinit.nn._activations").__all__
PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "layers.md"
ROW = re.compile(r"^\| `li\.nn\.(\w+)` \| `([^`]+)` \| `([^`]+)` \|$", re.M)
ROWS = {m.group(1): (m.group(2), m.group(3)) for m in ROW.finditer(PAGE.read_text())}

# Large magnitudes too: softplus's threshold, the saturation of tanh and sigmoid.
X = np.linspace(-25.0, 25.0, 1200, dtype=np.float32).reshape(4, 300)
X = np.concatenate([X, np.linspace(-3.0, 3.0, 1200, dtype=np.float32).reshape(4, 300)])


def test_every_activation_has_exactly_one_row():
    names = [m.group(1) for m in ROW.finditer(PAGE.read_text())]
    assert sorted(names) == sorted(ACTIVATIONS)
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_activation_equals_the_torch_function_the_page_names(name):
    function, module = ROWS[name]
    got = np.asarray(getattr(li.nn, name)(jnp.asarray(X)))
    namespace = {"torch": torch, "x": torch.from_numpy(X)}
    by_function = eval(function, namespace).numpy()  # noqa: S307 (the page's own table)
    by_module = eval(module, namespace)(torch.from_numpy(X)).numpy()  # noqa: S307
    np.testing.assert_allclose(got, by_function, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(got, by_module, rtol=2e-6, atol=2e-6)


def test_gelu_is_exact_and_gelu_tanh_is_jax_default():
    """The tolerance above tells the two forms apart: they differ by up to 4.7e-4."""
    x = jnp.asarray(X)
    exact = torch.nn.functional.gelu(torch.from_numpy(X)).numpy()
    assert np.abs(np.asarray(li.nn.gelu_tanh(x)) - exact).max() > 1e-4
    np.testing.assert_array_equal(li.nn.gelu_tanh(x), jax.nn.gelu(x))
    np.testing.assert_array_equal(li.nn.gelu(x), jax.nn.gelu(x, approximate=False))


def test_activations_pickle_by_reference():
    for name in ACTIVATIONS:
        fn = getattr(li.nn, name)
        assert pickle.loads(pickle.dumps(fn)) is fn, name
