"""The bad-input catalogue of docs/reliability.md, one test per row, each message pinned.

Rows 23 (a dimension its mesh axis does not divide) and 24 (hosts disagreeing
on shapes) belong to the sharding work and are tested with it, in
``tests/sharding``. Row 18's crash test proper is ``tests/checkpoint/test_crash.py``.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lazyinit as li


class MLP(li.Layer):
    fc1: li.Layer = li.Linear(4)
    fc2: li.Layer = li.Linear(2)

    def __call__(self, params, x):
        return self.fc2(params["fc2"], jax.nn.relu(self.fc1(params["fc1"], x)))


X = jnp.ones((2, 3))


@pytest.fixture
def params(key):
    return li.dry_run(MLP(), key, X)


def copy(tree):
    return jax.tree.map(lambda a: np.array(a), tree)


def unchanged(before, after):
    return all(
        np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))
    ) and jax.tree.structure(before) == jax.tree.structure(after)


def test_row01_params_used_before_a_dry_run_list_every_uninitialized_path():
    lazy = li.lazy_state(MLP())
    with pytest.raises(
        li.errors.UninitializedParamError,
        match=r"MLP was called with uninitialized parameters: fc1/kernel, fc1/bias, fc2/kernel, "
        r"fc2/bias\. Run li\.dry_run\(model, key, sample\) \(or load a state\) first",
    ):
        MLP()(lazy, X)
    with pytest.raises(
        li.errors.UninitializedParamError, match=r"placeholder with no value yet\. Run li"
    ):
        optax.adam(1e-3).init(lazy)


def test_row02_shape_depending_on_input_values_names_the_layer_and_keeps_the_cause(key):
    class ByValue(li.Layer):
        def specs(self, x):
            return {"w": li.Param((int(x.sum()),), jax.nn.initializers.zeros)}

        def __call__(self, params, x):
            return x

    model = li.Sequential([li.Linear(3), ByValue()])
    with pytest.raises(
        li.errors.InferShapeError,
        match=r"ByValue at '1': a shape depends on the values of the input\. Parameter and "
        r"output shapes may depend only on input shapes and dtypes",
    ) as e:
        li.dry_run(model, key, X)
    assert isinstance(e.value.__cause__, jax.errors.ConcretizationTypeError)


def test_row03_sample_of_the_wrong_rank_names_the_layer_path_and_shape(key):
    model = li.Sequential([li.nn.relu, li.Linear(4)])
    with pytest.raises(
        li.errors.InferShapeError,
        match=r"Linear at '1': Linear expects inputs with at least 1 dimension\(s\) "
        r"\(\.\.\., in_features\), got shape \(\)\.",
    ):
        li.dry_run(model, key, jnp.float32(1.0))


def test_row04_later_dry_run_never_overwrites_a_disagreeing_leaf(key, params):
    before = copy(params)
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"size mismatch for 'fc1/kernel': found shape \(3, 4\), expected \(5, 4\)",
    ):
        li.dry_run(MLP(), key, jnp.ones((2, 5)), state=params)
    assert unchanged(before, params)


def test_row05_the_same_dry_run_repeated_is_bitwise_identical(key, params):
    again = li.dry_run(MLP(), key, X)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_row06_only_the_batch_size_changes_params_unchanged_no_new_initialization(key):
    traced = []

    def counting_init(k, shape, dtype):
        traced.append(shape)
        return jax.random.normal(k, shape, dtype)

    model = li.Linear(4, kernel_init=counting_init)
    first = li.dry_run(model, key, jnp.ones((2, 3)))
    n = len(traced)
    second = li.dry_run(model, key, jnp.ones((7, 3)))
    assert len(traced) == n  # the initializer was not traced again: the compiled draw is reused
    assert unchanged(first, second)


def test_row07_two_layers_declaring_the_same_path_are_named(key):
    class Clash(li.Layer):
        a: li.Layer = li.Linear(4)
        b: li.Layer = li.Linear(5)

        def __call__(self, params, x):
            return self.a(params["shared"], x), self.b(params["shared"], x)

    with pytest.raises(
        li.errors.DuplicateParamError,
        match=r"Parameter 'shared/kernel' is declared twice: by Linear \(\(3, 4\)\) and by "
        r"Linear \(\(3, 5\)\)\. Give each layer its own key",
    ):
        li.dry_run(Clash(), key, X)


def test_row08_path_collisions_and_illegal_names_are_rejected_early(params, tmp_path):
    lazy = li.lazy_state(MLP())
    with pytest.raises(
        li.errors.InvalidTreeError,
        match=r"key 'fc1/kernel' under '<root>': names must be non-empty strings without '/'",
    ):
        li.load_state(lazy, {"fc1/kernel": params["fc1"]["kernel"]})
    with pytest.raises(
        li.errors.InvalidTreeError, match=r"key '' under 'fc1'.*\n.*key 3 under 'fc1'"
    ):
        li.load_state(lazy, {"fc1": {"": jnp.ones(1), 3: jnp.ones(1)}})
    with pytest.raises(li.errors.InvalidTreeError, match=r"key 'a/b' under '<root>'"):
        li.save(tmp_path / "c.safetensors", {"a/b": jnp.ones(1), "a": {"b": jnp.ones(1)}})

    class SlashName(li.Layer):
        def __call__(self, params, x):
            return x * params["a/b"]

    with pytest.raises(
        li.errors.InferShapeError,
        match=r"params\['a/b'\] under '<root>': parameter and layer names must be non-empty "
        r"strings without '/'",
    ):
        li.dry_run(SlashName(), jax.random.key(0), X)

    class SlashSpec(li.Layer):
        def specs(self, x):
            return {"a/b": li.Param((1,), jax.nn.initializers.zeros)}

        def __call__(self, params, x):
            return x

    with pytest.raises(
        li.errors.InvalidSpecError,
        match=r"parameter name 'a/b' must be a non-empty string without '/'",
    ):
        li.dry_run(SlashSpec(), jax.random.key(0), X)


def test_row09_initializer_returning_the_wrong_shape_or_dtype_is_named(key):
    def bad_init(k, shape, dtype):
        return jnp.zeros(shape[::-1], jnp.float16)

    with pytest.raises(
        li.errors.InitializerError,
        match=r"For parameter 'fc1/kernel': initializer bad_init returned float16\[4, 3\], but "
        r"the spec declares float32\[3, 4\]\. Fix the initializer",
    ):
        li.dry_run(MLP(fc1=li.Linear(4, kernel_init=bad_init)), key, X)


def test_row10_strict_load_lists_all_missing_paths_with_a_near_miss_hint(params):
    incoming = {
        "fc1": {"weight": params["fc1"]["kernel"], "bias": params["fc1"]["bias"]},
        "fc2": {},
    }
    with pytest.raises(
        li.errors.StateMismatchError, match=r"Cannot load the state \(4 problems\)"
    ) as e:
        li.load_state(li.lazy_state(MLP()), incoming)
    assert "missing key 'fc1/kernel' (did you mean 'fc1/weight'?)" in e.value.problems
    assert "missing key 'fc2/kernel'" in "\n".join(e.value.problems)
    assert "missing key 'fc2/bias'" in "\n".join(e.value.problems)


def test_row11_unexpected_paths_strict_error_non_strict_report(params):
    incoming = {**params, "head": {"kernel": jnp.ones((2, 2))}}
    with pytest.raises(li.errors.StateMismatchError, match=r"unexpected key 'head/kernel'"):
        li.load_state(li.lazy_state(MLP()), incoming)
    state, report = li.load_state(li.lazy_state(MLP()), incoming, strict=False)
    assert report.unexpected == ("head/kernel",)
    assert report.loaded == ("fc1/bias", "fc1/kernel", "fc2/bias", "fc2/kernel")
    assert "head" not in state


def test_row12_shape_mismatches_all_at_once_with_a_transpose_hint(params):
    torch_layout = jax.tree.map(lambda a: a.T if a.ndim == 2 else a, params)
    with pytest.raises(
        li.errors.StateMismatchError, match=r"Cannot load the state \(2 problems\)"
    ) as e:
        li.load_state(params, torch_layout)
    assert e.value.problems[0] == (
        "size mismatch for 'fc1/kernel': found shape (4, 3), expected (3, 4) (the transpose: "
        "PyTorch stores Linear weights as (out, in); lazyinit kernels are (in, out). Convert with "
        "lazyinit.interop.torch or transpose it.)"
    )
    assert e.value.problems[1].startswith("size mismatch for 'fc2/kernel'")


def test_row13_dtype_mismatch_is_an_error_unless_cast_which_reports(params):
    bf16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"dtype mismatch for 'fc1/bias': found bfloat16, expected float32 \(pass cast=True",
    ):
        li.load_state(li.lazy_state(MLP()), bf16)
    state, report = li.load_state(li.lazy_state(MLP()), bf16, cast=True)
    assert report.cast == ("fc1/bias", "fc1/kernel", "fc2/bias", "fc2/kernel")
    assert {a.dtype for a in jax.tree.leaves(state)} == {jnp.dtype("float32")}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"fc1": {"kernel": "zeros"}}, r"'fc1/kernel': expected an array, got str"),
        ({"fc1": {"kernel": None}}, r"'fc1/kernel': expected an array, got NoneType"),
        ({"fc1": {"kernel": [1.0, 2.0]}}, r"'fc1/kernel': expected an array, got list"),
        ([jnp.ones(2)], r"must be a mapping of names to arrays or sub-mappings, got list"),
    ],
)
def test_row14_non_array_leaf_or_non_mapping_top_is_a_type_error(bad, message, tmp_path):
    with pytest.raises(li.errors.InvalidTreeError, match=message) as e:
        li.load_state(li.lazy_state(MLP()), bad)
    assert isinstance(e.value, TypeError)
    with pytest.raises(li.errors.InvalidTreeError, match=message):
        li.save(tmp_path / "t.safetensors", bad)


def test_row15_a_load_failing_halfway_changes_nothing_and_returns_nothing(params, tmp_path):
    lazy = li.lazy_state(MLP())
    incoming = copy(params)
    incoming["fc2"]["kernel"] = np.zeros((4, 9), np.float32)  # the last leaf mismatches
    before_lazy, before_incoming = dict(lazy), copy(incoming)
    with pytest.raises(li.errors.StateMismatchError, match=r"size mismatch for 'fc2/kernel'"):
        li.load_state(lazy, incoming)
    assert lazy == before_lazy and unchanged(before_incoming, incoming)
    li.save(tmp_path / "p.safetensors", incoming)
    with pytest.raises(li.errors.StateMismatchError, match=r"nothing was changed"):
        li.load(tmp_path / "p.safetensors", like=params)


def test_row16_load_into_a_model_never_dry_run_then_dry_run_keeps_it(params):
    state, report = li.load_state(li.lazy_state(MLP()), params)
    assert not li.has_uninitialized(state)
    again = li.dry_run(MLP(), jax.random.key(123), jnp.ones((8, 3)), state=state)
    assert unchanged(params, again)


def test_row17_partial_load_then_dry_run_initializes_only_the_rest(params):
    state, _ = li.load_state(li.lazy_state(MLP()), {"fc1": params["fc1"]}, strict=False)
    out, report = li.dry_run_with_report(MLP(), jax.random.key(5), X, state=state, strict=False)
    assert unchanged(params["fc1"], out["fc1"])
    assert report.kept == ("fc1/bias", "fc1/kernel")
    assert report.initialized == ("fc2/bias", "fc2/kernel")


def test_row18_a_save_failing_midway_leaves_the_previous_checkpoint(params, tmp_path, monkeypatch):
    path = tmp_path / "p.safetensors"
    li.save(path, params)

    def power_cut(fd):
        raise OSError("simulated crash during fsync")

    monkeypatch.setattr(os, "fsync", power_cut)
    with pytest.raises(OSError, match="simulated crash"):
        li.save(path, {"other": jnp.ones(3)}, overwrite=True)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["p.safetensors"]
    assert unchanged(params, li.load(path)[0])
    (tmp_path / ".p.safetensors.x1y2.tmp").write_bytes(b"\0" * 10)  # what SIGKILL leaves
    assert unchanged(params, li.load(path)[0])


def test_row19_truncated_corrupt_or_foreign_file_is_a_format_error(params, tmp_path):
    path = tmp_path / "p.safetensors"
    li.save(path, params)
    raw = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.safetensors").write_bytes(b"hello, world")
    with pytest.raises(
        li.errors.ReadCheckpointError, match=r"cut\.safetensors' is not a valid lazyinit"
    ):
        li.load(tmp_path / "cut.safetensors")
    with pytest.raises(
        li.errors.ReadCheckpointError, match=r"text\.safetensors' is not a valid lazyinit"
    ):
        li.load(tmp_path / "text.safetensors")


def test_row20_pickle_based_files_are_refused(tmp_path):
    import pickle

    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"w": np.ones(2)}))
    with pytest.raises(
        li.errors.ReadPickleError,
        match=r"lazyinit never unpickles.*Convert it once, in a trusted environment",
    ):
        li.load(tmp_path / "model.pkl")


def test_row21_save_over_an_existing_file_is_refused_unless_asked(params, tmp_path):
    li.save(tmp_path / "p.safetensors", params)
    with pytest.raises(
        li.errors.OverwriteCheckpointError, match=r"already exists; .*overwrite=True"
    ):
        li.save(tmp_path / "p.safetensors", params)
    li.save(tmp_path / "p.safetensors", params, overwrite=True)


def test_row22_a_newer_format_version_is_a_version_error(params, tmp_path):
    import safetensors.numpy

    path = tmp_path / "p.safetensors"
    li.save(path, params)
    with safetensors.safe_open(path, framework="np") as f:
        meta = {**f.metadata(), "format_version": "7"}
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    path.write_bytes(safetensors.numpy.save(arrays, metadata=meta))
    with pytest.raises(li.errors.ReadVersionError, match=r"format version 7: .*Upgrade lazyinit"):
        li.load(path)


def test_row25_a_deleted_or_donated_array_used_as_a_parameter_is_named(key, tmp_path):
    stale = li.dry_run(MLP(), key, X)
    jax.jit(lambda p: p, donate_argnums=0)(stale["fc2"])  # stale["fc2"]'s arrays are now deleted
    message = (
        r"holds deleted arrays: 'fc2/kernel', 'fc2/bias'\. They were donated to a jit-compiled"
    )
    with pytest.raises(li.errors.DeletedParamError, match=r"The params given to MLP " + message):
        MLP()(stale, X)
    with pytest.raises(li.errors.DeletedParamError, match=r"The state " + message):
        li.dry_run(MLP(), key, X, state=stale)
    with pytest.raises(li.errors.DeletedParamError, match=r"The incoming state " + message):
        li.load_state(li.lazy_state(MLP()), stale)
    with pytest.raises(li.errors.DeletedParamError, match=r"The tree to save " + message):
        li.save(tmp_path / "p.safetensors", stale)
