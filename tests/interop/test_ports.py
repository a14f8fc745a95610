"""The reference ports of examples/ports/ against the real models (tiny configs, random
weights, nothing downloaded): outputs within 1e-5 in float32, an export that loads with
``load_state_dict(strict=True)``, the seed flow without a sample, ``compare`` naming the
first wrong layer of a broken port, and the mapping line counts that docs/porting.md quotes."""

from __future__ import annotations

import copy
import dataclasses
import functools
import pathlib
import re
from collections.abc import Callable
from typing import Any

import hf_models
import jax
import numpy as np
import pytest
import torch

import lazyinit as li
from examples.ports import bert, gpt2, llama, resnet, vit
from lazyinit.interop.torch import compare, from_torch_state_dict, to_torch_state_dict

ROOT = pathlib.Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------
# A ResNet written in torch as torchvision writes it (torchvision's CPU wheel does not import
# beside CPU torch here): BasicBlocks, in-place ReLU and residual sums, a downsample branch.


class TorchBasicBlock(torch.nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.relu = torch.nn.ReLU(inplace=True)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = torch.nn.Sequential(
                torch.nn.Conv2d(cin, cout, 1, stride, bias=False), torch.nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class TorchResNet(torch.nn.Module):
    def __init__(self, widths=(8, 16), num_classes=5):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(widths[0])
        self.relu = torch.nn.ReLU(inplace=True)
        self.maxpool = torch.nn.MaxPool2d(3, 2, 1)
        self.layer1 = torch.nn.Sequential(TorchBasicBlock(widths[0], widths[0], 1))
        self.layer2 = torch.nn.Sequential(TorchBasicBlock(widths[0], widths[1], 2))
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(widths[1], num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


IMAGES = np.asarray(np.random.default_rng(1).normal(size=(2, 3, 16, 16)), np.float32)


def torch_resnet(seed: int = 0) -> TorchResNet:
    """Trained for two batches (running statistics moved, num_batches_tracked 2), then eval."""
    torch.manual_seed(seed)
    model = hf_models.perturbed(TorchResNet(), seed).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, 16, 16) + 0.5)
    return model.eval()


# ---------------------------------------------------------------------------
# The five ports.


@dataclasses.dataclass(frozen=True)
class Case:
    """One port: how to build it, the torch model it ports, and the sample both are called on."""

    model: Callable[[], Any]
    torch_model: Callable[..., Any]
    sample: tuple


CASES = {
    "gpt2": Case(
        lambda: gpt2.from_config(hf_models.gpt2_config()), hf_models.gpt2, (hf_models.IDS,)
    ),
    "bert": Case(
        lambda: bert.from_config(hf_models.bert_config()), hf_models.bert, (hf_models.IDS,)
    ),
    "llama": Case(
        lambda: llama.from_config(hf_models.llama_config()), hf_models.llama, (hf_models.IDS,)
    ),
    "vit": Case(
        lambda: vit.from_config(hf_models.vit_config()), hf_models.vit, (hf_models.PIXELS,)
    ),
    "resnet": Case(
        lambda: resnet.resnet(widths=(8, 16), blocks=(1, 1), num_classes=5), torch_resnet, (IMAGES,)
    ),
}


@dataclasses.dataclass(frozen=True)
class Ported:
    case: Case
    torch_model: Any
    model: Any
    params: Any  # imported from the torch module, traced on the sample


@functools.cache
def ported(name: str) -> Ported:
    """Each port built, and its torch model's state imported, once per test session (nothing
    here mutates either)."""
    c = CASES[name]
    torch_model, model = c.torch_model(), c.model()
    params, report = from_torch_state_dict(model, torch_model, *c.sample)
    assert report.missing == report.unexpected == ()
    return Ported(c, torch_model, model, params)


@pytest.fixture(params=sorted(CASES))
def port(request):
    return ported(request.param)


def _first(out):
    """The logits or last hidden state: BERT returns (last_hidden_state, pooler_output)."""
    return np.asarray(out[0] if isinstance(out, tuple) else out)


def _same_tree(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def test_the_port_equals_the_torch_model_within_1e5(port):
    sample = port.case.sample
    got, want = (
        _first(port.model(port.params, *sample)),
        hf_models.output(port.torch_model, *sample),
    )
    assert got.dtype == want.dtype == np.float32 and got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-5


def test_the_export_loads_into_the_torch_model_strictly(port):
    sample = port.case.sample
    state = to_torch_state_dict(port.model, port.params, *sample, module=port.torch_model)
    fresh = port.case.torch_model(seed=1)  # other weights, the same architecture
    fresh.load_state_dict(state, strict=True)
    for key, value in port.torch_model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_the_seed_flow_without_a_sample_keeps_the_state_bit_for_bit(port):
    """The full state into the lazy model, its structure derived without a sample, then a dry
    run that checks and keeps every entry."""
    params, report = from_torch_state_dict(port.model, port.torch_model)  # no sample
    assert report.missing == report.unexpected == ()
    _same_tree(params, port.params)  # what an import traced on the sample gives
    kept = li.dry_run(port.model, jax.random.key(0), *port.case.sample, state=params)
    _same_tree(kept, params)


def test_compare_finds_every_layer_of_a_faithful_port_within_tolerance(port):
    report = compare(port.model, port.params, port.torch_model, *port.case.sample)
    assert report.ok and report.first is None, str(report)
    assert report.rows[-1].path == report.rows[-1].torch_path == "<root>"
    assert len(report.rows) > 10  # layer by layer, not the logits only


# ---------------------------------------------------------------------------
# compare names the first wrong layer of a deliberately broken port, on both sides.


def test_compare_names_swapped_query_and_key_in_gpt2():
    p = ported("gpt2")
    torch_model, model, params = p.torch_model, p.model, p.params
    attn = params["transformer"]["h"]["attn"]
    swapped = {**attn, "query": attn["key"], "key": attn["query"]}
    h = {**params["transformer"]["h"], "attn": swapped}
    params = {**params, "transformer": {**params["transformer"], "h": h}}
    report = compare(model, params, torch_model, hf_models.IDS)
    first = report.first
    assert (first.path, first.torch_path) == ("transformer/h/0/attn", "transformer.h.0.attn")
    assert (first.layer, first.module) == ("MultiHeadAttention", "GPT2Attention")
    assert all(r.within for r in report.rows[: report.rows.index(first)])  # wte, wpe, ln_1


def test_compare_names_a_transposed_square_conv1d_in_gpt2():
    """A bare state dict with square MLP weights loads them either way; undeclared, they are
    taken as nn.Linear's and come in transposed."""
    torch_model = hf_models.gpt2(inner=hf_models.WIDTH)
    model = gpt2.from_config(hf_models.gpt2_config(inner=hf_models.WIDTH))
    layouts = {"transformer/h/attn": "GPT2Attention"}  # the MLP's Conv1D layout not declared
    ties = {"lm_head.weight": "transformer.wte.weight"}
    state = torch_model.state_dict()
    params, _ = from_torch_state_dict(model, state, hf_models.IDS, layouts=layouts, ties=ties)
    report = compare(model, params, torch_model, hf_models.IDS)
    first = report.first
    assert (first.path, first.torch_path) == (
        "transformer/h/0/mlp/c_fc",
        "transformer.h.0.mlp.c_fc",
    )
    assert (first.layer, first.module) == ("Linear", "Conv1D")
    assert "the first beyond rtol=0.0001, atol=1e-05 is 'transformer/h/0/mlp/c_fc'" in str(report)


def test_bert_pooler_output_equals_torch():
    p = ported("bert")
    torch_model, model, params = p.torch_model, p.model, p.params
    with torch.no_grad():
        want = torch_model(torch.from_numpy(np.asarray(hf_models.IDS, np.int64))).pooler_output
    assert np.max(np.abs(model(params, hf_models.IDS)[1] - want.numpy())) <= 1e-5


def test_compare_names_tanh_gelu_in_bert():
    """Hugging Face's "gelu" is exact; a port with the tanh approximation is off by ~1e-4."""
    torch_model = ported("bert").torch_model
    config = copy.deepcopy(hf_models.bert_config())
    config.hidden_act = "gelu_new"  # the port's activation only: li.nn.gelu_tanh
    model = bert.from_config(config)
    params, _ = from_torch_state_dict(model, torch_model, hf_models.IDS)
    report = compare(model, params, torch_model, hf_models.IDS)
    first = report.first
    assert (first.path, first.torch_path) == (
        "encoder/layer/0/intermediate/intermediate_act_fn",
        "encoder.layer.0.intermediate.intermediate_act_fn",
    )
    assert (first.layer, first.module) == ("Act", "GELUActivation")
    assert all(r.within for r in report.rows[: report.rows.index(first)])  # dense before it


# ---------------------------------------------------------------------------
# The mapping code of each port, counted where docs/porting.md quotes it.

MARKERS = re.compile(r"^# --- mapping ---\n(.*?)^# --- end of mapping ---$", re.M | re.S)
PORTS = ("gpt2", "bert", "llama", "vit", "resnet")


def mapping_lines(name: str, root: pathlib.Path = ROOT) -> list[str]:
    """The code lines between a port's mapping markers: blank and comment lines not counted."""
    source = (root / "examples" / "ports" / f"{name}.py").read_text()
    sections = MARKERS.findall(source)
    assert len(sections) == 1, f"{name}.py needs one mapping section between the markers"
    lines = [line.strip() for line in sections[0].splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_mapping_lines_are_counted_as_the_docs_quote_them():
    table = re.findall(
        r"^\| [^|]+ \| `examples/ports/(\w+)\.py` \|.*\| (\d+) \|$",
        (ROOT / "docs" / "porting.md").read_text(),
        re.M,
    )
    assert sorted(name for name, _ in table) == sorted(PORTS)
    assert {name: int(n) for name, n in table} == {n: len(mapping_lines(n)) for n in PORTS}


def test_no_port_transposes_or_renames_by_hand_and_gpt2_maps_in_5_lines_or_fewer():
    assert len(mapping_lines("gpt2")) <= 5
    for name in PORTS:
        code = " ".join(mapping_lines(name))
        assert not re.search(r"transpose|permute|\.T\b|rename", code), name


def test_mapping_lines_counts_code_not_comments(tmp_path):
    fake = tmp_path / "examples" / "ports"
    fake.mkdir(parents=True)
    (fake / "fake.py").write_text(
        "x = 1\n# --- mapping ---\n# a comment\n\nregister(a)(\n    b\n)\n# --- end of mapping ---\n"
    )
    assert mapping_lines("fake", tmp_path) == ["register(a)(", "b", ")"]
