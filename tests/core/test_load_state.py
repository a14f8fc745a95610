"""``li.load_state``: PyTorch's ``load_state_dict`` rules as a pure function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from seed_models import LazyMLP

import lazyinit as li

X = jnp.ones((4, 6))


@pytest.fixture
def full(key):
    return li.dry_run(LazyMLP(), key, X)


def test_uninitialized_takes_initialized_checking_known_dims(full):
    merged, report = li.load_state(li.lazy_state(LazyMLP()), full)
    assert not li.has_uninitialized(merged)
    assert report.loaded == ("fc1/bias", "fc1/kernel", "fc2/bias", "fc2/kernel")
    bad = {**full, "fc1": {**full["fc1"], "bias": jnp.zeros((11,))}}
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"size mismatch for 'fc1/bias': found shape \(11,\), expected \(10,\)",
    ):
        li.load_state(li.lazy_state(LazyMLP()), bad)


def test_initialized_takes_uninitialized_is_an_error(full):
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"placeholder for 'fc1/kernel', where an array is needed",
    ):
        li.load_state(full, li.lazy_state(LazyMLP()))


def test_uninitialized_takes_uninitialized_and_loading_twice_is_harmless(full):
    lazy = li.lazy_state(LazyMLP())
    merged, report = li.load_state(lazy, li.lazy_state(LazyMLP()))
    assert merged == lazy and report.loaded == ()
    once, _ = li.load_state(lazy, full)
    twice, _ = li.load_state(once, full)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), once, twice))


def test_size_mismatch_between_initialized_leaves_reports_all_with_transpose_hint(full):
    incoming = {
        "fc1": {"kernel": full["fc1"]["kernel"].T, "bias": full["fc1"]["bias"]},
        "fc2": {"kernel": jnp.zeros((3, 3)), "bias": full["fc2"]["bias"]},
    }
    with pytest.raises(li.errors.StateMismatchError) as info:
        li.load_state(full, incoming)
    message = str(info.value)
    assert (
        "size mismatch for 'fc1/kernel': found shape (10, 6), expected (6, 10) (the transpose"
        in message
    )
    assert "size mismatch for 'fc2/kernel': found shape (3, 3), expected (10, 1)" in message
    assert len(info.value.problems) == 2


def test_missing_and_unexpected_strict_and_not(full):
    incoming = {"fc1": {"weight": full["fc1"]["kernel"], "bias": full["fc1"]["bias"]}}
    with pytest.raises(li.errors.StateMismatchError) as info:
        li.load_state(full, incoming)
    message = str(info.value)
    assert "missing key 'fc1/kernel' (did you mean 'fc1/weight'?)" in message
    assert "missing key 'fc2/bias'" in message
    assert "unexpected key 'fc1/weight' (did you mean 'fc1/kernel'?)" in message
    merged, report = li.load_state(full, incoming, strict=False)
    assert report.loaded == ("fc1/bias",)
    assert report.missing == ("fc1/kernel", "fc2/bias", "fc2/kernel")
    assert report.unexpected == ("fc1/weight",)
    assert "weight" not in merged["fc1"]


def test_dtype_mismatch_is_an_error_unless_cast(full):
    incoming = jax.tree.map(lambda a: a.astype(jnp.bfloat16), full)
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"dtype mismatch for 'fc1/bias': found bfloat16, expected float32 \(pass cast=True",
    ):
        li.load_state(full, incoming)
    merged, report = li.load_state(full, incoming, cast=True)
    assert report.cast == ("fc1/bias", "fc1/kernel", "fc2/bias", "fc2/kernel")
    assert {a.dtype for a in jax.tree.leaves(merged)} == {np.dtype("float32")}


def test_failed_load_changes_nothing(full):
    current = li.lazy_state(LazyMLP())
    snapshot = {k: dict(v) for k, v in current.items()}
    incoming = {"fc1": {"kernel": jnp.zeros((6, 10)), "bias": jnp.zeros((3,))}}
    with pytest.raises(li.errors.StateMismatchError):
        li.load_state(current, incoming)
    assert current == snapshot
    assert incoming["fc1"]["kernel"].shape == (6, 10)


def test_non_mapping_and_non_array_leaves_are_type_errors(full):
    with pytest.raises(li.errors.InvalidTreeError, match="must be a mapping of names to arrays"):
        li.load_state(full, [1, 2])
    with pytest.raises(
        li.errors.InvalidTreeError, match=r"'fc1/kernel': expected an array, got str"
    ):
        li.load_state(full, {"fc1": {"kernel": "oops"}})
    with pytest.raises(
        li.errors.InvalidTreeError,
        match=r"key 'a/b' under '<root>': names must be non-empty strings without '/'",
    ):
        li.load_state(full, {"a/b": jnp.zeros(1)})


def test_a_layer_whose_names_need_the_input_loads_as_a_whole(key):
    conv = li.Conv(
        4, 3
    )  # an int kernel_size: the rank, so the kernel's shape, comes from the input
    lazy = li.lazy_state(conv)
    assert lazy == li.Uninitialized()
    full = li.dry_run(conv, key, jnp.ones((1, 5, 5, 2)))
    merged, report = li.load_state(lazy, full)
    assert report.loaded == ("bias", "kernel")
    again = li.dry_run(conv, jax.random.key(9), jnp.ones((1, 5, 5, 2)), state=merged)
    np.testing.assert_array_equal(again["kernel"], full["kernel"])
    bf16 = li.dry_run(conv, key, jnp.ones((1, 5, 5, 2)), state=lazy.astype("bfloat16"))
    assert bf16["kernel"].dtype == jnp.bfloat16


def test_a_parent_may_read_its_childs_params_during_the_dry_run(key):
    class Tied(li.Layer):
        fc: li.Layer = li.Linear(6)

        def __call__(self, params, x):
            h = self.fc(params["fc"], x)
            return h @ params["fc"]["kernel"].T  # reuses the child's kernel, transposed

    params = li.dry_run(Tied(), key, X)
    assert Tied()(params, X).shape == (4, 6)
