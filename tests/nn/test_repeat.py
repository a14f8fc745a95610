"""li.Repeat: scan over stacked params, slice rule bit for bit, conversions, buffers, state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyinit as li

BLOCK = li.Residual([li.LayerNorm(), li.Linear(8), li.nn.gelu_tanh, li.Linear(4)])
X = jnp.linspace(-2.0, 2.0, 24).reshape(6, 4)


def _equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("jit", [False, True])
def test_slice_i_is_the_unrolled_draw_bit_for_bit(jit, key):
    stacked = li.dry_run(li.Repeat(BLOCK, 3), key, X, jit=jit)
    unrolled = li.dry_run(li.Sequential([BLOCK] * 3), key, X)
    assert stacked["layer"]["1"]["kernel"].shape == (3, 4, 8)
    _equal(li.unstack_layers(stacked), unrolled)
    _equal(li.stack_layers(unrolled), stacked)


def test_slice_rule_holds_under_a_parent_path(key):
    class Net(li.Layer):
        blocks: li.Layer

        def __call__(self, params, x):
            return self.blocks(params["blocks"], x)

    stacked = li.dry_run(Net(li.Repeat(BLOCK, 2)), key, X)
    unrolled = li.dry_run(Net(li.Sequential([BLOCK] * 2)), key, X)
    _equal(li.unstack_layers(stacked, at="blocks"), unrolled)
    _equal(li.stack_layers(unrolled, at="blocks"), stacked)


def test_nested_repeat_matches_nested_sequential(key):
    inner = li.Linear(4)
    stacked = li.dry_run(li.Repeat(li.Repeat(inner, 3), 2), key, X)
    unrolled = li.dry_run(li.Sequential([li.Sequential([inner] * 3)] * 2), key, X)
    assert stacked["kernel"].shape == (2, 3, 4, 4)
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(
                stacked["kernel"][i, j], unrolled[str(i)][str(j)]["kernel"]
            )


@pytest.mark.parametrize("remat", [False, True])
def test_calls_equal_the_unrolled_model(remat, key):
    model = li.Repeat(BLOCK, 3, remat=remat)
    unrolled_model = li.Sequential([BLOCK] * 3)
    params = li.dry_run(model, key, X)
    unrolled = li.unstack_layers(params)
    want = unrolled_model(unrolled, X)
    np.testing.assert_allclose(model(params, X), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.jit(model)(params, X), want, rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda p: model(p, X).sum())(params)
    want_grads = jax.grad(lambda p: unrolled_model(p, X).sum())(unrolled)
    for u, v in zip(
        jax.tree.leaves(li.unstack_layers(grads)), jax.tree.leaves(want_grads), strict=True
    ):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


def test_remat_policy_is_accepted(key):
    policy = jax.checkpoint_policies.nothing_saveable
    model = li.Repeat(BLOCK, 2, remat=True, policy=policy)
    params = li.dry_run(model, key, X)
    assert jax.jit(jax.grad(lambda p: model(p, X).sum()))(params)["layer"]["1"]["kernel"].shape == (
        2,
        4,
        8,
    )


def test_block_is_traced_once_for_any_depth(key):
    li.clear_cache()
    shallow = li.trace(li.Repeat(li.Linear(4), 2), X)
    deep = li.trace(li.Repeat(li.Linear(4), 48), X)
    assert len(deep.calls) == len(shallow.calls)
    assert deep.params[("kernel",)].shape == (48, 4, 4)


def test_abstract_dry_run(key):
    params = li.dry_run(li.Repeat(BLOCK, 5), key, jax.ShapeDtypeStruct((6, 4), jnp.float32))
    assert params["layer"]["1"]["kernel"] == jax.ShapeDtypeStruct((5, 4, 8), jnp.float32)


def test_layers_axis_is_declared(key):
    t = li.trace(li.Repeat(li.Linear(4), 3), X)
    assert t.params[("kernel",)].axes[0] == "layers"
    assert li.trace(li.Repeat(li.Linear(4), 3, axis="depth"), X).params[("bias",)].axes == (
        "depth",
        "mlp",
    )


def test_batchnorm_buffers_are_updated_per_copy(key):
    block = li.Sequential([li.Linear(4), li.BatchNorm()])
    model, unrolled_model = li.Repeat(block, 3), li.Sequential([block] * 3)
    params = li.dry_run(model, key, X)
    out, updates = li.apply(model, params, X, train=True, mutable=True)
    want_out, want = li.apply(
        unrolled_model, li.unstack_layers(params), X, train=True, mutable=True
    )
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
    assert updates["1"]["mean"].shape == (3, 4)
    for i in range(3):
        np.testing.assert_allclose(updates["1"]["mean"][i], want[str(i)]["1"]["mean"], rtol=1e-5)
        np.testing.assert_allclose(updates["1"]["var"][i], want[str(i)]["1"]["var"], rtol=1e-5)
    merged = li.merge(params, updates)
    assert not np.allclose(merged["1"]["mean"], params["1"]["mean"])


def test_dropout_key_is_folded_per_copy_as_in_sequential(key):
    block = li.Sequential([li.Linear(4), li.Dropout(0.5)])
    params = li.dry_run(li.Repeat(block, 2), key, X)
    k = jax.random.key(7)
    got = li.Repeat(block, 2)(params, X, train=True, key=k)
    want = li.Sequential([block] * 2)(li.unstack_layers(params), X, train=True, key=k)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_loaded_stacked_state_is_kept(key):
    model = li.Repeat(BLOCK, 3)
    old = li.dry_run(model, jax.random.key(1), X)
    partial = {"layer": {"1": old["layer"]["1"]}}
    params = li.dry_run(model, key, X, state=partial)
    _equal(params["layer"]["1"], old["layer"]["1"])
    fresh = li.dry_run(model, key, X)
    _equal(params["layer"]["0"], fresh["layer"]["0"])


def test_unrolled_checkpoint_loads_into_a_lazy_repeat(key):
    unrolled = li.dry_run(li.Sequential([BLOCK] * 3), jax.random.key(3), X)
    model = li.Repeat(BLOCK, 3)
    state, report = li.load_state(li.lazy_state(model, X), li.stack_layers(unrolled))
    assert "layer/1/kernel" in report.loaded
    params = li.dry_run(model, key, X, state=state)
    _equal(li.unstack_layers(params), unrolled)


def test_wrong_stacked_shape_in_state_is_an_error(key):
    bad = li.dry_run(li.Repeat(BLOCK, 2), key, X)
    with pytest.raises(li.errors.StateMismatchError, match=r"layer/1/kernel"):
        li.dry_run(li.Repeat(BLOCK, 3), key, X, state=bad)


def test_checkpoint_round_trip(tmp_path, key):
    params = li.dry_run(li.Repeat(BLOCK, 2), key, X)
    li.save(tmp_path / "ckpt", params)
    loaded, _ = li.load(tmp_path / "ckpt")
    _equal(loaded, params)


def test_block_that_changes_shape_is_refused(key):
    with pytest.raises(
        li.errors.InferShapeError,
        match=r"maps float32\[6, 4\] to float32\[6, 3\].*must return what it takes",
    ):
        li.dry_run(li.Repeat(li.Linear(3), 2), key, X)


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_bad_count_is_refused(n):
    with pytest.raises(li.errors.InvalidArgumentError, match=r"n must be a positive int"):
        li.Repeat(li.Linear(4), n)


def test_non_layer_block_is_refused():
    with pytest.raises(li.errors.ConfigureLayerError, match=r"li\.Repeat takes a li\.Layer"):
        li.Repeat(jax.nn.relu, 2)


def test_unknown_keyword_is_refused(key):
    with pytest.raises(li.errors.InvalidArgumentError, match=r"'trian'"):
        li.dry_run(li.Repeat(li.Linear(4), 2), key, X, trian=True)


def test_stack_layers_refuses_different_copies():
    with pytest.raises(li.errors.InvalidArgumentError, match=r"copy '1' differs from copy '0'"):
        li.stack_layers({"0": {"w": jnp.zeros(2)}, "1": {"w": jnp.zeros(3)}})
    with pytest.raises(li.errors.InvalidArgumentError, match=r"expected copies named '0', '1'"):
        li.stack_layers({"0": {"w": jnp.zeros(2)}, "2": {"w": jnp.zeros(2)}})


def test_unstack_layers_refuses_unstacked_leaves():
    with pytest.raises(
        li.errors.InvalidArgumentError, match=r"leaves disagree on the stacked axis"
    ):
        li.unstack_layers({"a": jnp.zeros((2, 3)), "b": jnp.zeros((3,))})
    with pytest.raises(li.errors.InvalidArgumentError, match=r"no subtree 'nope'"):
        li.unstack_layers({"a": jnp.zeros((2, 3))}, at="nope")


def test_summary_shows_one_row_for_the_repeated_block():
    model = li.Sequential([li.Repeat(BLOCK, 6), li.Ensemble(li.Linear(2), 3)])
    s = li.summary(model, X)
    rows = [("/".join(r.path), r.layer) for r in s.rows]
    assert [p for p, _ in rows].count("0") == 1
    text = str(s)
    assert "Repeat: Residual x6" in text
    assert "Ensemble: Linear x3" in text
    assert "float32[6,4,8]" in text  # the stacked kernel, counted once
    params = li.dry_run(model, jax.random.key(0), X)
    assert s.total_params == sum(a.size for a in jax.tree.leaves(params))


def test_torch_interop_unstacks_to_per_layer_names():
    torch = pytest.importorskip("torch")
    from lazyinit.interop.torch import from_torch_state_dict, to_torch_state_dict

    block = li.Sequential([li.LayerNorm(), li.Linear(4)])
    model = li.Sequential([li.Linear(4), li.Repeat(block, 3)])
    layers = [torch.nn.Sequential(torch.nn.LayerNorm(4), torch.nn.Linear(4, 4)) for _ in range(3)]
    torch_model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sequential(*layers))
    x = jnp.ones((2, 3))
    params, report = from_torch_state_dict(model, torch_model, x)
    assert params["1"]["1"]["kernel"].shape == (3, 4, 4)
    np.testing.assert_allclose(
        params["1"]["1"]["kernel"][2], torch_model[1][2][1].weight.detach().numpy().T
    )
    want = torch_model(torch.ones(2, 3)).detach().numpy()
    np.testing.assert_allclose(model(params, x), want, rtol=1e-5, atol=1e-5)
    back = to_torch_state_dict(model, params, x)
    assert set(back) == set(torch_model.state_dict())
    for name, value in torch_model.state_dict().items():
        np.testing.assert_array_equal(back[name].numpy(), value.numpy())


def test_slice_rule_holds_in_another_dtype(key):
    stacked = li.dry_run(li.Repeat(BLOCK, 2), key, X, dtype="bfloat16")
    unrolled = li.dry_run(li.Sequential([BLOCK] * 2), key, X, dtype="bfloat16")
    assert stacked["layer"]["1"]["kernel"].dtype == jnp.bfloat16
    _equal(li.unstack_layers(stacked), unrolled)
