"""The declarative rules of real checkpoints: packed tensors, rotary layouts, tied weights,
prefixes; and the near-miss hints that pair the right keys."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from interop_models import LazyMLP, TorchLazyMLP

import lazyinit as li
from lazyinit.interop import fused, linear, reshape, rotary
from lazyinit.interop.torch import from_torch_state_dict, to_torch_state_dict
from lazyinit.nn._attention import rotary as apply_rotary


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _np(t):
    return t.detach().numpy()


# ---------------------------------------------------------------------------
# The rule values.


def test_fused_splits_a_packed_entry_and_merges_it_back():
    rule = fused("qkv.weight", [linear("q/kernel"), linear("k/kernel"), linear("v/kernel")])
    w = jnp.arange(24.0 * 4).reshape(24, 4)  # (3 * 8, in): q rows, then k, then v
    q, k, v = rule.to_lazy(w)
    np.testing.assert_array_equal(k, w[8:16].T)
    np.testing.assert_array_equal(rule.to_other(q, k, v)[0], w)
    assert rule.lazy == (("q", "kernel"), ("k", "kernel"), ("v", "kernel"))


def test_fused_with_sizes_splits_unequal_parts():
    """Grouped-query attention packs fewer key and value rows than query rows."""
    rule = fused("qkv.weight", [linear("q"), linear("k"), linear("v")], sizes=(8, 4, 4))
    w = jnp.arange(16.0 * 3).reshape(16, 3)
    q, k, v = rule.to_lazy(w)
    assert (q.shape, k.shape, v.shape) == ((3, 8), (3, 4), (3, 4))
    np.testing.assert_array_equal(rule.to_other(q, k, v)[0], w)


def test_linear_and_reshape_split_heads_both_ways():
    kernel = linear("kernel", "weight", layout="conv1d", out_shape=(2, -1))
    w = jnp.arange(24.0).reshape(3, 8)  # (in, heads * head_dim)
    (k,) = kernel.to_lazy(w)
    assert k.shape == (3, 2, 4)
    np.testing.assert_array_equal(kernel.to_other(k)[0], w)
    out = linear("kernel", "weight", in_shape=(2, -1))  # (heads, head_dim, out) <- (out, in)
    (o,) = out.to_lazy(jnp.ones((5, 8)))
    assert o.shape == (2, 4, 5)
    assert reshape("bias", "b", (2, -1)).to_other(jnp.ones((2, 4)))[0].shape == (8,)


def test_a_rule_with_an_unknown_layout_is_refused():
    with pytest.raises(li.errors.InvalidArgumentError, match=r"layout='lienar' is not a layout"):
        linear("kernel", layout="lienar")
    with pytest.raises(li.errors.InvalidArgumentError, match=r"not a rotary layout"):
        rotary(linear("kernel"), 4, layout="meta")


def _interleaved_rope(q, base=10000.0):
    """RoPE pairing features 2j and 2j + 1 (Meta's LLaMA, GPT-J): (T, H, D)."""
    t, _, d = q.shape
    angles = np.arange(t)[:, None] * base ** (-np.arange(0, d, 2) / d)[None, :]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    a, b = q[..., 0::2], q[..., 1::2]
    out = np.empty_like(q)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, b * cos + a * sin
    return out


@pytest.mark.parametrize("permuted", [True, False])
def test_rotary_turns_interleaved_rows_into_lazyinits_half_split_rope(permuted):
    """Attention scores of interleaved RoPE on the original rows equal lazyinit's RoPE on the
    converted kernel (and differ without the permutation)."""
    heads, head_dim, width, length = 2, 8, 6, 5
    wq, wk = (np.random.default_rng(i).normal(size=(heads * head_dim, width)) for i in (0, 1))
    x = np.random.default_rng(2).normal(size=(length, width))

    def scores(q, k):
        return np.einsum("qhd,khd->hqk", q, k)

    def proj(w):
        return (x @ w.T).reshape(length, heads, head_dim)

    expected = scores(_interleaved_rope(proj(wq)), _interleaved_rope(proj(wk)))
    rule = linear("kernel", "weight", out_shape=(heads, -1))
    if permuted:
        rule = rotary(rule, head_dim)

    def lazy(w):
        (kernel,) = rule.to_lazy(jnp.asarray(w, jnp.float32))
        return np.asarray(
            apply_rotary(jnp.einsum("tf,fhd->thd", x.astype(np.float32), kernel), 1e4)
        )

    got = scores(lazy(wq), lazy(wk))
    if permuted:
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
        (kernel,) = rule.to_lazy(jnp.asarray(wq, jnp.float32))
        np.testing.assert_allclose(rule.to_other(kernel)[0], wq, rtol=1e-6)
    else:
        assert not np.allclose(got, expected, atol=1e-3)


# ---------------------------------------------------------------------------
# Tied weights.


class TorchTiedLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight  # tied: one tensor, two names

    def forward(self, ids):
        return self.head(self.emb(ids))


class TiedLM(li.Layer):
    emb: li.Layer = li.Embedding(10, 4)

    def __call__(self, params, ids):
        return self.emb.attend(params["emb"], self.emb(params["emb"], ids))


IDS = jnp.asarray([[1, 2, 3], [9, 0, 4]], jnp.int32)


def test_ties_are_found_in_a_module_checked_and_all_written_back():
    torch_lm = TorchTiedLM()
    params, report = from_torch_state_dict(TiedLM(), torch_lm, IDS)
    assert report.tied == ("head.weight",)
    assert report.loaded == ("emb/embedding",)
    with torch.no_grad():
        expected = _np(torch_lm(torch.from_numpy(np.asarray(IDS, np.int64))))
    np.testing.assert_allclose(TiedLM()(params, IDS), expected, rtol=1e-5, atol=1e-6)
    state = to_torch_state_dict(TiedLM(), params, module=torch_lm)
    assert list(state) == ["emb.weight", "head.weight"]
    TorchTiedLM().load_state_dict(state, strict=True)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "head.weight"'):
        TorchTiedLM().load_state_dict(to_torch_state_dict(TiedLM(), params), strict=True)


def test_declared_ties_fill_a_missing_copy_and_refuse_unequal_ones():
    state = TorchTiedLM().state_dict()
    ties = {"head.weight": "emb.weight"}
    only_head = {"head.weight": state["head.weight"]}  # a file that kept the other name
    params, report = from_torch_state_dict(TiedLM(), only_head, IDS, ties=ties)
    assert report.tied == ("head.weight",) and report.loaded == ("emb/embedding",)
    np.testing.assert_array_equal(params["emb"]["embedding"], _np(state["emb.weight"]))
    back = to_torch_state_dict(TiedLM(), params, ties=ties)
    assert torch.equal(back["head.weight"], back["emb.weight"])

    untied = {"emb.weight": state["emb.weight"], "head.weight": state["emb.weight"] + 1}
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"'head\.weight' is tied to 'emb\.weight' \(one tensor under two names\), but their "
        r"values differ",
    ):
        from_torch_state_dict(TiedLM(), untied, IDS, ties=ties)


def test_an_unexpected_copy_of_a_loaded_entry_is_named_as_a_tie():
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"'head\.weight' holds the same values as 'emb\.weight': if they are tied .* pass "
        r"ties=\{'head\.weight': 'emb\.weight'\}",
    ):
        from_torch_state_dict(TiedLM(), TorchTiedLM().state_dict(), IDS)


def test_ties_must_be_a_mapping():
    with pytest.raises(li.errors.InvalidArgumentError, match=r"ties must map a state dict key"):
        from_torch_state_dict(TiedLM(), TorchTiedLM(), IDS, ties=[("head.weight", "emb.weight")])


# ---------------------------------------------------------------------------
# Prefixes and near misses.


def _mlp_state():
    torch_mlp = TorchLazyMLP()
    torch_mlp(torch.ones(1, 4))
    return torch_mlp.state_dict()


def test_a_data_parallel_prefix_gets_one_rename_suggestion():
    state = {f"module.{k}": v for k, v in _mlp_state().items()}
    with pytest.raises(li.errors.StateMismatchError) as info:
        from_torch_state_dict(LazyMLP(), state, jnp.ones((1, 4)))
    renames = [p for p in info.value.problems if "rename=" in p]
    assert renames == [
        "every entry of the state is under 'module' (as DataParallel and DistributedDataParallel "
        "save them) and the model's are not: pass rename={'': 'module'}"
    ]
    params, _ = from_torch_state_dict(LazyMLP(), state, jnp.ones((1, 4)), rename={"": "module"})
    assert params["fc2"]["kernel"].shape == (10, 1)


def test_a_model_nested_deeper_than_the_state_gets_one_rename_suggestion():
    class Wrapped(li.Layer):
        net: li.Layer = LazyMLP()

        def __call__(self, params, x):
            return self.net(params["net"], x)

    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"every missing entry is an unexpected one under 'net'.*pass rename=\{'net': ''\}",
    ):
        from_torch_state_dict(Wrapped(), _mlp_state(), jnp.ones((1, 4)))
    params, _ = from_torch_state_dict(Wrapped(), _mlp_state(), jnp.ones((1, 4)), rename={"net": ""})
    assert params["net"]["fc1"]["kernel"].shape == (4, 10)


def test_near_misses_pair_by_shape_not_spelling():
    """``fc1.weight`` was paired with ``2.weight``."""
    sequential = torch.nn.Sequential(
        torch.nn.Linear(4, 10), torch.nn.ReLU(), torch.nn.Linear(10, 1)
    )
    with pytest.raises(li.errors.StateMismatchError) as info:
        from_torch_state_dict(LazyMLP(), sequential, jnp.ones((1, 4)))
    lines = [p for p in info.value.problems if p.startswith(("missing", "unexpected"))]
    assert lines == [
        "missing key 'fc1.weight' (Linear at 'fc1', parameter 'fc1/kernel') (did you mean '0.weight'?)",
        "missing key 'fc1.bias' (Linear at 'fc1', parameter 'fc1/bias') (did you mean '0.bias'?)",
        "missing key 'fc2.weight' (Linear at 'fc2', parameter 'fc2/kernel') (did you mean '2.weight'?)",
        "missing key 'fc2.bias' (Linear at 'fc2', parameter 'fc2/bias') (did you mean '2.bias'?)",
        "unexpected key '0.weight' (did you mean 'fc1.weight'?)",
        "unexpected key '0.bias' (did you mean 'fc1.bias'?)",
        "unexpected key '2.weight' (did you mean 'fc2.weight'?)",
        "unexpected key '2.bias' (did you mean 'fc2.bias'?)",
    ]


def test_a_packed_projection_is_suggested_by_its_shape():
    """A GPT-2-style attention state into nn.MultiheadAttention's layout: ``in_proj_weight``
    (24, 8) is ``c_attn.weight`` (8, 24) transposed, not the closer spelt ``c_proj.weight``."""

    class Attn(li.Layer):
        attn: li.Layer = li.MultiHeadAttention(num_heads=2)

        def __call__(self, params, x):
            return self.attn(params["attn"], x)

    state = {
        "attn.c_attn.weight": torch.randn(8, 24),
        "attn.c_attn.bias": torch.randn(24),
        "attn.c_proj.weight": torch.randn(8, 8),
        "attn.c_proj.bias": torch.randn(8),
    }
    with pytest.raises(li.errors.StateMismatchError) as info:
        from_torch_state_dict(Attn(), state, jnp.ones((1, 3, 8)))
    hints = {p.split("'")[1]: p.rsplit("did you mean ", 1)[-1] for p in info.value.problems}
    assert hints["attn.in_proj_weight"] == "'attn.c_attn.weight'?)"
    assert hints["attn.in_proj_bias"] == "'attn.c_attn.bias'?)"
    assert hints["attn.out_proj.weight"] == "'attn.c_proj.weight'?)"


def test_the_near_miss_of_a_load_state_still_pairs_siblings(key):
    params = li.dry_run(li.Linear(3), key, jnp.ones((1, 2)))
    state = {"weight": params["kernel"], "bias": params["bias"]}
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"missing key 'kernel' \(did you mean 'weight'\?\)",
    ):
        li.load_state(params, state)


def test_near_misses_need_some_evidence():
    from lazyinit._paths import near_misses

    pairs = near_misses(
        [("fc1", "kernel"), ("head", "w")],
        [("encoder", "norm", "scale"), ("fc1", "weight")],
        {("head", "w"): (4, 4), ("encoder", "norm", "scale"): (7,)},
    )
    assert pairs == {("fc1", "kernel"): ("fc1", "weight")}  # the norm's shape fits nothing
