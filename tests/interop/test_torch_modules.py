"""Module-aware conversion: each layer by its torch module's type, refusals by name, and the
size-mismatch hints that name the likely cause."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from interop_models import LazyMLP, TorchLazyMLP

import lazyinit as li
from lazyinit.interop import linear, same
from lazyinit.interop.torch import from_torch_state_dict, register, to_torch_state_dict


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _np(t):
    return t.detach().numpy()


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


class StoresInOut(torch.nn.Module):
    """A torch layer of someone's own that keeps its matrix (in, out), as Conv1D does."""

    def __init__(self, nx, nf):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(nx, nf))
        self.bias = torch.nn.Parameter(torch.randn(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


def test_a_torch_module_type_without_a_rule_is_refused_by_name_with_how_to_register():
    torch_model = torch.nn.Sequential(StoresInOut(4, 4))  # square: the shapes fit either way
    before = _np(torch_model[0].weight).copy()
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"the PyTorch module at '0' is a StoresInOut, which no rule converts into the Linear "
        r"at '0' \(its rules are for Linear, Conv1D\): register one, "
        r"@lazyinit\.interop\.torch\.register\(li\.Linear, 'StoresInOut'\)",
    ):
        from_torch_state_dict(li.Sequential([li.Linear(4)]), torch_model, jnp.ones((2, 4)))
    np.testing.assert_array_equal(_np(torch_model[0].weight), before)


def test_a_registered_module_type_converts_and_exports_for_a_strict_load():
    class InOut(StoresInOut):
        pass

    register(li.Linear, InOut)(
        lambda layer, leaves: [linear("kernel", "weight", layout="conv1d"), same("bias")]
    )
    torch_model = torch.nn.Sequential(InOut(4, 4), torch.nn.Tanh(), InOut(4, 3))
    model = li.Sequential([li.Linear(4), li.nn.tanh, li.Linear(3)])
    params, _ = from_torch_state_dict(model, torch_model, jnp.ones((2, 4)))
    x = torch.randn(5, 4)
    with torch.no_grad():
        _close(model(params, jnp.asarray(_np(x))), _np(torch_model(x)))
    state = to_torch_state_dict(model, params, module=torch_model)
    torch_model.load_state_dict(state, strict=True)


def test_a_norm_of_another_kind_is_refused_not_loaded():
    torch_model = torch.nn.Sequential(torch.nn.RMSNorm(6))
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"the PyTorch module at '0' is a RMSNorm, which no rule converts into the LayerNorm",
    ):
        from_torch_state_dict(li.Sequential([li.LayerNorm()]), torch_model, jnp.ones((2, 6)))


def test_a_subclass_of_a_torch_type_with_a_rule_converts_as_it():
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)  # out_proj: a Linear subclass
    assert type(mha.out_proj) is not torch.nn.Linear
    layer = li.MultiHeadAttention(num_heads=2)
    params, _ = from_torch_state_dict(layer, mha, jnp.ones((1, 3, 8)))
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        _close(layer(params, jnp.asarray(_np(x))), _np(mha(x, x, x, need_weights=False)[0]))


class ConvNet(li.Layer):
    conv: li.Layer = li.Conv(4, (3, 3))  # channels-last: PyTorch's layers are channels-first
    norm: li.Layer = li.BatchNorm()

    def __call__(self, params, x):
        return self.norm(params["norm"], self.conv(params["conv"], x))


def test_a_channels_first_sample_to_channels_last_layers_is_named_with_the_axis():
    torch_model = torch.nn.Module()
    torch_model.conv, torch_model.norm = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
    nchw = jnp.ones((2, 3, 32, 32))
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"size mismatch for 'conv\.weight' \(Conv at 'conv', parameter 'conv/kernel'\): "
        r"found shape \(4, 3, 3, 3\), expected \(4, 32, 3, 3\) \(Conv at 'conv' is channels-last "
        r"and took 32 channels from the last axis of its input \(2, 3, 32, 32\); the state has 3, "
        r"the size of axis 1: was the sample given channels-first \(N, C, \.\.\.\)\? Pass it "
        r"channels-last \(N, \.\.\., C\), or make the layers channels-first",
    ):
        from_torch_state_dict(ConvNet(), torch_model, nchw)
    params, _ = from_torch_state_dict(ConvNet(), torch_model, jnp.ones((2, 32, 32, 3)))
    assert params["conv"]["kernel"].shape == (3, 3, 3, 4)


def test_a_layout_declared_for_no_layer_is_an_error():
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"layouts=\{'fc9': 'conv1d'\} applies to no layer",
    ):
        from_torch_state_dict(LazyMLP(), _mlp_state(), jnp.ones((1, 4)), layouts={"fc9": "conv1d"})


def test_a_layout_declared_for_a_subtree_serves_only_the_layers_it_has_a_rule_for():
    """A subtree pattern declares its Linear layers; the norm under it keeps its own rule."""
    torch_model = torch.nn.Module()
    torch_model.body = torch.nn.Module()
    torch_model.body.fc, torch_model.body.norm = StoresInOut(3, 5), torch.nn.LayerNorm(5)

    class Body(li.Layer):
        fc: li.Layer = li.Linear(5)
        norm: li.Layer = li.LayerNorm()

        def __call__(self, params, x):
            return self.norm(params["norm"], self.fc(params["fc"], x))

    class Model(li.Layer):
        body: li.Layer = Body()

        def __call__(self, params, x):
            return self.body(params["body"], x)

    state = torch_model.state_dict()
    params, _ = from_torch_state_dict(Model(), state, jnp.ones((2, 3)), layouts={"body": "conv1d"})
    np.testing.assert_array_equal(params["body"]["fc"]["kernel"], _np(state["body.fc.weight"]))


def _mlp_state():
    torch_mlp = TorchLazyMLP()
    torch_mlp(torch.ones(1, 4))
    return torch_mlp.state_dict()


# ---------------------------------------------------------------------------
# Layers with a stacked block (li.Repeat, li.Ensemble) against an nn.ModuleList, without a sample.


class TorchBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ln, self.fc = torch.nn.LayerNorm(8), torch.nn.Linear(8, 8)

    def forward(self, x):
        return x + self.fc(self.ln(x))


class TorchStack(torch.nn.Module):
    def __init__(self, n=3):
        super().__init__()
        self.h = torch.nn.ModuleList([TorchBlock() for _ in range(n)])

    def forward(self, x):
        for block in self.h:
            x = block(x)
        return x


class Block(li.Layer):
    ln: li.Layer = li.LayerNorm()
    fc: li.Layer = li.Linear(8)

    def __call__(self, params, x):
        return x + self.fc(params["fc"], self.ln(params["ln"], x))


class Stack(li.Layer):
    h: li.Layer = li.Repeat(Block(), 3)

    def __call__(self, params, x):
        return self.h(params["h"], x)


def test_repeat_converts_both_ways_without_a_sample_against_a_module_list():
    torch_model = TorchStack()
    params, report = from_torch_state_dict(Stack(), torch_model)  # no sample: the declarations
    assert jax.tree.map(jnp.shape, params)["h"]["fc"] == {"kernel": (3, 8, 8), "bias": (3, 8)}
    assert len(report.loaded) == 4
    x = torch.randn(2, 8)
    with torch.no_grad():
        _close(Stack()(params, jnp.asarray(_np(x))), _np(torch_model(x)))
    state = to_torch_state_dict(Stack(), params, module=torch_model)
    assert list(state) == list(torch_model.state_dict())  # the module's order, copy by copy
    TorchStack().load_state_dict(state, strict=True)
    for k, v in torch_model.state_dict().items():
        assert torch.equal(state[k], v), k


def test_ensemble_converts_both_ways_without_a_sample_against_a_module_list():
    heads = torch.nn.ModuleList([torch.nn.Linear(5, 2) for _ in range(4)])
    model = li.Ensemble(li.Linear(2), 4)
    params, _ = from_torch_state_dict(model, heads)
    x = torch.randn(3, 5)
    with torch.no_grad():
        expected = np.stack([_np(h(x)) for h in heads])
    _close(model(params, jnp.asarray(_np(x))), expected)
    back = to_torch_state_dict(model, params)
    heads.load_state_dict(back, strict=True)


def test_copies_of_a_stacked_layer_must_be_one_module_type():
    torch_model = TorchStack()
    torch_model.h[1].fc = StoresInOut(8, 8)
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"copy 1 of Repeat at 'h' is a StoresInOut at 'h\.1\.fc' where copy 0 is a Linear",
    ):
        from_torch_state_dict(Stack(), torch_model)


def test_attention_converts_without_a_sample():
    """Head sizes come from the layer and the entries (it was refused: 'does not convert')."""
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    layer = li.MultiHeadAttention(num_heads=2)
    params, _ = from_torch_state_dict(layer, mha)
    assert jax.tree.map(jnp.shape, params)["out"] == {"kernel": (2, 4, 8), "bias": (8,)}
    x = torch.randn(2, 3, 8)
    with torch.no_grad():
        _close(layer(params, jnp.asarray(_np(x))), _np(mha(x, x, x, need_weights=False)[0]))
    assert list(to_torch_state_dict(layer, params)) == list(mha.state_dict())


# ---------------------------------------------------------------------------
# num_batches_tracked: counted through training, exported as PyTorch counts it.


def test_batch_norm_counts_its_training_batches_and_exports_the_count(key):
    torch_bn = torch.nn.BatchNorm1d(3)
    model = li.BatchNorm()
    params, _ = from_torch_state_dict(model, torch_bn, jnp.ones((4, 3)))
    batches = [torch.randn(8, 3) * 2 + 1 for _ in range(3)]
    for x in batches:
        torch_bn.train()(x)
        _, updates = li.apply(model, params, jnp.asarray(_np(x)), train=True, mutable=True)
        params = li.merge(params, updates)
    assert int(params["count"]) == 3
    state = to_torch_state_dict(model, params)
    assert state["num_batches_tracked"].dtype == torch.int64
    assert int(state["num_batches_tracked"]) == int(torch_bn.num_batches_tracked) == 3
    _close(_np(state["running_var"]), _np(torch_bn.running_var))
    back, _ = from_torch_state_dict(model, torch_bn, jnp.ones((4, 3)))
    assert int(back["count"]) == 3


def test_instance_norm_exports_the_zero_count_pytorch_keeps():
    norm = torch.nn.InstanceNorm1d(3, affine=True, track_running_stats=True)
    norm.train()(torch.randn(2, 3, 5))
    assert int(norm.num_batches_tracked) == 0  # PyTorch's InstanceNorm never counts
    layer = li.InstanceNorm(affine=True, track_running_stats=True, channels_first=True)
    params, _ = from_torch_state_dict(layer, norm, jnp.ones((2, 3, 5)))
    assert "count" not in params
    assert int(to_torch_state_dict(layer, params)["num_batches_tracked"]) == 0
