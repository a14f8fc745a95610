"""Issue 20, the init side: a draw needs no memory beyond its output, and its values do not change.

JAX lowers threefry on the CPU as a loop that keeps two ``uint32`` arrays as big
as the output alive, and a vmapped group draw used to write a whole stack of
same-kind parameters before copying each one out. These tests look at what XLA
compiled for the dry run (``memory_analysis()``: exact, not a timing) and check
that every key the initializers get draws JAX's own threefry bits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyinit as li
from lazyinit import _drawing, _materialize
from lazyinit._keys import FUSED_THREEFRY, for_draw

D = 1024  # a 4 MiB float32 kernel: big enough that temporaries show, quick to draw


def _temporaries() -> int:
    """The largest temporary buffer size of every compiled draw the dry runs cached."""
    key, sizes = jax.random.key(0), [0]
    for (init, *rest), kernel in _drawing._KERNELS.items():
        words = _materialize.param_words(("p",), init)
        if len(rest) == 5:  # a batch kernel: (shape, dtype, placement, typed key, batch size)
            words = np.stack([words] * rest[-1])
        compiled = kernel.lower(key, words).compile()
        sizes.append(compiled.memory_analysis().temp_size_in_bytes)
    for program in _drawing._PROGRAMS.values():
        sizes.append(program.lower(key).compile().memory_analysis().temp_size_in_bytes)
    return max(sizes)


class Kernels(li.Layer):
    """``n`` float32 kernels of ``(D, D)``, each from ``init``, as the issue's 8 x 4096^2."""

    n: int = 8
    init: object = li.initializers.lecun_normal()

    def specs(self, x):
        return {f"k{i}": li.Param((x.shape[-1], D), self.init) for i in range(self.n)}

    def __call__(self, params, x):
        return sum(x @ params[f"k{i}"] for i in range(self.n))


INITS = {
    "lecun_normal": li.initializers.lecun_normal(),
    "normal": li.initializers.normal(0.02),
    "uniform": li.initializers.uniform(0.1),
    "truncated_normal": li.initializers.truncated_normal(1.0),
    "he_uniform": li.initializers.he_uniform(),
}


@pytest.mark.parametrize("name", sorted(INITS))
@pytest.mark.parametrize("jit", [False, True], ids=["per-kernel", "jit"])
def test_a_draw_needs_no_temporaries_beyond_a_sixteenth_of_its_output(name, jit):
    li.clear_cache()
    x = jnp.ones((1, D))
    params = li.dry_run(Kernels(2, INITS[name]), jax.random.key(0), x, jit=jit)
    assert params["k0"].shape == (D, D)
    # Before: 3 x 4 MiB per kernel (the threefry loop's state and counters); with jit=True
    # also the whole stack of the group, twice.
    assert _temporaries() <= D * D * 4 // 16


def test_jit_true_draws_a_big_group_without_stacking_it_and_with_the_same_values():
    """8 x 4 MiB of one kind is more than GROUP_BYTES: each is drawn by the kind's kernel."""
    li.clear_cache()
    x, key = jnp.ones((1, D)), jax.random.key(3)
    one_call = li.dry_run(Kernels(8), key, x, jit=True)
    assert not _drawing._PROGRAMS  # no program holds the stack of eight
    assert _temporaries() <= D * D * 4 // 16
    eager = li.dry_run(Kernels(8), key, x)
    for name in eager:
        np.testing.assert_array_equal(one_call[name], eager[name])
    expected = li.initializers.lecun_normal()(li.param_key(key, "k5"), (D, D), jnp.float32)
    np.testing.assert_array_equal(one_call["k5"], expected)


def test_small_groups_are_still_drawn_in_one_program_with_the_same_values(key):
    li.clear_cache()
    model = li.Sequential([li.Linear(8) for _ in range(6)])
    one_call = li.dry_run(model, key, jnp.ones((1, 8)), jit=True)
    assert len(_drawing._PROGRAMS) == 1
    eager = li.dry_run(model, key, jnp.ones((1, 8)))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), one_call, eager))


def test_a_stacked_group_over_the_bound_is_split_and_values_stay(key, monkeypatch):
    monkeypatch.setattr(_drawing, "GROUP_BYTES", 8 * 8 * 4)  # one 8x8 float32 kernel
    li.clear_cache()
    model = li.Sequential([li.Linear(8) for _ in range(6)])
    split = li.dry_run(model, key, jnp.ones((1, 8)), jit=True)
    (program,) = _drawing._PROGRAMS.values()  # the six biases (32 bytes each) stay in it,
    (((biases, _),), inline) = program.lower(key).out_info  # stacked: one output, not six
    assert biases.shape == (6, 8) and inline == []
    monkeypatch.undo()
    li.clear_cache()
    together = li.dry_run(model, key, jnp.ones((1, 8)), jit=True)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), split, together))


# -- the keys the initializers get draw JAX's own bits --------------------------------------


def _draws(key):
    """Every way an initializer may use its key, as arrays (keys as their data); each draw has
    a key of its own (``key(i)``), as the key-reuse checker wants."""
    k1, k2 = jax.random.split(key(0))
    return {
        "normal 3-d": jax.random.normal(key(1), (3, 5, 7)),
        "normal scalar": jax.random.normal(key(2), ()),
        "empty": jax.random.uniform(key(3), (0, 4)),
        "bits uint8": jax.random.bits(key(4), (4, 3), jnp.uint8),
        "bits uint16": jax.random.bits(key(5), (9,), jnp.uint16),
        "bits uint32": jax.random.bits(key(6), (2, 2, 2, 3)),
        "randint": jax.random.randint(key(7), (5, 5), 0, 100),
        "bernoulli": jax.random.bernoulli(key(8), 0.3, (64,)),
        "permutation": jax.random.permutation(key(9), 17),
        "orthogonal": jax.random.orthogonal(key(10), 6),
        "split then draw": jax.random.normal(k2, (4,)) + jax.random.normal(k1, (4,)),
        "fold_in then draw": jax.random.normal(jax.random.fold_in(key(11), 7), (4,)),
        "split keys": jax.random.key_data(jax.random.split(key(12), 5)),
        "bfloat16": jax.random.normal(key(13), (8, 8), jnp.bfloat16),
        "vmapped": jax.vmap(lambda k: jax.random.normal(k, (3,)))(jax.random.split(key(14))),
    }


def _plain(i):
    return jax.random.key(i)


def _fused(i):
    return for_draw(jax.random.key(i))


def test_a_draw_key_gives_exactly_the_threefry_bits():
    want, got = jax.jit(lambda: _draws(_plain))(), jax.jit(lambda: _draws(_fused))()
    for name in want:
        assert want[name].dtype == got[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_draw_key_gives_the_threefry_bits_in_64_bits_too():
    jax.config.update("jax_enable_x64", True)
    try:
        for draw in (
            lambda k: jax.random.bits(k, (5, 3), jnp.uint64),
            lambda k: jax.random.normal(k, (4, 4), jnp.float64),
        ):
            np.testing.assert_array_equal(draw(_fused(2)), draw(_plain(2)))
    finally:
        jax.config.update("jax_enable_x64", False)


def test_only_typed_threefry_keys_are_retyped():
    assert for_draw(jax.random.key(0)).dtype == jax.random.key(0, impl=FUSED_THREEFRY).dtype
    raw = jax.random.PRNGKey(0)
    assert for_draw(raw) is raw
    rbg = jax.random.key(0, impl="rbg")
    assert for_draw(rbg) is rbg


def test_legacy_threefry_draws_the_legacy_bits():
    jax.config.update("jax_threefry_partitionable", False)
    try:
        np.testing.assert_array_equal(
            jax.random.normal(_fused(4), (6, 5)), jax.random.normal(_plain(4), (6, 5))
        )
        key = jax.random.key(4)
        params = li.dry_run(li.Linear(3), key, jnp.ones((1, 2)))
        want = li.initializers.lecun_normal()(li.param_key(key, "kernel"), (2, 3), jnp.float32)
        np.testing.assert_array_equal(params["kernel"], want)
    finally:
        jax.config.update("jax_threefry_partitionable", True)


@pytest.mark.parametrize(
    "root", [jax.random.PRNGKey(5), jax.random.key(5, impl="rbg")], ids=["raw", "rbg"]
)
def test_other_keys_draw_as_before(root):
    params = li.dry_run(li.Linear(3), root, jnp.ones((1, 2)))
    want = li.initializers.lecun_normal()(li.param_key(root, "kernel"), (2, 3), jnp.float32)
    np.testing.assert_array_equal(params["kernel"], want)
