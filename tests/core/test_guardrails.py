"""A placeholder is never mistaken for a value (PyTorch's UninitializedParameter guardrails)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from seed_models import LazyMLP

import lazyinit as li

MESSAGE = r"placeholder with no value yet\. Run li\.dry_run"
U = li.Uninitialized((None, 3), "float32")
TREE = {"w": U}


@pytest.mark.parametrize(
    "use",
    [
        pytest.param(lambda: U + 1, id="add"),
        pytest.param(lambda: 2 * U, id="rmul"),
        pytest.param(lambda: U @ jnp.ones(3), id="matmul"),
        pytest.param(lambda: -U, id="neg"),
        pytest.param(lambda: U[0], id="index"),
        pytest.param(lambda: bool(U), id="bool"),
        pytest.param(lambda: jnp.sum(U), id="jnp.sum"),
        pytest.param(lambda: jnp.add(U, 1), id="jnp.add"),
        pytest.param(lambda: jnp.asarray(U), id="jnp.asarray"),
        pytest.param(lambda: np.asarray(U), id="np.asarray"),
        pytest.param(lambda: jax.jit(lambda t: t)(TREE), id="jax.jit"),
        pytest.param(lambda: jax.device_put(TREE), id="jax.device_put"),
        pytest.param(lambda: optax.adam(1e-3).init(TREE), id="optax.init"),
        pytest.param(lambda: jax.tree.map(lambda x: x, TREE), id="jax.tree.map"),
    ],
)
def test_every_use_of_a_placeholder_says_to_dry_run_first(use):
    with pytest.raises(li.errors.UninitializedParamError, match=MESSAGE):
        use()


def test_calling_a_model_with_placeholders_names_every_uninitialized_path(key):
    model = LazyMLP()
    state = li.lazy_state(model)
    state["fc1"] = li.dry_run(li.Linear(10), key, jnp.ones((2, 6)))
    with pytest.raises(
        li.errors.UninitializedParamError,
        match=r"LazyMLP was called with uninitialized parameters: fc2/kernel, fc2/bias\. Run li\.dry_run",
    ):
        model(state, jnp.ones((2, 6)))


def test_uninitialized_paths_and_has_uninitialized():
    state = li.lazy_state(LazyMLP())
    assert li.uninitialized_paths(state) == ["fc1/kernel", "fc1/bias", "fc2/kernel", "fc2/bias"]
    assert li.has_uninitialized(U) and not li.has_uninitialized({"w": jnp.ones(2)})


def test_placeholder_repr_and_choices():
    assert repr(li.Uninitialized()) == "Uninitialized(shape=?, dtype=?)"
    assert repr(li.Uninitialized((4,), "bfloat16")) == "Uninitialized(shape=(4,), dtype=bfloat16)"
    device = jax.devices()[0]
    assert U.to(device).device == device and U.astype("float16").dtype == np.float16
    assert U.matches((7, 3)) and not U.matches((7, 4)) and not U.matches((3,))


def test_a_lazy_states_placeholders_name_their_path_wherever_they_are_refused():
    lazy = li.lazy_state(LazyMLP())
    with pytest.raises(
        li.errors.UninitializedParamError,
        match=r"Uninitialized\(shape=\(10,\), dtype=float32\) at 'fc1/bias' is a placeholder",
    ):
        optax.adam(1e-3).init(lazy)
    with pytest.raises(li.errors.UninitializedParamError, match=r"at 'fc2/bias' is a placeholder"):
        jax.jit(lambda b: b)(lazy["fc2"]["bias"])
    assert lazy["fc1"]["kernel"] == li.Uninitialized(
        (None, 10), "float32"
    )  # the path is not compared
