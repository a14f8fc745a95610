"""Symbolic batch dimensions (``jax.export.symbolic_shape``) in dry_run, lazy_state and summary.

A normal model plans on a ``(b, 8)`` sample exactly the params a concrete sample gives;
a parameter whose shape depends on a symbolic dim (the classic lazy-module bug of a
batch-size-dependent spec) is refused naming the layer, the parameter and the dim.
"""

import jax
import jax.numpy as jnp
import pytest
from jax import export
from style_models import STYLES, styles

import lazyinit as li

(B,) = export.symbolic_shape("b")
SYMBOLIC = jax.ShapeDtypeStruct((B, 8), jnp.float32)
CONCRETE = jnp.ones((4, 8))


class PerExample(li.Layer):
    """A parameter per example of the batch: fine for one batch size, wrong for any other."""

    axis: int = 0

    def specs(self, x):
        return {"w": li.Param((x.shape[self.axis], x.shape[-1]), li.initializers.ones)}

    def __call__(self, params, x):
        return x * params["w"]


def shapes(tree):
    return jax.tree.map(lambda a: (tuple(a.shape), a.dtype), tree)


@pytest.mark.parametrize("style", STYLES)
def test_a_symbolic_batch_plans_the_concrete_dry_runs_params(style):
    model = styles()[style]
    planned = li.dry_run(model, jax.random.key(0), SYMBOLIC)
    assert all(isinstance(l, jax.ShapeDtypeStruct) for l in jax.tree.leaves(planned))
    concrete = li.dry_run(model, jax.random.key(0), CONCRETE)
    assert shapes(planned) == shapes(concrete)
    lazy = li.lazy_state(model, SYMBOLIC)
    assert jax.tree.map(
        lambda u: u.shape, lazy, is_leaf=lambda u: isinstance(u, li.Uninitialized)
    ) == (jax.tree.map(lambda a: tuple(a.shape), concrete))
    # the planned shapes then take a concrete batch of any size
    params = li.dry_run(model, jax.random.key(0), CONCRETE, state=lazy)
    assert model(params, jnp.ones((3, 8))).shape == (3, 4)


def test_summary_shows_the_symbolic_batch_and_counts_the_concrete_params():
    model = styles()["fields"]
    text = str(li.summary(model, SYMBOLIC))
    assert "float32[b,8]" in text and "float32[b,4]" in text
    assert str(li.summary(model, CONCRETE)).splitlines()[-1] == text.splitlines()[-1]


@pytest.mark.parametrize("style", STYLES)
def test_a_batch_dependent_spec_is_refused_naming_layer_param_and_dim(style):
    model = styles(body=PerExample())[style]
    li.dry_run(model, jax.random.key(0), CONCRETE)  # a concrete batch hides the bug
    with pytest.raises(
        li.errors.InvalidSpecError,
        match=r"Parameter 'body/w' of PerExample at 'body' has shape \(b, 8\), which depends "
        r"on the symbolic dimension\(s\) 'b' of the sample",
    ):
        li.dry_run(model, jax.random.key(0), SYMBOLIC)
    with pytest.raises(li.errors.InvalidSpecError, match=r"'body/w'.*'b'"):
        li.lazy_state(model, SYMBOLIC)
    with pytest.raises(li.errors.InvalidSpecError, match=r"'body/w'.*'b'"):
        li.summary(model, SYMBOLIC)


def test_only_the_dims_a_param_uses_are_named():
    b, t = export.symbolic_shape("b, t")
    model = li.Sequential([li.Linear(8), PerExample(axis=1)])  # per position
    with pytest.raises(
        li.errors.InvalidSpecError, match=r"'1/w'.*shape \(t, 8\).*dimension\(s\) 't' "
    ):
        li.dry_run(model, jax.random.key(0), jax.ShapeDtypeStruct((b, t, 3), jnp.float32))


def test_a_symbolic_feature_axis_is_refused_at_the_kernel():
    b, d = export.symbolic_shape("b, d")
    with pytest.raises(
        li.errors.InvalidSpecError, match=r"Parameter 'kernel' of Linear at '<root>'.*'d'"
    ):
        li.dry_run(li.Linear(4), jax.random.key(0), jax.ShapeDtypeStruct((b, d), jnp.float32))


def test_symbolic_and_concrete_samples_do_not_share_cached_traces():
    model = li.Sequential([li.Linear(8), li.nn.relu, li.Linear(2)])
    first = li.trace(model, SYMBOLIC).outputs
    assert str(first.shape) == "(b, 2)"
    assert li.trace(model, CONCRETE).outputs.shape == (4, 2)
    assert li.trace(model, SYMBOLIC).outputs.shape == first.shape


def test_a_decoder_plans_on_symbolic_batch_and_length_given_the_length_bound():
    from examples import models

    gpt = models.gpt_decoder(num_layers=2, d_model=16, num_heads=2, vocab=50, max_len=8)
    b, t = export.symbolic_shape("b, t", constraints=["t <= 8"])  # the model checks t <= max_len
    planned = li.dry_run(gpt, jax.random.key(0), jax.ShapeDtypeStruct((b, t), jnp.int32))
    concrete = li.dry_run(gpt, jax.random.key(0), jax.ShapeDtypeStruct((2, 8), jnp.int32))
    assert shapes(planned) == shapes(concrete)
    assert str(li.trace(gpt, jax.ShapeDtypeStruct((b, t), jnp.int32)).outputs.shape) == "(b, t, 50)"
