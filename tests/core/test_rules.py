"""The load rules' matrix: each rule, at each entry point that applies it, in one wording.

A ``li.Linear(4)`` on 3 input features needs ``kernel (3, 4)`` and ``bias (4,)``. Each
scenario breaks ``bias`` one way (another size, another dtype, absent, a placeholder) or adds
an unexpected ``scale``; each entry point gets that state in its own form (a state, a file, a
training checkpoint, a PyTorch state dict, flax variables, an nnx module, a call). Every line
it reports for the rule must read as that rule's one sentence, whatever the entry point: only
the key's name (another library's, with the layer it belongs to) and the remedy of a dtype
mismatch (which differs by entry point) may change.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import lazyinit as li
from lazyinit.interop.flax import from_flax_variables, update_nnx
from lazyinit.interop.torch import from_torch_state_dict

MODEL = li.Linear(4)
X = jnp.ones((2, 3))
NAME = r"'(?P<key>[^']+)'(?: \((?P<about>[^)]*)\))?"
RULES = {
    "size": rf"size mismatch for {NAME}: found shape \((?P<found>[^)]*)\), "
    r"expected \((?P<expected>[^)]*)\)(?P<hint>.*)",
    "dtype": rf"dtype mismatch for {NAME}: found (?P<found>\w+), expected (?P<expected>\w+) "
    r"\((?P<fix>.+)\)",
    "missing": rf"missing key {NAME}(?P<hint> \(did you mean '[^']+'\?\))?",
    "unexpected": rf"unexpected key {NAME}(?P<hint> \(did you mean '[^']+'\?\))?",
    "placeholder": rf"placeholder for {NAME}, where an array is needed: the incoming state has "
    r"no value for it \(dry-run the model with this state first, or load it into a lazy state\)",
}
# What each scenario's ``bias`` line must say, beyond its rule's sentence.
FACTS = {
    "size": {"found": "5,", "expected": "4,"},
    "dtype": {"found": "bfloat16", "expected": "float32"},
}


def _params(key=0):
    return li.dry_run(MODEL, jax.random.key(key), X)


def _state(rule: str) -> dict:
    p = _params(1)
    if rule == "size":
        return {**p, "bias": jnp.ones(5)}
    if rule == "dtype":
        return {**p, "bias": p["bias"].astype(jnp.bfloat16)}
    if rule == "missing":
        return {"kernel": p["kernel"]}
    if rule == "unexpected":
        return {**p, "scale": jnp.ones(4)}
    if rule == "placeholder":
        return {**p, "bias": li.Uninitialized((4,), "float32")}
    raise AssertionError(rule)


def _torchify(state: dict) -> dict:
    out = {}
    for name, value in state.items():
        array = np.asarray(value, np.float32) if name != "bias" else np.asarray(value)
        if name == "kernel":
            name, array = "weight", array.T
        out[name] = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32))
    return out


def _problems(call) -> tuple[str, ...]:
    with pytest.raises(li.errors.StateMismatchError) as info:
        call()
    assert info.value.problems, "a StateMismatchError without its lines"
    return info.value.problems


# Each entry point: rule -> the lines it reports, for the rules it applies.


def dry_run(rule, tmp_path):
    return _problems(lambda: li.dry_run(MODEL, jax.random.key(0), X, state=_state(rule)))


def load_state(rule, tmp_path):
    return _problems(lambda: li.load_state(_params(), _state(rule)))


def load(rule, tmp_path):
    path = tmp_path / "state.safetensors"
    li.save(path, _state(rule))
    return _problems(lambda: li.load(path, like=_params()))


def check_checkpoint(rule, tmp_path):
    path = tmp_path / "state.safetensors"
    li.save(path, _state(rule))
    report = li.check_checkpoint(path, _params())
    assert not report.ok
    return report.mismatched


def training_checkpoints(rule, tmp_path):
    with li.TrainingCheckpoints(tmp_path / "run") as ckpts:
        ckpts.save(0, _state(rule))
        return _problems(lambda: ckpts.restore(like=_params()))


def torch_state_dict(rule, tmp_path):
    return _problems(lambda: from_torch_state_dict(MODEL, _torchify(_state(rule)), X))


def flax_variables(rule, tmp_path):
    return _problems(lambda: from_flax_variables(MODEL, {"params": _state(rule)}, X))


def nnx_update(rule, tmp_path):
    return _problems(lambda: update_nnx(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), _state(rule)))


def call(rule, tmp_path):
    state = _state(rule)
    if rule == "unexpected":  # extra params alone are fine in a call: listed beside a problem
        state = {k: v for k, v in state.items() if k != "bias"}
    return _problems(lambda: MODEL(state, X))


MATRIX = {
    dry_run: ("size", "dtype", "unexpected"),  # a missing path is a hole the dry run draws
    load_state: ("size", "dtype", "missing", "unexpected", "placeholder"),
    load: ("size", "dtype", "missing", "unexpected", "placeholder"),
    check_checkpoint: ("size", "dtype", "placeholder"),  # missing, unexpected: report fields
    training_checkpoints: ("size", "dtype", "missing", "unexpected"),
    torch_state_dict: ("size", "missing", "unexpected"),  # any dtype converts
    flax_variables: ("size", "missing", "unexpected"),
    nnx_update: ("size", "missing", "unexpected"),
    call: ("size", "missing", "unexpected"),  # dtype: any floating one (mixed precision), below
}
CASES = [(entry, rule) for entry, rules in MATRIX.items() for rule in rules]


@pytest.mark.parametrize(("entry", "rule"), CASES, ids=[f"{e.__name__}-{r}" for e, r in CASES])
def test_each_rule_reads_the_same_at_each_entry_point(entry, rule, tmp_path):
    lines = entry(rule, tmp_path)
    own = [line for line in lines if re.fullmatch(RULES[rule], line)]
    assert own, f"no {rule!r} line among {lines}"
    names = {re.fullmatch(RULES[rule], line)["key"] for line in own}
    expected = {
        "unexpected": {"scale", "params/scale"},
        "missing": {"bias", "params/bias"},
    }.get(rule, {"bias", "params/bias"})
    assert names <= expected, names
    for line in own:
        match = re.fullmatch(RULES[rule], line)
        for fact, value in FACTS.get(rule, {}).items():
            assert match[fact] == value, line


class _Steps(li.Layer):
    """A layer with an int32 buffer: its dtype is fixed, whatever the call's policy."""

    def specs(self, x):
        return {"steps": li.Param((), li.initializers.zeros, dtype=jnp.int32, trainable=False)}

    def __call__(self, params, x):
        return x * params["steps"].astype(x.dtype)


def test_a_call_words_a_fixed_dtype_mismatch_as_the_rule_does():
    model = _Steps()
    params = li.dry_run(model, jax.random.key(0), X)
    lines = _problems(lambda: model({**params, "steps": params["steps"].astype("float32")}, X))
    assert re.fullmatch(RULES["dtype"], lines[0])
    assert lines[0].startswith("dtype mismatch for 'steps': found float32, expected int32")


def test_the_words_are_pinned_once():
    assert (
        li.errors.StateMismatchError("Cannot load the state", ["a", "b"], "Fix it.").args[0]
        == "Cannot load the state (2 problems); nothing was changed:\n  a\n  b\nFix it."
    )
    from lazyinit import _match

    assert _match.size_mismatch("'w'", (3, 4), (4, 3)) == (
        "size mismatch for 'w': found shape (3, 4), expected (4, 3)"
    )
    assert _match.dtype_mismatch("'w'", np.float64, "float32", "pass cast=True") == (
        "dtype mismatch for 'w': found float64, expected float32 (pass cast=True)"
    )
    assert (
        _match.missing_key("'w'", " (did you mean 'v'?)") == "missing key 'w' (did you mean 'v'?)"
    )
    assert _match.unexpected_key("'v'") == "unexpected key 'v'"
