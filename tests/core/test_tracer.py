"""The tracer: abstract runs, caching, paths, and errors that name the layer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from seed_models import LazyMLP

import lazyinit as li

X = jnp.ones((4, 6))


class Counting(li.Layer):
    """A leaf that counts how often its specs are traced."""

    width: int = 6
    traced = []

    def specs(self, x):
        if isinstance(x, jax.ShapeDtypeStruct | jax.Array | jax.core.Tracer):
            Counting.traced.append(x.shape)  # (not li.lazy_state's question without input)
        return {"w": li.Param((x.shape[-1], self.width), li.initializers.zeros)}

    def __call__(self, params, x):
        return x @ params["w"]


def test_identical_blocks_are_traced_once_and_a_repeat_not_at_all(key):
    Counting.traced.clear()
    li.clear_cache()
    model = li.Sequential([Counting(), li.nn.relu, Counting(), Counting()])
    params = li.dry_run(model, key, X)
    assert sorted(params) == ["0", "2", "3"]
    assert Counting.traced == [(4, 6)]
    li.dry_run(model, key, X)
    assert Counting.traced == [(4, 6)]
    li.dry_run(model, key, jnp.ones((8, 6)))  # a new signature is traced again
    assert Counting.traced == [(4, 6), (8, 6)]


def test_only_the_batch_size_changing_keeps_params_and_compiles_nothing_new(key):
    from lazyinit import _drawing

    small = li.dry_run(LazyMLP(), key, X)
    kernels = len(_drawing._KERNELS)
    big = li.dry_run(LazyMLP(), key, jnp.ones((32, 6)))
    assert len(_drawing._KERNELS) == kernels
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), small, big))


def test_abstract_sample_gives_abstract_result_and_allocates_nothing(key):
    x = jax.ShapeDtypeStruct((1024, 6), jnp.float32)
    li.dry_run(LazyMLP(), key, x)  # warm the caches
    before = len(jax.live_arrays())
    plan = li.dry_run(LazyMLP(), key, x)
    assert len(jax.live_arrays()) == before
    assert plan["fc1"]["kernel"] == jax.ShapeDtypeStruct((6, 10), jnp.float32)
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(plan))


def test_trace_reports_calls_and_outputs():
    t = li.trace(LazyMLP(), X)
    assert [c.path for c in t.calls] == [(), ("fc1",), ("fc2",)]
    assert t.calls[1].outputs == jax.ShapeDtypeStruct((4, 10), jnp.float32)
    assert t.outputs == jax.ShapeDtypeStruct((4, 1), jnp.float32)
    assert t.owners[("fc1", "kernel")] == li.Linear(10)


def test_empty_layers_keep_their_sub_dict(key):
    class NoParams(li.Layer):
        def __call__(self, params, x):
            return x

    class Holder(li.Layer):
        inner: li.Layer = NoParams()
        fc: li.Layer = li.Linear(2)

        def __call__(self, params, x):
            return self.fc(params["fc"], self.inner(params["inner"], x))

    params = li.dry_run(Holder(), key, X)
    assert params["inner"] == {}
    assert Holder()(params, X).shape == (4, 2)


def test_specs_receive_only_the_inputs_they_declare(key):
    class Masked(li.Layer):
        def specs(self, x):
            return {"w": li.Param((x.shape[-1],), li.initializers.ones)}

        def __call__(self, params, x, mask=None, *, train=False):
            return jnp.where(mask, x, 0.0) * params["w"][None] if train else x

    params = li.dry_run(Masked(), key, X, X > 0, train=True)
    assert params["w"].shape == (6,)


def test_weight_sharing_by_calling_one_layer_twice(key):
    class Tied(li.Layer):
        fc: li.Layer = li.Linear(6)

        def __call__(self, params, x):
            return self.fc(params["fc"], self.fc(params["fc"], x))

    params = li.dry_run(Tied(), key, X)
    assert jax.tree.map(jnp.shape, params) == {"fc": {"kernel": (6, 6), "bias": (6,)}}


# --- 11. bad input gets an error that names the layer path ----------------------------------


def test_two_layers_declaring_the_same_path_is_an_error(key):
    class Clash(li.Layer):
        a: li.Layer = li.Linear(6)
        b: li.Layer = li.Linear(3)

        def __call__(self, params, x):
            return self.b(params["a"], self.a(params["a"], x))

    with pytest.raises(
        li.errors.DuplicateParamError,
        match=r"Parameter 'a/kernel' is declared twice: by Linear \(\(6, 6\)\) and by Linear \(\(6, 3\)\)",
    ):
        li.dry_run(Clash(), key, X)


def test_wrong_rank_names_the_layer_path(key):
    with pytest.raises(
        li.errors.InferShapeError,
        match=r"Linear at 'fc1': Linear expects inputs with at least 1 dimension\(s\) \(\.\.\., in_features\), got shape \(\)",
    ):
        li.dry_run(LazyMLP(), key, jnp.ones(()))


def test_sequential_entry_that_is_not_callable():
    with pytest.raises(
        li.errors.ConfigureLayerError,
        match=r"Sequential entry 1 is a str \('relu'\), which is not callable",
    ):
        li.Sequential([li.Linear(3), "relu"])


class Spec(li.Layer):
    shape: tuple = (2,)
    init: object = staticmethod(jax.nn.initializers.zeros)

    def specs(self, x):
        return {"w": li.Param(self.shape, self.init)}

    def __call__(self, params, x):
        return x


@pytest.mark.parametrize("shape", [(0, 3), (-1,), (2.5,), (True,)])
def test_spec_with_non_positive_or_non_integer_dim(key, shape):
    with pytest.raises(
        li.errors.InvalidSpecError,
        match=r"Parameter 'w' of Spec at '<root>' has shape .*: every dimension must be a positive int",
    ):
        li.dry_run(Spec(shape=shape), key, X)


def test_initializer_returning_the_wrong_shape_or_dtype(key):
    def bad_init(key, shape, dtype):
        return jnp.zeros((3,), jnp.int32)

    with pytest.raises(
        li.errors.InitializerError,
        match=r"For parameter 'w': initializer bad_init returned int32\[3\], but the spec declares float32\[2\]",
    ):
        li.dry_run(Spec(init=bad_init), key, X)


def test_shapes_that_depend_on_input_values_are_an_error(key):
    class ValueDependent(li.Layer):
        def specs(self, x):
            return {"w": li.Param((int(x.sum()),), jax.nn.initializers.zeros)}

        def __call__(self, params, x):
            return x

    with pytest.raises(
        li.errors.InferShapeError,
        match=r"ValueDependent at '<root>': a shape depends on the values of the input",
    ) as info:
        li.dry_run(ValueDependent(), key, X)
    assert isinstance(info.value.__cause__, jax.errors.ConcretizationTypeError)


def test_params_of_another_model_are_reported_by_path(key):
    other = li.dry_run(li.Sequential([li.Linear(10), li.Linear(1)]), key, X)
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"(?s)do not fit LazyMLP.*missing key 'fc1/kernel'.*unexpected key '0/kernel'",
    ):
        LazyMLP()(other, X)
    wrong_size = li.dry_run(LazyMLP(), key, jnp.ones((4, 5)))
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"size mismatch for 'fc1/kernel': found shape \(5, 10\), expected \(6, 10\)",
    ):
        LazyMLP()(wrong_size, X)


def test_using_an_undeclared_param_as_an_array_names_the_path(key):
    class Forgot(li.Layer):
        def __call__(self, params, x):
            return x * jnp.asarray(params["scale"])

    with pytest.raises(
        li.errors.InferShapeError,
        match=r"params at 'scale' was used as an array, but no layer declared a parameter there",
    ):
        li.dry_run(Forgot(), key, X)


def test_plain_functions_are_not_models(key):
    with pytest.raises(TypeError, match="li.trace and li.dry_run take a li.Layer, got function"):
        li.dry_run(lambda p, x: x, key, X)


# --- 9. the key scheme is versioned and pinned ----------------------------------------------


def test_key_scheme_golden_values():
    assert li.KEY_SCHEME == 1
    data = jax.random.key_data(li.param_key(jax.random.key(0), "fc1/kernel"))
    assert data.tolist() == [3883063654, 2261100939]
    params = li.dry_run(li.Linear(3), jax.random.key(0), jnp.ones((1, 2)))
    np.testing.assert_allclose(
        params["kernel"],
        [
            [1.0374900102615356, 0.9351303577423096, -1.366314172744751],
            [-0.22374916076660156, -0.14676155149936676, -0.294040709733963],
        ],
        rtol=1e-6,
    )
    seq = li.Sequential([li.Linear(2, bias_init=li.initializers.normal(1.0))])
    params = li.dry_run(seq, jax.random.key(7), jnp.ones((1, 2)))
    np.testing.assert_allclose(
        params["0"]["bias"], [-0.3627595603466034, -0.7640497088432312], rtol=1e-6
    )


def test_picklable_initializers_compare_by_value():
    import pickle

    init = li.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
    assert pickle.loads(pickle.dumps(init)) == init
    assert repr(init) == "variance_scaling(2.0, 'fan_in', 'truncated_normal')"
    a = init(jax.random.key(1), (3, 4), jnp.float32)
    b = jax.nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")(
        jax.random.key(1), (3, 4), jnp.float32
    )
    np.testing.assert_array_equal(a, b)


def test_a_keyword_no_layer_accepts_is_an_error_not_silently_dropped(key):
    model = li.Sequential([li.Linear(3), li.Dropout(0.5)])
    params = li.dry_run(model, key, X)
    assert model(params, X, train=True, key=jax.random.key(1)).shape == (4, 3)
    assert li.Sequential([li.Linear(3)])(
        li.dry_run(li.Sequential([li.Linear(3)]), key, X), X, train=True, key=key
    ).shape == (4, 3)
    with pytest.raises(
        li.errors.InvalidArgumentError,
        match=r"Sequential got keyword\(s\) 'trian' that none of its layers accepts \(they accept: key, train, x\)",
    ):
        model(params, X, trian=True)
    with pytest.raises(li.errors.InvalidArgumentError, match=r"Residual got keyword\(s\) 'kye'"):
        li.Residual(li.Linear(6))(li.dry_run(li.Residual(li.Linear(6)), key, X), X, kye=1)


def test_every_error_lazyinit_raises_for_bad_arguments_is_a_lazyinit_error(key):
    with pytest.raises(li.errors.InvalidArgumentError, match="key must be a jax.random.key"):
        li.dry_run(LazyMLP(), "bad", X)
    with pytest.raises(li.errors.InvalidArgumentError, match="device must be a jax.Device"):
        li.dry_run(LazyMLP(), key, X, device="cpu")
    assert issubclass(li.errors.InvalidArgumentError, li.errors.LazyInitError)
    assert issubclass(li.errors.InvalidArgumentError, TypeError)


def test_membership_in_params_during_a_dry_run_reflects_the_declared_specs(key):
    seen = []

    class Optional(li.Layer):
        def specs(self, x):
            return {"w": li.Param((x.shape[-1],), li.initializers.ones)}

        def __call__(self, params, x):
            seen.append(("w" in params, "bias" in params))
            return x * params["w"][None] + (params["bias"] if "bias" in params else 0.0)

    li.clear_cache()
    params = li.dry_run(Optional(), key, X)
    assert seen[0] == (True, False) and sorted(params) == ["w"]


def test_a_new_key_with_jit_reuses_the_one_compiled_program(key):
    # The jit=True row of benchmarks/big_trees.py times this path warm: a new key must not
    # trace the initializers or compile the program again.
    from lazyinit import _drawing

    traced = []

    def counting_init(k, shape, dtype):
        traced.append(shape)
        return jax.random.normal(k, shape, dtype)

    model = li.Sequential([li.Linear(4, kernel_init=counting_init), li.Linear(4)])
    first = li.dry_run(model, key, X, jit=True)
    n, programs = len(traced), dict(_drawing._PROGRAMS)
    assert programs  # jit=True drew by one program
    second = li.dry_run(model, jax.random.key(1), X, jit=True)
    assert len(traced) == n
    assert _drawing._PROGRAMS == programs
    assert not np.array_equal(first["0"]["kernel"], second["0"]["kernel"])
