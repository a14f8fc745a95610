"""Every function that needs a sample input and gets none says so in the same words: the layer,
then "Pass a sample as for li.dry_run:" and the call to write."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest
from style_models import STYLES, styles

import lazyinit as li

X = jnp.ones((4, 3))
KEY = jax.random.key(0)
SENTENCE = r"^(\w+) at '<root>' needs a sample input and got none"
FIX = "Pass a sample as for li.dry_run: "

# The call each function's message asks for: the function itself where it checks first, the
# dry run's for the functions that find out by tracing.
CALLS = {
    "dry_run": (lambda m, p: li.dry_run(m, KEY), "li.dry_run(model, key, x)"),
    "dry_run_with_report": (lambda m, p: li.dry_run_with_report(m, KEY), "li.dry_run("),
    "trace": (lambda m, p: li.trace(m), "li.dry_run("),
    "plan": (lambda m, p: li.plan(m), "li.dry_run("),
    "reinit": (lambda m, p: li.reinit(m, p, KEY, paths="head"), "li.dry_run("),
    "lazy_state with keywords only": (lambda m, p: li.lazy_state(m, train=False), "li.dry_run("),
    "summary": (lambda m, p: li.summary(m), "li.summary(model, x)"),
    "labels": (lambda m, p: li.labels(m, p, frozen="head"), "li.labels(model, params, x"),
    "lsuv": (lambda m, p: li.lsuv(m, p), "li.lsuv(model, params, x)"),
    "warmup_stats": (lambda m, p: li.warmup_stats(m, p, []), "li.warmup_stats(model, params, ["),
}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("function", sorted(CALLS))
def test_the_words_agree(function, style):
    model = styles()[style]
    params = li.dry_run(model, KEY, X)
    call, fix = CALLS[function]
    with pytest.raises(li.errors.InferShapeError, match=SENTENCE) as e:
        call(model, params)
    text = str(e.value)
    assert re.match(SENTENCE, text).group(1) == type(model).__name__
    assert FIX + fix in text
    assert "failed on inputs of shape" not in text


def test_keywords_without_an_array_are_named():
    with pytest.raises(li.errors.InferShapeError, match=re.escape("got none (only train=True)")):
        li.dry_run(styles()["fields"], KEY, train=True)


def test_a_layer_whose_specs_need_the_input_is_named():
    """No ``__call__`` argument is missing here: ``Linear.specs(x)`` is the one that needs it."""
    with pytest.raises(li.errors.InferShapeError, match=SENTENCE.replace(r"(\w+)", "Linear")):
        li.dry_run(li.Linear(3), KEY)


@pytest.mark.parametrize("kind", ["flax", "nnx"])
def test_a_wrapped_module_is_named(kind):
    from lazyinit.interop.flax import FlaxModule, NnxModule

    if kind == "flax":
        import flax.linen as fnn

        model = FlaxModule(fnn.Dense(4))
    else:
        from flax import nnx

        model = NnxModule(lambda rngs, x: nnx.Linear(x.shape[-1], 4, rngs=rngs))
    name = type(model).__name__
    with pytest.raises(li.errors.InferShapeError, match=SENTENCE.replace(r"(\w+)", name)):
        li.dry_run(model, KEY)


def test_a_model_that_takes_no_input_needs_no_sample():
    class Table(li.Layer):
        def specs(self):
            return {"table": li.Param((2, 3), jax.nn.initializers.ones)}

        def __call__(self, params):
            return params["table"]

    params = li.dry_run(Table(), KEY)
    assert Table()(params).shape == (2, 3)


def test_a_child_called_without_its_input_is_not_a_missing_sample():
    """The sample was given; a layer of the model forgot to pass it on: the located error."""

    class Forgets(li.Layer):
        fc: li.Layer = li.Linear(2)

        def __call__(self, params, x):
            return self.fc(params["fc"])

    with pytest.raises(li.errors.InferShapeError, match=r"^Linear at 'fc' failed on inputs"):
        li.dry_run(Forgets(), KEY, X)
