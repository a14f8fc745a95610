"""lazyinit.interop.torch: PyTorch state dicts into lazyinit params and back, checked on outputs."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from interop_models import CNN, LazyMLP, TorchCNN, TorchLazyMLP

import lazyinit as li
from lazyinit.interop.torch import from_torch_state_dict, to_torch_state_dict


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _np(t):
    return t.detach().numpy()


def _close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def _same_state(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def _snapshot(state):
    return {k: v.clone() for k, v in state.items()}


# ---------------------------------------------------------------------------
# The seed's LazyMLP and a small CNN, dry-run in both libraries, weights moved both ways.


def test_lazy_mlp_torch_to_lazyinit_gives_equal_outputs(key):
    torch_mlp = TorchLazyMLP()
    torch_mlp(torch.ones(10, 10))  # PyTorch's dry run
    model = LazyMLP()
    params, _ = from_torch_state_dict(model, torch_mlp, jnp.ones((10, 10)))
    assert jax.tree.map(jnp.shape, params) == {
        "fc1": {"kernel": (10, 10), "bias": (10,)},
        "fc2": {"kernel": (10, 1), "bias": (1,)},
    }
    # It plugs into the dry run, which keeps every leaf bit for bit.
    kept = li.dry_run(model, key, jnp.ones((10, 10)), state=params)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), kept, params))
    x = torch.randn(6, 10)
    _close(model(kept, jnp.asarray(_np(x))), _np(torch_mlp(x)))


def test_lazy_mlp_lazyinit_to_torch_gives_equal_outputs(key):
    model = LazyMLP()
    params = li.dry_run(model, key, jnp.ones((10, 10)))
    state = to_torch_state_dict(model, params)
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        "fc1.weight": (10, 10),
        "fc1.bias": (10,),
        "fc2.weight": (1, 10),
        "fc2.bias": (1,),
    }
    torch_mlp = TorchLazyMLP()
    torch_mlp(torch.ones(10, 10))
    torch_mlp.load_state_dict(state)  # strict
    x = torch.randn(6, 10)
    _close(_np(torch_mlp(x)), model(params, jnp.asarray(_np(x))))


def test_lazy_mlp_round_trip_is_exact(key):
    torch_mlp = TorchLazyMLP()
    torch_mlp(torch.ones(2, 7))
    params, _ = from_torch_state_dict(LazyMLP(), torch_mlp, jnp.ones((2, 7)))
    _same_state(to_torch_state_dict(LazyMLP(), params), torch_mlp.state_dict())


def test_lazy_mlp_loads_into_the_lazy_state_before_any_dry_run(key):
    torch_mlp = TorchLazyMLP()
    torch_mlp(torch.ones(10, 10))
    model = LazyMLP()
    state, report = li.load_state(
        li.lazy_state(model), from_torch_state_dict(model, torch_mlp, jnp.ones((1, 10)))[0]
    )
    assert report.loaded == ("fc1/bias", "fc1/kernel", "fc2/bias", "fc2/kernel")
    assert not li.has_uninitialized(state)


def _trained_torch_cnn(x):
    torch_cnn = TorchCNN()
    torch_cnn(x)  # dry run
    for _ in range(2):  # running statistics that are not the defaults
        torch_cnn(torch.randn(*x.shape) * 3 + 1)
    return torch_cnn.eval()


def test_cnn_torch_to_lazyinit_gives_equal_outputs(key):
    x = torch.randn(2, 3, 8, 8)
    torch_cnn = _trained_torch_cnn(x)
    model = CNN()
    sample = jnp.asarray(_np(x))
    params, _ = from_torch_state_dict(model, torch_cnn, sample)
    assert jax.tree.map(jnp.shape, params) == {
        "conv1": {"kernel": (3, 3, 3, 4), "bias": (4,)},
        "bn1": {"scale": (4,), "bias": (4,), "mean": (4,), "var": (4,), "count": ()},
        "conv2": {"kernel": (3, 3, 4, 8)},
        "up": {"kernel": (2, 2, 4, 4), "bias": (4,)},
        "head": {"kernel": (4, 3), "bias": (3,)},
    }
    params = li.dry_run(model, key, sample, state=params)
    with torch.no_grad():
        _close(model(params, sample), _np(torch_cnn(x)))


def test_cnn_lazyinit_to_torch_gives_equal_outputs_and_trains_alike(key):
    model = CNN()
    x = torch.randn(2, 3, 8, 8)
    sample = jnp.asarray(_np(x))
    params = li.dry_run(model, key, sample)
    torch_cnn = TorchCNN()
    torch_cnn(x)
    state = to_torch_state_dict(model, params, sample)
    assert state["bn1.num_batches_tracked"].dtype == torch.int64
    torch_cnn.load_state_dict(state)
    with torch.no_grad():
        _close(_np(torch_cnn.eval()(x)), model(params, sample))
        # One training-mode step: the same output and the same running statistics.
        out, updates = li.apply(model, params, sample, train=True, mutable=True)
        _close(out, _np(torch_cnn.train()(x)))
    _close(updates["bn1"]["mean"], _np(torch_cnn.bn1.running_mean))
    _close(updates["bn1"]["var"], _np(torch_cnn.bn1.running_var))


# ---------------------------------------------------------------------------
# Every layer with a PyTorch counterpart: torch -> lazyinit equal outputs, and back exactly.


def _bn1d():
    bn = torch.nn.BatchNorm1d(5)
    bn(torch.randn(16, 5) * 2 + 1)
    return bn.eval()


def _instance_norm():
    norm = torch.nn.InstanceNorm1d(5, affine=True, track_running_stats=True)
    norm(torch.randn(4, 5, 6) * 2 + 1)
    return norm.eval()


def _mha(kdim=None, bias=True):
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True, kdim=kdim, vdim=kdim, bias=bias)
    if bias:
        with torch.no_grad():
            mha.in_proj_bias.normal_()
            mha.out_proj.bias.normal_()
    return mha


LAYERS = {
    "linear": (lambda: torch.nn.Linear(5, 3), li.Linear(3), [(4, 5)]),
    "linear-nobias": (lambda: torch.nn.Linear(5, 3, bias=False), li.Linear(3, use_bias=False), [(4, 5)]),
    "conv1d": (lambda: torch.nn.Conv1d(4, 6, 3, padding=1), li.Conv(6, (3,), padding=1, channels_first=True), [(2, 4, 7)]),
    "conv2d-groups": (lambda: torch.nn.Conv2d(4, 6, 3, stride=2, groups=2), li.Conv(6, (3, 3), stride=2, groups=2, channels_first=True), [(2, 4, 7, 7)]),
    "conv3d": (lambda: torch.nn.Conv3d(2, 3, 2, dilation=2), li.Conv(3, (2, 2, 2), dilation=2, channels_first=True), [(1, 2, 5, 5, 5)]),
    "convtranspose1d": (lambda: torch.nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1), li.ConvTranspose(6, (3,), stride=2, padding=1, output_padding=1, channels_first=True), [(2, 4, 5)]),
    "convtranspose2d-groups": (lambda: torch.nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), li.ConvTranspose(6, (3, 3), stride=2, groups=2, channels_first=True), [(2, 4, 4, 4)]),
    "convtranspose3d": (lambda: torch.nn.ConvTranspose3d(2, 4, 2, stride=2, groups=2), li.ConvTranspose(4, (2, 2, 2), stride=2, groups=2, channels_first=True), [(1, 2, 3, 3, 3)]),
    "batchnorm1d": (_bn1d, li.BatchNorm(), [(4, 5)]),
    "instancenorm1d": (_instance_norm, li.InstanceNorm(affine=True, track_running_stats=True, channels_first=True), [(2, 5, 6)]),
    "layernorm": (lambda: torch.nn.LayerNorm(6), li.LayerNorm(), [(2, 3, 6)]),
    "rmsnorm": (lambda: torch.nn.RMSNorm(6, eps=1e-6), li.RMSNorm(), [(2, 3, 6)]),
    "groupnorm": (lambda: torch.nn.GroupNorm(2, 6), li.GroupNorm(2, channels_first=True), [(2, 6, 4)]),
    "embedding": (lambda: torch.nn.Embedding(11, 4), li.Embedding(11, 4), ["ids"]),
    "attention": (_mha, li.MultiHeadAttention(num_heads=2), [(2, 5, 8)]),
    "attention-kdim": (lambda: _mha(kdim=6), li.MultiHeadAttention(num_heads=2), [(2, 5, 8), (2, 7, 6)]),
    "attention-nobias": (lambda: _mha(bias=False), li.MultiHeadAttention(num_heads=2, use_bias=False), [(2, 5, 8)]),
}  # fmt: skip


def _inputs(shapes):
    out = []
    for shape in shapes:
        if shape == "ids":
            out.append(torch.randint(0, 11, (2, 5)))
        else:
            out.append(torch.randn(*shape))
    return out


@pytest.mark.parametrize("name", list(LAYERS))
def test_each_layer_converts_both_ways(name, key):
    make, layer, shapes = LAYERS[name]
    module = make()
    xs = _inputs(shapes)
    sample = [jnp.asarray(_np(x)) for x in xs]
    original = _snapshot(module.state_dict())
    params, _ = from_torch_state_dict(layer, module, *sample)
    with torch.no_grad():
        if isinstance(module, torch.nn.MultiheadAttention):
            expected = module(xs[0], xs[-1], xs[-1], need_weights=False)[0]
        else:
            expected = module(*xs)
    _close(layer(params, *sample), _np(expected))
    back = to_torch_state_dict(layer, params, *sample)
    _same_state(back, original)  # num_batches_tracked too: BatchNorm's count, InstanceNorm's 0


def test_a_torch_conv_loads_into_a_channels_last_layer():
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    nhwc = jnp.asarray(_np(x.permute(0, 2, 3, 1)))
    layer = li.Conv(5, (3, 3), padding=1)  # channels-last, the default
    params, _ = from_torch_state_dict(layer, conv, nhwc)
    with torch.no_grad():
        _close(layer(params, nhwc), _np(conv(x).permute(0, 2, 3, 1)))


# ---------------------------------------------------------------------------
# Files.


def test_torch_save_file_round_trip_loads_with_weights_only(tmp_path, key):
    model = LazyMLP()
    params = li.dry_run(model, key, jnp.ones((3, 4)))
    path = tmp_path / "mlp.pt"
    torch.save(to_torch_state_dict(model, params), path)
    back, _ = from_torch_state_dict(model, path, jnp.ones((3, 4)))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), back, params))
    torch_mlp = TorchLazyMLP()
    torch_mlp(torch.ones(1, 4))
    torch_mlp.load_state_dict(torch.load(path, weights_only=True))


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_file_with_arbitrary_pickled_objects_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"fc1.weight": _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        from_torch_state_dict(LazyMLP(), path, jnp.ones((1, 4)))
    assert "must never run" not in capsys.readouterr().out


def test_safetensors_file_loads_without_pickle(tmp_path, key):
    from safetensors.torch import save_file

    torch_mlp = TorchLazyMLP()
    torch_mlp(torch.ones(1, 4))
    path = tmp_path / "mlp.safetensors"
    save_file(torch_mlp.state_dict(), path)
    params, _ = from_torch_state_dict(LazyMLP(), str(path), jnp.ones((1, 4)))
    x = torch.randn(3, 4)
    _close(LazyMLP()(params, jnp.asarray(_np(x))), _np(torch_mlp(x)))


# ---------------------------------------------------------------------------
# Bad input: every problem at once, nothing converted, the caller's dict untouched.


def _torch_mlp_state():
    torch_mlp = TorchLazyMLP()
    torch_mlp(torch.ones(1, 4))
    return torch_mlp.state_dict()


def test_bad_keys_and_shapes_are_all_listed_and_the_dict_is_unchanged():
    state = _torch_mlp_state()
    state["fc1.weight"] = state["fc1.weight"].T.contiguous()  # already in lazyinit's layout
    state["fc3.weight"] = state.pop("fc2.weight")  # a renamed layer
    before = _snapshot(state)
    with pytest.raises(li.errors.StateMismatchError) as info:
        from_torch_state_dict(LazyMLP(), state, jnp.ones((1, 4)))
    message = str(info.value)
    assert len(info.value.problems) == 3
    assert "nothing was changed" in message
    assert (
        "size mismatch for 'fc1.weight' (Linear at 'fc1', parameter 'fc1/kernel'): found shape "
        "(4, 10), expected (10, 4) (the transpose: PyTorch's nn.Linear stores it (out, in), "
        "lazyinit (in, out); a Hugging Face Conv1D stores (in, out): if that is what this "
        "module is, pass the torch module, or declare it: layouts={'fc1': 'conv1d'}; else pass "
        "PyTorch's own state dict, not one already converted)" in message
    )
    assert (
        "missing key 'fc2.weight' (Linear at 'fc2', parameter 'fc2/kernel') "
        "(did you mean 'fc3.weight'?)" in message
    )
    assert "unexpected key 'fc3.weight' (did you mean 'fc2.weight'?)" in message
    _same_state(state, before)


def test_a_mismatch_raises_with_match_pinned():
    state = _torch_mlp_state()
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"size mismatch for 'fc1\.weight' \(Linear at 'fc1', parameter 'fc1/kernel'\): "
        r"found shape \(10, 4\), expected \(10, 5\)",
    ):
        from_torch_state_dict(LazyMLP(), state, jnp.ones((1, 5)))  # another input size


def test_a_conv_kernel_in_lazyinit_layout_gets_an_already_converted_hint():
    conv = torch.nn.Conv2d(3, 4, 2)
    state = {"weight": conv.weight.permute(2, 3, 1, 0), "bias": conv.bias}
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"found shape \(2, 2, 3, 4\), expected \(4, 3, 2, 2\) \(lazyinit's own layout of "
        r"'kernel': the state looks already converted; load it with li\.load_state",
    ):
        from_torch_state_dict(li.Conv(4, (2, 2)), state, jnp.ones((1, 5, 5, 3)))


def test_a_conv_kernel_in_another_order_gets_a_layout_hint():
    conv = torch.nn.Conv2d(3, 4, 2)
    state = {"weight": conv.weight.permute(0, 2, 3, 1), "bias": conv.bias}  # (out, *k, in)
    with pytest.raises(li.errors.StateMismatchError, match=r"same sizes in another order"):
        from_torch_state_dict(li.Conv(4, (2, 2)), state, jnp.ones((1, 5, 5, 3)))


def test_an_uninitialized_torch_lazy_module_is_an_error_saying_to_dry_run_it():
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"'fc1\.weight' is an uninitialized PyTorch parameter: run the lazy torch module "
        r"on a sample batch first",
    ):
        from_torch_state_dict(LazyMLP(), TorchLazyMLP(), jnp.ones((1, 4)))


def test_conversion_errors_are_state_mismatch_value_errors():
    assert issubclass(li.errors.StateMismatchError, li.errors.StateMismatchError)
    assert issubclass(li.errors.StateMismatchError, ValueError)


def test_not_strict_reports_and_the_dry_run_draws_the_rest(key):
    state = _torch_mlp_state()
    del state["fc2.weight"], state["fc2.bias"]
    state["extra.weight"] = torch.ones(2)
    params, report = from_torch_state_dict(LazyMLP(), state, jnp.ones((1, 4)), strict=False)
    assert report.loaded == ("fc1/bias", "fc1/kernel")
    assert report.missing == ("fc2/bias", "fc2/kernel")
    assert report.unexpected == ("extra.weight",)
    full = li.dry_run(LazyMLP(), key, jnp.ones((1, 4)), state=params)
    assert bool((full["fc1"]["kernel"] == params["fc1"]["kernel"]).all())
    assert full["fc2"]["kernel"].shape == (10, 1)


def test_float64_needs_a_dtype_and_bfloat16_round_trips():
    state = {k: v.double() for k, v in _torch_mlp_state().items()}
    with pytest.raises(
        li.errors.StateMismatchError, match=r"'fc1\.weight' is float64.*dtype='float32'"
    ):
        from_torch_state_dict(LazyMLP(), state, jnp.ones((1, 4)))
    params, _ = from_torch_state_dict(LazyMLP(), state, jnp.ones((1, 4)), dtype="float32")
    assert params["fc1"]["kernel"].dtype == jnp.float32

    half = {k: v.to(torch.bfloat16) for k, v in _torch_mlp_state().items()}
    params, _ = from_torch_state_dict(LazyMLP(), half, jnp.ones((1, 4)))
    assert params["fc1"]["kernel"].dtype == jnp.bfloat16
    _same_state(to_torch_state_dict(LazyMLP(), params), half)


def test_export_with_a_sample_checks_shapes_first(key):
    params = li.dry_run(LazyMLP(), key, jnp.ones((1, 4)))
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"size mismatch for 'fc1/kernel': found shape \(4, 10\), expected \(5, 10\)",
    ):
        to_torch_state_dict(LazyMLP(), params, jnp.ones((1, 5)))


def test_exporting_a_lazy_state_names_every_placeholder():
    with pytest.raises(
        li.errors.StateMismatchError, match=r"'fc1/kernel' is uninitialized: run li\.dry_run"
    ) as info:
        to_torch_state_dict(LazyMLP(), li.lazy_state(LazyMLP()))
    assert len(info.value.problems) == 4


def test_rename_maps_lazyinit_layers_to_other_torch_names(key):
    torch_model = torch.nn.Module()
    torch_model.body = torch.nn.Sequential(torch.nn.Linear(4, 10), torch.nn.ReLU())
    torch_model.out = torch.nn.Linear(10, 1)
    rename = {"fc1": "body.0", "fc2": "out"}
    params, _ = from_torch_state_dict(LazyMLP(), torch_model, jnp.ones((1, 4)), rename=rename)
    assert bool((params["fc2"]["bias"] == jnp.asarray(_np(torch_model.out.bias))).all())
    back = to_torch_state_dict(LazyMLP(), params, rename=rename)
    _same_state(back, torch_model.state_dict())
    # A prefix for everything, as DistributedDataParallel's 'module.':
    prefixed = to_torch_state_dict(LazyMLP(), params, rename={"": "module"})
    assert list(prefixed)[:2] == ["module.fc1.weight", "module.fc1.bias"]


def test_a_custom_layer_maps_parameters_by_name(key):
    class Scale(li.Layer):
        def specs(self, x):
            return {"scale": li.Param((x.shape[-1],), jax.nn.initializers.ones)}

        def __call__(self, params, x):
            return x * params["scale"][None]

    model = li.Sequential([li.Linear(3), Scale()])
    state = {
        "0.weight": torch.ones(3, 2),
        "0.bias": torch.zeros(3),
        "1.scale": torch.tensor([1.0, 2.0, 3.0]),
    }
    params, _ = from_torch_state_dict(model, state, jnp.ones((1, 2)))
    assert params["1"]["scale"].tolist() == [1.0, 2.0, 3.0]
    _same_state(to_torch_state_dict(model, params), state)


def test_a_registered_converter_handles_a_custom_layer(key):
    from lazyinit.interop import permute
    from lazyinit.interop.torch import register

    class Bilinear(li.Layer):  # a custom layer whose torch twin stores its matrix transposed
        out_features: int = 3

        def specs(self, x):
            return {"w": li.Param((x.shape[-1], self.out_features), jax.nn.initializers.ones)}

        def __call__(self, params, x):
            return x @ params["w"]

    register(Bilinear)(lambda layer, leaves: [permute("w", "weight", (1, 0))])
    state = {"weight": torch.arange(6.0).reshape(3, 2)}
    params, _ = from_torch_state_dict(Bilinear(), state, jnp.ones((1, 2)))
    assert params["w"].tolist() == [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]
    _same_state(to_torch_state_dict(Bilinear(), params), state)


def test_strict_import_returns_params_and_report_too():
    params, report = from_torch_state_dict(LazyMLP(), _torch_mlp_state(), jnp.ones((1, 4)))
    assert report.loaded == ("fc1/bias", "fc1/kernel", "fc2/bias", "fc2/kernel")
    assert report.missing == () and report.unexpected == ()
    assert params["fc1"]["kernel"].shape == (4, 10)


def test_names_that_differ_in_structure_suggest_rename():
    """A torch nn.Sequential's '0.weight' against the model's 'fc1': the hint is rename=."""
    sequential = torch.nn.Sequential(
        torch.nn.Linear(4, 10), torch.nn.ReLU(), torch.nn.Linear(10, 1)
    )
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"the model's layers \('fc1', 'fc2'\) have no entries and the state has entries "
        r"under other modules \('0', '2'\).*rename=\{'fc1': '0', 'fc2': '2'\}",
    ):
        from_torch_state_dict(LazyMLP(), sequential, jnp.ones((1, 4)))
    params, _ = from_torch_state_dict(
        LazyMLP(), sequential, jnp.ones((1, 4)), rename={"fc1": "0", "fc2": "2"}
    )
    _close(params["fc2"]["kernel"], _np(sequential[2].weight).T)


def test_a_misspelt_entry_gets_no_rename_hint():
    state = _torch_mlp_state()
    state["fc1.weights"] = state.pop("fc1.weight")
    with pytest.raises(li.errors.StateMismatchError) as info:
        from_torch_state_dict(LazyMLP(), state, jnp.ones((1, 4)))
    assert "did you mean 'fc1.weight'" in str(info.value)
    assert "rename=" not in str(info.value)
