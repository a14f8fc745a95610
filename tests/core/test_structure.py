"""One source of truth: the trace gives a model's structure, whatever style it is written in;
without a sample the structure is derived from what the layers declare, and where the two
would disagree the model is refused with the way to write it."""

import dataclasses
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from seed_models import LazyMLP
from style_models import STYLES, Fields, styles

import lazyinit as li
from lazyinit.interop.torch import from_torch_state_dict

X = jnp.ones((4, 3))


class Renamed(li.Layer):
    """A field child reached under another key than its field name."""

    fc: li.Layer = li.Linear(5)

    def __call__(self, params, x):
        return self.fc(params["enc"], x)


def _shapes(tree):
    return jax.tree.map(lambda a: (tuple(a.shape), np.dtype(a.dtype).name), tree)


@pytest.fixture(autouse=True)
def _fresh_cache():
    li.clear_cache()  # "no cached trace" must mean what it says in every test
    yield


# 1. Structure from the trace, in every style. ------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_lazy_state_without_a_sample_is_never_empty(style):
    model = styles()[style]
    state = li.lazy_state(model)
    assert state != {}
    assert li.has_uninitialized(state)


def test_a_compact_model_is_one_placeholder_of_unknown_structure():
    state = li.lazy_state(styles()["inline"])
    assert isinstance(state, li.Uninitialized) and state.shape is None
    assert li.uninitialized_paths(state) == ["<root>"]


@pytest.mark.parametrize("style", STYLES)
def test_lazy_state_with_a_sample_has_exactly_the_dry_runs_paths(style, key):
    model = styles()[style]
    lazy = li.lazy_state(model, X)
    params = li.dry_run(model, key, X)
    assert jax.tree.structure(
        jax.tree.map(lambda u: 0, lazy, is_leaf=lambda x: isinstance(x, li.Uninitialized))
    ) == jax.tree.structure(jax.tree.map(lambda a: 0, params))
    flat_lazy = jax.tree.leaves(lazy, is_leaf=lambda x: isinstance(x, li.Uninitialized))
    assert [u.shape for u in flat_lazy] == [a.shape for a in jax.tree.leaves(params)]
    assert all(None not in u.shape for u in flat_lazy)


@pytest.mark.parametrize("style", STYLES)
def test_load_state_into_the_lazy_state_takes_every_real_key(style, key):
    model = styles()[style]
    params = li.dry_run(model, key, X)
    for lazy in (li.lazy_state(model, X), li.lazy_state(model)):
        loaded, report = li.load_state(lazy, params)
        assert not li.has_uninitialized(loaded)
        assert report.unexpected == () and report.missing == ()
        assert _shapes(loaded) == _shapes(params)


@pytest.mark.parametrize("style", ["fields", "wrapper"])
def test_partition_without_a_sample_reads_the_declarations(style, key):
    model = styles()[style]
    params = li.dry_run(model, key, X)
    trainable, buffers = li.partition(model, params)
    assert sorted(buffers["norm"]) == ["count", "mean", "var"]
    assert sorted(trainable["norm"]) == ["bias", "scale"]
    assert li.partition(model, params) == li.partition(model, params, X)


def test_partition_without_a_sample_refuses_a_model_it_cannot_know(key):
    model = styles()["inline"]
    params = li.dry_run(model, key, X)  # a trace is cached now: it must not be used
    with pytest.raises(
        li.errors.InferShapeError,
        match=r"li.partition needs the structure of Inline at '<root>'.*Pass a sample",
    ):
        li.partition(model, params)
    assert sorted(li.partition(model, params, X)[1]["norm"]) == ["count", "mean", "var"]


def test_summary_needs_a_sample_and_describe_reads_the_declarations(key):
    model = styles()["fields"]
    li.dry_run(model, key, X)  # a trace is cached now: it must not be used
    with pytest.raises(li.errors.InferShapeError, match=r"li.summary shows each layer call"):
        li.summary(model)
    described = str(li.describe(model))
    assert "Linear(in_features=?, out_features=16)" in described
    assert "Linear(in_features=3, out_features=16)" in str(li.describe(model, X))


def test_a_field_reached_under_another_key_is_refused_with_the_fix(key):
    with pytest.raises(
        li.errors.DeriveStructureError,
        match=r"field 'fc' of Renamed at '<root>' \(Linear\) was called with the params at "
        r"'enc', not at 'fc': call it with params\['fc'\]",
    ):
        li.dry_run(Renamed(), key, X)


class Shares(li.Layer):
    """A wrapper that hands its whole params to its child without saying so."""

    inner: li.Layer = li.Linear(4)

    def __call__(self, params, x):
        return self.inner(params, x + 1)


def test_a_wrapper_passing_its_whole_params_is_refused_unless_it_says_so(key):
    message = (
        r"field 'inner' of Shares at '<root>' \(Linear\) was called with the params at "
        r"'<root>', not at 'inner'(.|\n)*def children\(self\): return \{'': self.inner\}"
    )
    with pytest.raises(li.errors.DeriveStructureError, match=message):
        li.dry_run(Shares(), key, X)
    with pytest.raises(li.errors.DeriveStructureError, match=message):
        li.lazy_state(Shares(), X)

    class Declared(Shares):
        def children(self):
            return {"": self.inner}

    params = li.dry_run(Declared(), key, X)
    derived = li.lazy_state(Declared())
    assert sorted(params) == sorted(derived) == ["bias", "kernel"]
    assert derived["kernel"].shape == (None, 4)


# 2. Calls are checked against the specs. -------------------------------------------------------


def test_a_call_with_another_models_params_is_refused_eagerly_and_under_jit(key):
    params = li.dry_run(LazyMLP(), key, jnp.ones((4, 6)))
    wider = LazyMLP(fc1=li.Linear(20))
    message = r"size mismatch for 'fc1/kernel': found shape \(6, 10\), expected \(6, 20\)"
    with pytest.raises(li.errors.StateMismatchError, match=message):
        wider(params, jnp.ones((4, 6)))
    with pytest.raises(li.errors.StateMismatchError, match=message):
        jax.jit(wider)(params, jnp.ones((4, 6)))


@pytest.mark.parametrize("style", STYLES)
def test_a_call_with_missing_or_extra_params_is_refused(style, key):
    model = styles()[style]
    params = li.dry_run(model, key, X)
    fewer = {k: v for k, v in params.items() if k != "head"}
    with pytest.raises(li.errors.StateMismatchError, match=r"missing key 'head/kernel'"):
        model(fewer, X)
    with pytest.raises(
        li.errors.StateMismatchError, match=r"missing key 'head/kernel'(.|\n)*unexpected key 'hd/w'"
    ):
        model({**fewer, "hd": {"w": jnp.ones(3)}}, X)  # a misname: both are listed
    out = model({**params, "extra": {"w": jnp.ones(3)}}, X)  # extra params alone are fine
    np.testing.assert_array_equal(out, model(params, X))


class Steps(li.Layer):
    """A layer with an int32 buffer (a step counter), the case a floating ``dtype=`` must not touch."""

    def specs(self, x):
        return {"steps": li.Param((), li.initializers.zeros, dtype=jnp.int32, trainable=False)}

    def __call__(self, params, x):
        return x * params["steps"].astype(x.dtype)


def test_a_call_with_an_integer_buffer_of_another_dtype_is_refused(key):
    model = Steps()
    params = li.dry_run(model, key, X)
    bad = {**params, "steps": params["steps"].astype(jnp.float32)}
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"dtype mismatch for 'steps': found float32, expected int32",
    ):
        model(bad, X)


def test_a_checked_call_gives_the_same_output_as_before(key):
    params = li.dry_run(LazyMLP(), key, X)
    by_hand = jax.nn.relu(
        jax.nn.relu(X @ params["fc1"]["kernel"] + params["fc1"]["bias"][None])
        @ params["fc2"]["kernel"]
        + params["fc2"]["bias"][None]
    )
    np.testing.assert_allclose(LazyMLP()(params, X), by_hand, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(LazyMLP())(params, X), by_hand, rtol=1e-6)


# 3-4. Holes and numpy leaves in a state. ----------------------------------------------------------


def test_a_shape_dtype_struct_in_a_concrete_state_is_a_hole_that_gets_drawn(key):
    abstract = li.dry_run(LazyMLP(), key, jax.ShapeDtypeStruct((4, 3), jnp.float32))
    params = li.dry_run(LazyMLP(), key, X, state=abstract)
    assert all(isinstance(a, jax.Array) for a in jax.tree.leaves(params))
    assert not li.has_uninitialized(params)
    assert _shapes(params) == _shapes(li.dry_run(LazyMLP(), key, X))
    again = li.dry_run(LazyMLP(), key, jax.ShapeDtypeStruct((4, 3), jnp.float32), state=abstract)
    assert all(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree.leaves(again))


def test_numpy_leaves_are_copied_by_dry_run_and_load_state(key):
    state = jax.tree.map(np.array, li.dry_run(LazyMLP(), key, X))
    params = li.dry_run(LazyMLP(), key, X, state=state)
    loaded, _ = li.load_state(li.lazy_state(LazyMLP()), state)
    before = np.array(state["fc1"]["kernel"])
    state["fc1"]["kernel"][...] = 7.0  # the caller edits its own array afterwards
    for tree in (params, loaded):
        assert isinstance(tree["fc1"]["kernel"], jax.Array)
        np.testing.assert_array_equal(tree["fc1"]["kernel"], before)


# 5. summary counts as the dry run materializes, and takes a root placeholder. --------------------


def test_summary_counts_an_int_buffer_as_int_whatever_dtype_is_asked(key):
    model = Steps()
    s = li.summary(model, X, dtype="bfloat16")
    params = li.dry_run(model, key, X, dtype="bfloat16")
    assert s.params[("steps",)].dtype == np.dtype(params["steps"].dtype) == np.dtype("int32")
    assert s.total_bytes == sum(a.nbytes for a in jax.tree.leaves(params))


def test_summary_takes_a_root_placeholder_like_the_other_entry_points(key):
    model = li.Conv(8, 3)
    x = jnp.ones((1, 6, 6, 2))
    lazy = li.lazy_state(model)
    assert isinstance(lazy, li.Uninitialized) and lazy.shape is None
    s = li.summary(model, x, params=lazy)
    assert {i.status for i in s.params.values()} == {"uninitialized"}
    li.load_state(lazy, li.dry_run(model, key, x))  # the other entry points accept it too
    li.dry_run(model, key, x, state=lazy)


# 6. One return type per function. ---------------------------------------------------------------


def test_dry_run_returns_params_and_dry_run_with_report_a_pair_whatever_the_flags(key):
    assert isinstance(li.dry_run(LazyMLP(), key, X), dict)
    for strict in (True, False):
        params, report = li.dry_run_with_report(LazyMLP(), key, X, strict=strict)
        assert isinstance(params, dict) and isinstance(report, li.Report)
    assert "strict" not in li.dry_run.__code__.co_varnames


def test_loads_and_converters_always_return_tree_and_report(key, tmp_path):
    params = li.dry_run(LazyMLP(), key, X)
    li.save(tmp_path / "p.safetensors", params)
    torch_mlp = torch.nn.Module()
    torch_mlp.fc1, torch_mlp.fc2 = torch.nn.Linear(3, 10), torch.nn.Linear(10, 1)
    for strict in (True, False):
        for cast in (True, False):
            tree, report = li.load(tmp_path / "p.safetensors", strict=strict, cast=cast)
            assert isinstance(tree, dict) and isinstance(report, li.Report)
            tree, report = li.load_state(li.lazy_state(LazyMLP()), params, strict=strict, cast=cast)
            assert isinstance(tree, dict) and isinstance(report, li.Report)
        tree, report = from_torch_state_dict(LazyMLP(), torch_mlp, X, strict=strict)
        assert isinstance(tree, dict) and isinstance(report, li.Report)


# 7. The key is checked first. --------------------------------------------------------------------


@pytest.mark.parametrize("call", ["missing", "swapped"])
def test_a_sample_where_the_key_belongs_says_so_before_tracing(call, key):
    args = (X,) if call == "missing" else (X, key)
    with pytest.raises(li.errors.LazyInitError, match=r"key") as info:
        li.dry_run(LazyMLP(), *args)
    assert "li.dry_run(model, jax.random.key(0)" in str(info.value)
    assert "shape" not in type(info.value).__name__.lower()


# 8. A PyTorch state dict into a lazy model without a sample (the seed's flow). ---------------


def test_torch_state_dict_loads_into_a_lazy_model_without_a_sample(key):
    torch.manual_seed(0)
    full = torch.nn.Module()
    full.fc1, full.fc2 = torch.nn.Linear(6, 10), torch.nn.Linear(10, 1)
    params, report = from_torch_state_dict(LazyMLP(), full.state_dict())
    assert params["fc1"]["kernel"].shape == (6, 10)
    loaded, _ = li.load_state(li.lazy_state(LazyMLP()), params)
    kept = li.dry_run(LazyMLP(), key, jnp.ones((2, 6)), state=loaded)
    np.testing.assert_array_equal(kept["fc1"]["kernel"], full.fc1.weight.detach().numpy().T)


def test_torch_state_dict_into_a_compact_model_without_a_sample_asks_for_one():
    torch_model = torch.nn.Linear(3, 16)
    with pytest.raises(
        li.errors.InferShapeError,
        match=r"Without a sample, lazyinit cannot know the parameter paths of Inline at "
        r"'<root>'.*from_torch_state_dict\(model, state, x\)",
    ):
        from_torch_state_dict(styles()["inline"], torch_model.state_dict())


# 9. Placeholders are never arrays. ---------------------------------------------------------------


@pytest.mark.parametrize("like", [jnp.zeros_like, jnp.empty_like, jnp.ones_like])
@pytest.mark.parametrize("sample", [(), (X,)])
def test_array_constructors_refuse_a_placeholder(like, sample):
    placeholder = li.lazy_state(li.Linear(3), *sample)["kernel"]
    with pytest.raises(li.errors.UninitializedParamError, match=r"at 'kernel' is a placeholder"):
        like(placeholder)


# The rules are written once: every entry point gives the same words. -------------------------


def test_load_state_and_dry_run_word_a_size_mismatch_alike(key):
    params = li.dry_run(LazyMLP(), key, jnp.ones((4, 5)))
    with pytest.raises(li.errors.StateMismatchError) as by_load:
        li.load_state(li.lazy_state(LazyMLP(), X), params)
    with pytest.raises(li.errors.StateMismatchError) as by_dry_run:
        li.dry_run(LazyMLP(), key, X, state=params)
    line = "size mismatch for 'fc1/kernel': found shape (5, 10), expected (3, 10)"
    assert by_load.value.problems[0] == by_dry_run.value.problems[0] == line


def test_fields_style_lazy_state_is_derived_with_unknown_dims():
    assert li.lazy_state(Fields())["body"]["kernel"] == li.Uninitialized((None, 16), "float32")


# Found in review: each of these went wrong in a first version of the change. -------------------


def test_params_a_dry_run_made_in_bfloat16_pass_the_call_check(key):
    class Scale(li.Layer):
        def specs(self, x):
            return {"scale": li.Param((x.shape[-1],), jax.nn.initializers.ones, "float32")}

        def __call__(self, params, x):
            return x * params["scale"][None]

    params = li.dry_run(Scale(), key, X, dtype="bfloat16")
    assert Scale()(params, X).dtype == jnp.float32
    halved = jax.tree.map(lambda a: a.astype(jnp.bfloat16), li.dry_run(LazyMLP(), key, X))
    assert LazyMLP()(halved, X.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_a_float_placeholder_does_not_turn_an_int_buffer_into_a_float(key):
    model = Steps()
    params = li.dry_run(model, key, X, state={"steps": li.Uninitialized((), "float32")})
    assert params["steps"].dtype == jnp.int32
    model(params, X)


def test_kept_numpy_leaves_are_copied_too(key):
    current = jax.tree.map(np.array, li.dry_run(LazyMLP(), key, X))
    merged, report = li.load_state(current, {"fc1": current["fc1"]}, strict=False)
    assert report.missing == ("fc2/bias", "fc2/kernel")
    assert isinstance(merged["fc2"]["kernel"], jax.Array)
    assert merged["fc2"]["kernel"] is not current["fc2"]["kernel"]


def test_two_placeholders_meeting_keep_what_both_know():
    merged, _ = li.load_state(li.lazy_state(LazyMLP()), li.lazy_state(LazyMLP(), X))
    assert merged["fc1"]["kernel"].shape == (3, 10)


def test_specs_that_branch_on_an_unknown_dim_are_unknown_without_a_sample(key):
    class Projected(li.Layer):
        features: int = 3

        def specs(self, x):
            if x.shape[-1] != self.features:
                return {"proj": li.Param((x.shape[-1], self.features), jax.nn.initializers.zeros)}
            return {}

        def __call__(self, params, x):
            return x @ params["proj"] if x.shape[-1] != self.features else x

    state = li.lazy_state(Projected())
    assert isinstance(state, li.Uninitialized) and state.shape is None
    assert li.lazy_state(Projected(), X) == {}


def test_a_field_holding_a_dict_of_layers_is_unknown_without_a_sample():
    class Heads(li.Layer):
        heads: tuple = (("a", li.Linear(2)),)

        def __call__(self, params, x):
            return {k: h(params[k], x) for k, h in self.heads}

    class Named(li.Layer):
        heads: dict = dataclasses.field(default_factory=lambda: {"a": li.Linear(2)})

        def __hash__(self):
            return 0

        def __call__(self, params, x):
            return {k: h(params[k], x) for k, h in self.heads.items()}

    for model in (Heads(), Named()):
        assert li.has_uninitialized(li.lazy_state(model))
        assert sorted(li.lazy_state(model, X)) == ["a"]


def test_the_record_of_checked_calls_is_not_pickled(key):
    model = LazyMLP()
    model(li.dry_run(model, key, X), X)
    assert pickle.loads(pickle.dumps(model)) == model
    assert "_lazyinit_checked" not in vars(pickle.loads(pickle.dumps(model)))


def test_a_child_built_inside_call_beside_field_children_is_refused_until_declared(key):
    class Mixed(li.Layer):  # a field child, and a child built inside __call__
        head: li.Layer = li.Linear(2)

        def __call__(self, params, x):
            return self.head(params["head"], li.Linear(4)(params["proj"], x))

    with pytest.raises(
        li.errors.DeriveStructureError,
        match=r"the parameters 'proj/kernel', 'proj/bias' are not where the layers' fields",
    ):
        li.dry_run(Mixed(), key, X)

    class Declared(Mixed):
        def children(self):
            return {"proj": li.Linear(4), "head": self.head}

    torch_model = torch.nn.Module()
    torch_model.proj, torch_model.head = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    without, _ = from_torch_state_dict(Declared(), torch_model.state_dict())
    with_sample, report = from_torch_state_dict(Declared(), torch_model.state_dict(), X)
    assert _shapes(without) == _shapes(with_sample) and report.unexpected == ()
