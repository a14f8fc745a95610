"""compare: a port's layer outputs against the torch module's, the first wrong layer named by path
on both sides, rendered as a table in a terminal and in Jupyter."""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rich.console
import torch

import lazyinit as li
from lazyinit.interop.torch import Comparison, compare, from_torch_state_dict


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


class Gelu(li.Layer):
    """An activation as a layer (so compare sees its output); ``approximate`` picks the form."""

    approximate: bool = False

    def specs(self, x):
        return {}

    def __call__(self, params, x):
        return jax.nn.gelu(x, approximate=self.approximate)


def _mlp(approximate):
    torch_mlp = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.GELU(), torch.nn.Linear(16, 2))
    model = li.Sequential([li.Linear(16), Gelu(approximate), li.Linear(2)])
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)) * 3, jnp.float32)
    params, _ = from_torch_state_dict(model, torch_mlp, x)
    return model, params, torch_mlp, x


def test_a_faithful_port_is_within_tolerance_at_every_layer():
    report = compare(*_mlp(approximate=False))
    assert report.ok and report.first is None
    assert [(r.path, r.torch_path, r.layer, r.module) for r in report.rows] == [
        ("0", "0", "Linear", "Linear"),
        ("1", "1", "Gelu", "GELU"),
        ("2", "2", "Linear", "Linear"),
        ("<root>", "<root>", "Sequential", "Sequential"),
    ]


def test_a_tanh_gelu_where_torch_uses_the_exact_one_is_the_first_wrong_layer():
    model, params, torch_mlp, x = _mlp(approximate=True)
    report = compare(model, params, torch_mlp, x)
    first = report.first
    assert (first.path, first.torch_path, first.layer, first.module) == ("1", "1", "Gelu", "GELU")
    assert report.rows[0].within and not first.within
    with torch.no_grad():
        exact = torch_mlp[1](torch_mlp[0](torch.from_numpy(np.array(x)))).numpy()
    tanh = jax.nn.gelu(model.layers[0](params["0"], x), approximate=True)
    assert first.max_abs == pytest.approx(float(np.abs(tanh - exact).max()), rel=1e-3)
    assert first.max_rel == pytest.approx(first.max_abs / float(np.abs(exact).max()), rel=1e-6)


class TorchAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.out(self.attn(x, x, x, need_weights=False)[0])


class Attention(li.Layer):
    attn: li.Layer = li.MultiHeadAttention(num_heads=2)
    out: li.Layer = li.Linear(3)

    def __call__(self, params, x):
        return self.out(params["out"], self.attn(params["attn"], x))


def test_swapped_query_and_key_are_found_in_the_attention_layer():
    torch_model = TorchAttention()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 8)), jnp.float32)
    params, _ = from_torch_state_dict(Attention(), torch_model, x)
    assert compare(Attention(), params, torch_model, x).ok
    attn = params["attn"]
    wrong = {**params, "attn": {**attn, "query": attn["key"], "key": attn["query"]}}
    first = compare(Attention(), wrong, torch_model, x).first
    assert (first.path, first.torch_path) == ("attn", "attn")
    assert (first.layer, first.module) == ("MultiHeadAttention", "MultiheadAttention")


class ConvNet(li.Layer):
    conv: li.Layer = li.Conv(4, (3, 3), padding=1)  # channels-last
    norm: li.Layer = li.BatchNorm()

    def __call__(self, params, x):
        return self.norm(params["norm"], self.conv(params["conv"], x))


def test_a_channels_last_port_compares_with_a_channels_first_torch_sample():
    torch_model = torch.nn.Module()
    torch_model.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    torch_model.norm = torch.nn.BatchNorm2d(4).eval()
    torch_model.forward = lambda x: torch_model.norm(torch_model.conv(x))
    nchw = torch.randn(2, 3, 6, 6)
    nhwc = jnp.asarray(nchw.permute(0, 2, 3, 1).numpy())
    params, _ = from_torch_state_dict(ConvNet(), torch_model, nhwc)
    report = compare(ConvNet(), params, torch_model, nhwc, torch_sample=(nchw,))
    assert [r.path for r in report.rows] == ["conv", "norm", "<root>"]
    assert report.ok, report


def test_a_renamed_port_is_paired_through_rename():
    torch_model = torch.nn.Module()
    torch_model.body = torch.nn.Sequential(torch.nn.Linear(3, 4))
    torch_model.forward = lambda x: torch_model.body(x)
    model = li.Sequential([li.Linear(4)])
    rename = {"": "body"}
    params, _ = from_torch_state_dict(model, torch_model, jnp.ones((1, 3)), rename=rename)
    report = compare(model, params, torch_model, jnp.ones((2, 3)), rename=rename)
    assert [(r.path, r.torch_path) for r in report.rows] == [("0", "body.0"), ("<root>", "<root>")]
    assert report.ok


def test_outputs_of_different_shapes_are_a_divergence_with_a_note():
    torch_model = torch.nn.Sequential(torch.nn.Linear(3, 4))
    model = li.Sequential([li.Linear(4)])
    params, _ = from_torch_state_dict(model, torch_model, jnp.ones((1, 3)))
    wrong = torch.nn.Sequential(torch.nn.Linear(3, 5))
    report = compare(model, params, wrong, jnp.ones((2, 3)))
    assert report.first.note == "shapes (2, 4) vs (2, 5)"
    assert report.first.max_abs == float("inf")


def _report():
    return compare(*_mlp(approximate=True))


def test_the_report_prints_as_a_table_naming_the_first_wrong_layer():
    report = _report()
    text = str(report)
    lines = text.splitlines()
    assert lines[0] == (
        "4 layers compared: the first beyond rtol=0.0001, atol=1e-05 is '1' (lazyinit Gelu) <-> "
        "'1' (torch GELU)"
    )
    header = next(l for l in lines if "lazyinit" in l and "torch" in l and "max abs" in l)
    assert header.split() == [
        "#",
        "lazyinit",
        "torch",
        "layer",
        "/",
        "module",
        "shape",
        "max",
        "abs",
        "max",
        "rel",
    ]
    assert sum("DIFFERS" in l for l in lines) >= 1 and any(l.rstrip().endswith("ok") for l in lines)
    assert repr(report) == text


def test_the_report_renders_with_rich_and_in_jupyter():
    report = _report()
    buffer = io.StringIO()
    rich.console.Console(file=buffer, width=200, color_system=None).print(report)
    assert "the first beyond" in buffer.getvalue() and "DIFFERS" in buffer.getvalue()
    page = report._repr_html_()
    assert page.startswith('<table class="lazyinit-compare">')
    assert page.count("<tr") == 1 + len(report.rows)
    assert "font-weight:bold" in page  # the first wrong layer
    assert isinstance(report, Comparison)


def test_compare_refuses_what_is_not_a_torch_module():
    model, params, _, x = _mlp(approximate=False)
    with pytest.raises(li.errors.InvalidArgumentError, match=r"compare takes the torch nn\.Module"):
        compare(model, params, {"0.weight": 1}, x)
    with pytest.raises(li.errors.InvalidArgumentError, match=r"torch_sample must be a tuple"):
        compare(model, params, torch.nn.Linear(3, 2), x, torch_sample=[x])


class Relu(li.Layer):
    def specs(self, x):
        return {}

    def __call__(self, params, x):
        return jax.nn.relu(x)


def test_outputs_edited_in_place_later_are_compared_as_they_were():
    """ReLU(inplace=True) edits the tensor the Linear returned: compare kept a reference to it
    and reported a faithful port's Linear as differing (torchvision's ResNet does this)."""
    torch_model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(inplace=True))
    model = li.Sequential([li.Linear(8), Relu()])
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    params, _ = from_torch_state_dict(model, torch_model, x)
    report = compare(model, params, torch_model, x)
    assert [(r.path, r.within) for r in report.rows] == [("0", True), ("1", True), ("<root>", True)]


def test_outputs_that_differ_by_trailing_size_one_axes_are_compared():
    """GlobalAvgPool's (N, C) against AdaptiveAvgPool2d(1)'s (N, C, 1, 1): the same values."""
    torch_model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1))
    model = li.channels_first(li.Sequential([li.Conv(4, 3), li.GlobalAvgPool()]))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 6, 6)), jnp.float32)
    params, _ = from_torch_state_dict(model, torch_model, x)
    row = compare(model, params, torch_model, x).rows[1]
    assert (row.path, row.shape, row.within, row.note) == ("1", (2, 4), True, "")
