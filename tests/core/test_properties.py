"""Properties over random layer stacks, input shapes and trees (hypothesis, deterministic in CI)."""

import copy
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lazyinit as li

ACTIVATIONS = [li.nn.relu, li.nn.tanh, li.nn.gelu_tanh]


@st.composite
def layer_entry(draw):
    kind = draw(
        st.sampled_from(
            ["linear", "linear", "act", "layernorm", "rmsnorm", "residual", "batchnorm", "dropout"]
        )
    )
    if kind == "linear":
        return li.Linear(draw(st.integers(1, 5)), use_bias=draw(st.booleans()))
    if kind == "act":
        return draw(st.sampled_from(ACTIVATIONS))
    if kind == "layernorm":
        return li.LayerNorm()
    if kind == "rmsnorm":
        return li.RMSNorm()
    if kind == "batchnorm":  # non-trainable state: running mean and variance
        return li.BatchNorm()
    if kind == "dropout":
        return li.Dropout(0.5)
    return li.Residual(li.LayerNorm())


stacks = st.lists(layer_entry(), min_size=1, max_size=4).map(li.Sequential)
input_shapes = st.tuples(
    st.lists(st.integers(1, 3), min_size=1, max_size=2), st.integers(1, 4)
).map(lambda t: (*t[0], t[1]))
seeds = st.integers(0, 2**16)


def bits(tree):
    """Every leaf of a tree as (path, shape, dtype, bytes), or the placeholder itself."""

    def leaf(x):
        if isinstance(x, li.Uninitialized):
            return ("placeholder", x)
        return (tuple(x.shape), np.dtype(x.dtype).name, np.asarray(x).tobytes())

    flat = jax.tree_util.tree_flatten_with_path(
        tree, is_leaf=lambda x: isinstance(x, li.Uninitialized)
    )[0]
    return [(jax.tree_util.keystr(p), leaf(x)) for p, x in flat]


def structure(tree):
    """The nesting with key order, empty dicts included."""
    if isinstance(tree, dict):
        return [(k, structure(v)) for k, v in tree.items()]
    return None


@given(stacks, input_shapes, seeds)
def test_dry_run_is_idempotent(model, shape, seed):
    x = jnp.ones(shape)
    first = li.dry_run(model, jax.random.key(seed), x)
    again = li.dry_run(model, jax.random.key(seed), x)
    assert bits(first) == bits(again)
    kept = li.dry_run(model, jax.random.key(seed + 1), x, state=first)
    assert bits(kept) == bits(first)


@given(stacks, input_shapes, seeds, st.data())
def test_lazy_dry_run_equals_dry_run_with_the_same_values(model, shape, seed, data):
    x = jnp.ones(shape)
    full = li.dry_run(model, jax.random.key(seed), x)
    flat = jax.tree_util.tree_flatten_with_path(full)[0]
    lazy_paths = data.draw(
        st.sets(st.sampled_from([p for p, _ in flat])) if flat else st.just(set())
    )
    state = jax.tree_util.tree_map_with_path(
        lambda p, a: li.Uninitialized((None,) * a.ndim, a.dtype) if p in lazy_paths else a, full
    )
    assert bits(li.dry_run(model, jax.random.key(seed), x, state=state)) == bits(full)
    loaded, _ = li.load_state(li.lazy_state(model), full)
    assert bits(li.dry_run(model, jax.random.key(seed + 7), x, state=loaded)) == bits(full)


class Branches(li.Layer):
    """Three independent children called in a chosen order."""

    a: li.Layer
    b: li.Layer
    c: li.Layer
    order: tuple[str, ...] = ("a", "b", "c")

    def __call__(self, params, x):
        return tuple(getattr(self, name)(params[name], x) for name in self.order)


@given(st.lists(st.integers(1, 4), min_size=3, max_size=3), input_shapes, seeds)
def test_values_never_depend_on_layer_order(sizes, shape, seed):
    x = jnp.ones(shape)
    children = dict(zip("abc", (li.Linear(n) for n in sizes)))
    results = [
        bits(li.dry_run(Branches(**children, order=order), jax.random.key(seed), x))
        for order in itertools.permutations("abc")
    ]
    assert all(r == results[0] for r in results)
    # Appending layers never changes the ones before them.
    short = li.Sequential([children["a"], li.nn.relu])
    long = li.Sequential([children["a"], li.nn.relu, children["b"], children["c"]])
    assert bits(li.dry_run(short, jax.random.key(seed), x)["0"]) == bits(
        li.dry_run(long, jax.random.key(seed), x)["0"]
    )


# ---------------------------------------------------------------------------
# Save and load.

DTYPES = ["float32", "float16", "bfloat16", "int32", "uint8", "bool"]
names = st.text(alphabet="abxyz01_", min_size=1, max_size=3)
shapes = st.lists(st.integers(0, 3), max_size=3).map(tuple)


@st.composite
def array_leaf(draw):
    shape, dtype, seed = draw(shapes), draw(st.sampled_from(DTYPES)), draw(seeds)
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape) * 100
    if values.size and dtype.startswith(("float", "bfloat")):
        values.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 1e-30, 3.0]))
    values = values.astype(dtype) if dtype != "bool" else values > 0
    return jnp.asarray(values) if draw(st.booleans()) else values


placeholders = st.builds(
    li.Uninitialized,
    st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(1, 4)), max_size=3)),
    st.one_of(st.none(), st.sampled_from(DTYPES)),
)
leaves = st.one_of(array_leaf(), array_leaf(), placeholders)
subtrees = st.recursive(
    leaves, lambda children: st.dictionaries(names, children, max_size=3), max_leaves=8
)
trees = st.dictionaries(names, subtrees, max_size=3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("properties")


@given(trees)
def test_save_then_load_is_the_identity(folder, tree):
    path = folder / "identity.safetensors"
    li.save(path, tree, overwrite=True)
    loaded, _ = li.load(path)
    assert structure(loaded) == structure(tree)
    assert bits(loaded) == bits(tree)
    # and against the tree itself as the template
    assert bits(li.load(path, like=tree)[0]) == bits(tree)


def _arrays(tree):
    return [
        (p, x)
        for p, x in jax.tree_util.tree_flatten_with_path(
            tree, is_leaf=lambda x: isinstance(x, li.Uninitialized)
        )[0]
        if not isinstance(x, li.Uninitialized)
    ]


@given(trees.filter(lambda t: _arrays(t)), st.data())
def test_any_failed_load_leaves_its_inputs_unchanged(folder, tree, data):
    path = folder / "failed.safetensors"
    li.save(path, tree, overwrite=True)
    raw = path.read_bytes()
    victim, leaf = data.draw(st.sampled_from(_arrays(tree)))
    how = data.draw(st.sampled_from(["shape", "dtype", "missing"]))
    if how == "shape":
        wrong = jax.ShapeDtypeStruct((*leaf.shape, 2), leaf.dtype)
    elif how == "dtype":
        wrong = jax.ShapeDtypeStruct(leaf.shape, "int8" if leaf.dtype != np.int8 else "int16")
    like = copy.deepcopy(tree)
    node = like
    for key in victim[:-1]:
        node = node[key.key]
    if how == "missing":
        node[victim[-1].key + "_renamed"] = node.pop(victim[-1].key)
    else:
        node[victim[-1].key] = wrong
    before_like, before_tree = bits(like), bits(tree)
    with pytest.raises(li.errors.StateMismatchError, match=r"nothing was changed"):
        li.load(path, like=like)
    with pytest.raises(li.errors.StateMismatchError, match=r"nothing was changed"):
        li.load_state(like, tree)
    assert bits(like) == before_like and bits(tree) == before_tree
    assert path.read_bytes() == raw
