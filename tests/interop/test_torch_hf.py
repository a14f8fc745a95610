"""Hugging Face models (tiny configs, random weights, nothing downloaded): Conv1D by its module
type, GPT-2's tied head and packed attention from a state dict. The ports themselves, and
compare on broken ones, are tests/interop/test_ports.py's."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hf_models import IDS, gpt2, gpt2_config, output
from transformers.pytorch_utils import Conv1D

import lazyinit as li
from examples.ports import gpt2 as gpt2_port
from lazyinit.interop.torch import from_torch_state_dict, to_torch_state_dict


def port():
    return gpt2_port.from_config(gpt2_config())


def logits(module):
    return output(module, IDS)


def _np(t):
    return t.detach().numpy()


@pytest.fixture(scope="module")
def torch_gpt2():
    return gpt2()


def test_a_square_conv1d_loads_by_its_module_type_not_transposed():
    """It loaded silently transposed, even from the module itself (outputs off by 0.7)."""
    torch.manual_seed(0)
    conv = Conv1D(8, 8)  # nf=8, nx=8: weight (in, out), square
    torch.nn.init.normal_(conv.bias)
    layer = li.Linear(8)
    params, _ = from_torch_state_dict(layer, conv, jnp.ones((1, 8)))
    x = torch.randn(3, 8)
    with torch.no_grad():
        np.testing.assert_allclose(
            layer(params, jnp.asarray(_np(x))), _np(conv(x)), rtol=1e-5, atol=1e-6
        )
    state = to_torch_state_dict(layer, params, module=conv)
    assert torch.equal(state["weight"], conv.weight)


def test_a_conv1d_state_dict_gets_a_hint_naming_the_layout_and_how_to_declare_it():
    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(Conv1D(12, 8))  # weight (8, 12): (in, out)
    model = li.Sequential([li.Linear(12)])
    state = torch_model.state_dict()
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"size mismatch for '0\.weight' \(Linear at '0', parameter '0/kernel'\): found shape "
        r"\(8, 12\), expected \(12, 8\) \(the transpose: PyTorch's nn\.Linear stores it \(out, in\), "
        r"lazyinit \(in, out\); a Hugging Face Conv1D stores \(in, out\): if that is what this "
        r"module is, pass the torch module, or declare it: layouts=\{'0': 'conv1d'\}",
    ):
        from_torch_state_dict(model, state, jnp.ones((1, 8)))
    params, _ = from_torch_state_dict(model, state, jnp.ones((1, 8)), layouts={"0": "conv1d"})
    x = torch.randn(2, 8)
    with torch.no_grad():
        np.testing.assert_allclose(
            model(params, jnp.asarray(_np(x))), _np(torch_model(x)), atol=1e-5
        )
    back = to_torch_state_dict(model, params, layouts={"0": "conv1d"})
    assert torch.equal(back["0.weight"], state["0.weight"])


def test_square_weights_beside_transposed_ones_are_named_as_undecidable():
    torch_model = torch.nn.Sequential(Conv1D(12, 8), torch.nn.Tanh(), Conv1D(12, 12))
    model = li.Sequential([li.Linear(12), li.nn.tanh, li.Linear(12)])
    with pytest.raises(
        li.errors.StateMismatchError,
        match=r"the Linear layers '2' have square weights, whose shapes cannot tell nn\.Linear's "
        r"\(out, in\) from Conv1D's \(in, out\).*layouts=\{'0': 'conv1d', '2': 'conv1d'\}",
    ):
        from_torch_state_dict(model, torch_model.state_dict(), jnp.ones((1, 8)))


def test_a_gpt2_state_dict_names_the_tie_of_lm_head_and_loads_with_ties(torch_gpt2):
    state = torch_gpt2.state_dict()
    layouts = {"transformer/h/attn": "GPT2Attention", "transformer/h/mlp": "conv1d"}
    with pytest.raises(li.errors.StateMismatchError) as info:
        from_torch_state_dict(port(), state, IDS, layouts=layouts)
    assert list(info.value.problems) == [
        "unexpected key 'lm_head.weight'",
        "'lm_head.weight' holds the same values as 'transformer.wte.weight': if they are tied "
        "(one tensor under two names, as a language model's output layer and its embedding), "
        "pass ties={'lm_head.weight': 'transformer.wte.weight'}, or the PyTorch module itself, "
        "whose ties are found",
    ]
    ties = {"lm_head.weight": "transformer.wte.weight"}
    params, report = from_torch_state_dict(port(), state, IDS, layouts=layouts, ties=ties)
    assert report.tied == ("lm_head.weight",)
    np.testing.assert_allclose(port()(params, IDS), logits(torch_gpt2), rtol=1e-5, atol=1e-5)
    back = to_torch_state_dict(port(), params, layouts=layouts, ties=ties)
    gpt2().load_state_dict(back, strict=True)


def test_a_missing_packed_projection_is_paired_with_the_one_that_fits(torch_gpt2):
    """``in_proj_weight`` was paired with ``c_proj.weight``, the closer spelling."""
    with pytest.raises(li.errors.StateMismatchError) as info:
        from_torch_state_dict(port(), torch_gpt2.state_dict(), IDS)
    message = str(info.value)
    assert (
        "missing key 'transformer.h.0.attn.in_proj_weight' (MultiHeadAttention at "
        "'transformer/h/attn', parameter 'transformer/h/attn/query/kernel', "
        "'transformer/h/attn/key/kernel', 'transformer/h/attn/value/kernel') "
        "(did you mean 'transformer.h.0.attn.c_attn.weight'?)" in message
    )
    assert "(did you mean 'transformer.h.0.attn.c_attn.bias'?)" in message
    assert "in_proj_weight' (did you mean 'transformer.h.0.attn.c_proj" not in message
