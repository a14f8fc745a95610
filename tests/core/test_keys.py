"""Issue 13, keys, initializers and trees: each failure is a LazyInitError that says what to do.

Item 6 (initializers), item 9 (keys) and item 10 (trees that contain themselves
or nest too deep). The key checks run before tracing, so they are the same for
an abstract and a concrete dry run.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyinit as li

X = jnp.ones((2, 4))
ABSTRACT = jax.ShapeDtypeStruct((2, 4), jnp.float32)


def model():
    return li.Sequential([li.Linear(3), li.nn.relu, li.Linear(2)])


# -- item 9: keys ---------------------------------------------------------------------------


def test_item9_the_sample_in_the_keys_place_says_which_argument_is_the_key():
    with pytest.raises(
        li.errors.InvalidArgumentError,
        match=r"got ArrayImpl float32\[2, 4\]\. The argument after the model is the key .*"
        r"li\.dry_run\(model, jax\.random\.key\(0\), x\)",
    ):
        li.dry_run(model(), X, X)


@pytest.mark.parametrize("sample", [X, ABSTRACT], ids=["concrete", "abstract"])
def test_item9_a_batch_of_keys_is_refused(sample):
    with pytest.raises(
        li.errors.InvalidArgumentError, match=r"got a batch of \(4,\) keys.*Pass one key"
    ):
        li.dry_run(model(), jax.random.split(jax.random.key(0), 4), sample)
    with pytest.raises(
        li.errors.InvalidArgumentError, match=r"batch of raw keys \(ArrayImpl uint32\[4, 2\]\)"
    ):
        li.dry_run(model(), jax.random.split(jax.random.PRNGKey(0), 4), sample)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.float32])
def test_item9_raw_key_data_of_the_wrong_dtype_is_refused(dtype):
    with pytest.raises(li.errors.InvalidArgumentError, match=r"key"):
        li.dry_run(model(), jnp.zeros(2, dtype), X)
    with pytest.raises(li.errors.InvalidArgumentError, match=r"raw key data must be uint32\[2\]"):
        li.dry_run(model(), jnp.zeros(2, jnp.int32), X)


@pytest.mark.parametrize("sample", [X, ABSTRACT], ids=["concrete", "abstract"])
@pytest.mark.parametrize("seed", [2**70, 2**32, -(2**31) - 1])
def test_item9_a_seed_out_of_range_gets_the_same_answer_abstract_and_concrete(sample, seed):
    with pytest.raises(
        li.errors.InvalidArgumentError, match=r"the int seed .* is outside \[-2147483648, "
    ):
        li.dry_run(model(), seed, sample)


def test_item9_seeds_in_range_work_and_equal_their_keys():
    for seed in (0, 2**32 - 1, -1):
        a = li.dry_run(model(), seed, X)
        b = li.dry_run(model(), jax.random.key(seed), X)
        assert all(jax.tree.leaves(jax.tree.map(lambda x, y: bool((x == y).all()), a, b)))


def test_item9_a_deleted_key_is_refused_before_tracing():
    key = jax.random.key(0)
    key.delete()
    with pytest.raises(li.errors.InvalidArgumentError, match="key was deleted or donated"):
        li.dry_run(model(), key, X)


def test_item9_a_raw_threefry_key_under_another_default_impl_says_what_is_accepted():
    raw = jax.random.PRNGKey(0)
    previous = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", "rbg")
    try:
        with pytest.raises(
            li.errors.InvalidArgumentError,
            match=r"uint32\[2\], but the default PRNG implementation 'rbg' uses raw keys of shape "
            r"\(4,\)\. Raw keys are accepted only for the default implementation: .*wrap_key_data",
        ):
            li.dry_run(model(), raw, X)
        li.dry_run(model(), jax.random.wrap_key_data(raw, impl="threefry2x32"), X)
    finally:
        jax.config.update("jax_default_prng_impl", previous)


def test_item9_key_errors_are_in_the_family_and_argument_errors():
    assert issubclass(li.errors.InvalidArgumentError, li.errors.InvalidArgumentError)
    assert issubclass(li.errors.InvalidArgumentError, li.errors.LazyInitError)
    with pytest.raises(li.errors.InvalidArgumentError, match="got the bool True"):
        li.dry_run(model(), True, X)


# -- item 6: initializers -------------------------------------------------------------------


def _with_init(init):
    return li.Sequential([li.Linear(3, kernel_init=init)])


@pytest.mark.parametrize(
    "init, found",
    [
        (lambda k, s, d: None, "returned NoneType None, not an array"),
        (lambda k, s, d: [jnp.zeros(s, d)], "returned list .*not an array"),
        (lambda k, s, d: {"w": jnp.zeros(s, d)}, "returned dict .*not an array"),
        (lambda k, s, d: jnp.zeros(s[:1], d), r"returned float32\[4\], but the spec declares"),
        (lambda k, s: jnp.zeros(s), "raised TypeError"),
        (lambda k, s, d: 1 / 0, "raised ZeroDivisionError: division by zero"),
        (lambda k, s, d: "zeros", "raised TypeError"),
    ],
    ids=["None", "list", "dict", "shape", "signature", "raises", "str"],
)
@pytest.mark.parametrize("jit", [False, True])
def test_item6_initializer_failures_name_the_path_and_the_initializer(init, found, jit):
    with pytest.raises(
        li.errors.InitializerError, match=f"For parameter '0/kernel': initializer <lambda> {found}"
    ) as e:
        li.dry_run(_with_init(init), jax.random.key(0), X, jit=jit)
    assert "init(key, shape, dtype)" in str(e.value) or "declares" in str(e.value)


# -- item 10: trees that contain themselves or nest too deep -------------------------------


def cyclic():
    tree = {"w": jnp.ones(2)}
    tree["self"] = tree
    return tree


def deep(n=2000):
    tree = {"w": jnp.ones(2)}
    for _ in range(n):
        tree = {"a": tree}
    return tree


@pytest.mark.parametrize("tree, what", [(cyclic(), "contains itself"), (deep(), "deeper than 100")])
def test_item10_save_and_load_state_refuse_cycles_and_deep_nesting(tmp_path, tree, what):
    with pytest.raises(li.errors.InvalidTreeError, match=what):
        li.save(tmp_path / "c.safetensors", tree)
    assert not (tmp_path / "c.safetensors").exists()
    with pytest.raises(li.errors.InvalidTreeError, match=what):
        li.load_state({"w": jnp.ones(2)}, tree)


@pytest.mark.parametrize("tree, what", [(cyclic(), "contains itself"), (deep(), "deeper than 100")])
def test_item10_dry_run_refuses_a_cyclic_or_deep_state(tree, what):
    with pytest.raises(li.errors.InvalidTreeError, match=what):
        li.dry_run(model(), jax.random.key(0), X, state=tree)


def test_item10_a_load_template_that_contains_itself_is_refused(tmp_path):
    li.save(tmp_path / "w.safetensors", {"w": jnp.ones(2)})
    with pytest.raises(li.errors.InvalidTreeError, match="like tree contains itself at 'self'"):
        li.load(tmp_path / "w.safetensors", like=cyclic())


def test_item10_nesting_up_to_the_limit_round_trips(tmp_path):
    tree = deep(98)
    li.save(tmp_path / "d.safetensors", tree)
    loaded, _ = li.load(tmp_path / "d.safetensors")
    node = loaded
    for _ in range(98):
        node = node["a"]
    np.testing.assert_array_equal(node["w"], jnp.ones(2))
