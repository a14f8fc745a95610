"""Data-dependent init after the dry run.

li.lsuv: each layer's output has unit variance (within 5%) on the batch, checked on
outputs computed by hand; deterministic; one compiled function per layer; placeholders
refused. li.warmup_stats: running statistics equal a hand computation from the batches;
trainable parameters are the same objects.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from style_models import STYLES, by_hand, styles

import lazyinit as li
from lazyinit.nn import _lsuv

X = jax.random.normal(jax.random.key(7), (64, 8)) * 3.0 + 1.0
BATCHES = [jax.random.uniform(jax.random.key(i), (16, 8)) * (i + 1) for i in range(3)]


def flat(tree):
    return {"/".join(k.key for k in path): v for path, v in jax.tree.leaves_with_path(tree)}


@pytest.mark.parametrize("style", STYLES)
def test_lsuv_gives_each_layer_unit_output_variance_on_the_batch(style):
    model = styles()[style]
    params = li.dry_run(model, jax.random.key(0), X)
    before = by_hand(params, X)
    assert abs(float(jnp.var(before["body"])) - 1) > 0.5  # not unit before
    new = li.lsuv(model, params, X)
    outputs = by_hand(new, X)
    for layer in ("body", "head"):
        assert abs(float(jnp.var(outputs[layer])) - 1) <= 0.05, layer
    np.testing.assert_allclose(model(new, X), outputs["head"], rtol=1e-5, atol=1e-6)
    for p, v in flat(params).items():  # only the kernels were rescaled
        if not p.endswith("kernel"):
            assert flat(new)[p] is v, p


def test_lsuv_on_a_conv_net_gives_each_conv_and_linear_unit_variance():
    model = li.Sequential(
        [
            li.Conv(8, (3, 3), padding=1),
            li.BatchNorm(),
            li.nn.relu,
            li.Conv(8, (3, 3), padding=1),
            li.nn.relu,
            li.Flatten(),
            li.Linear(5),
        ]
    )
    x = jax.random.uniform(jax.random.key(3), (32, 8, 8, 1))
    params = li.lsuv(model, li.dry_run(model, jax.random.key(0), x), x)
    for k in (0, 3, 6):  # layer k's output: the output of the model's first k + 1 layers
        prefix = li.Sequential(model.layers[: k + 1])
        sub = {str(i): params[str(i)] for i in range(k + 1) if str(i) in params}
        assert abs(float(jnp.var(prefix(sub, x))) - 1) <= 0.05, k


def test_lsuv_is_deterministic_and_pure():
    model = styles()["fields"]
    params = li.dry_run(model, jax.random.key(0), X)
    kernel = params["body"]["kernel"]
    a, b = li.lsuv(model, params, X), li.lsuv(model, params, X)
    for p, v in flat(a).items():
        np.testing.assert_array_equal(v, flat(b)[p])
    assert params["body"]["kernel"] is kernel


def test_lsuv_traces_one_compiled_function_per_layer(monkeypatch):
    model = styles()["inline"]
    params = li.dry_run(model, jax.random.key(0), X)
    traced = []
    real = _lsuv._output_of
    monkeypatch.setattr(
        _lsuv, "_output_of", lambda *a: traced.append(a[4]) or real(*a)
    )  # runs only while jax.jit traces
    li.lsuv(model, params, X, tol=1e-4)
    assert traced == [("body",), ("head",)]  # in call order; reused by every rescaling


def test_lsuv_rescales_only_the_layers_under_paths():
    model = styles()["fields"]
    params = li.dry_run(model, jax.random.key(0), X)
    new = li.lsuv(model, params, X, paths="head")
    assert new["body"]["kernel"] is params["body"]["kernel"]
    assert abs(float(jnp.var(by_hand(new, X)["head"])) - 1) <= 0.05
    with pytest.raises(li.errors.InvalidArgumentError, match=r"'haed' match no parameter"):
        li.lsuv(model, params, X, paths="haed")


def test_lsuv_passes_call_keywords_and_takes_a_target():
    model = styles()["wrapper"]
    params = li.dry_run(model, jax.random.key(0), X)
    new = li.lsuv(model, params, X, train=False, target=4.0)
    assert abs(float(jnp.var(by_hand(new, X)["body"])) / 4 - 1) <= 0.05


@pytest.mark.parametrize("style", STYLES)
def test_lsuv_and_warmup_refuse_placeholders_clearly(style):
    model = styles()[style]
    for state in (li.lazy_state(model), li.lazy_state(model, X)):
        with pytest.raises(
            li.errors.UninitializedParamError, match=r"li.lsuv computes on the param.*li.dry_run"
        ):
            li.lsuv(model, state, X)
        with pytest.raises(
            li.errors.UninitializedParamError, match=r"li.warmup_stats computes on.*li.dry_run"
        ):
            li.warmup_stats(model, state, BATCHES)
    abstract = li.dry_run(model, jax.random.key(0), jax.ShapeDtypeStruct(X.shape, X.dtype))
    with pytest.raises(
        li.errors.UninitializedParamError, match=r"'?body/kernel'?.*ShapeDtypeStructs"
    ):
        li.lsuv(model, abstract, X)


def test_lsuv_refuses_a_constant_output_naming_the_layer():
    model = styles()["fields"]
    params = li.dry_run(model, jax.random.key(0), X)
    with pytest.raises(
        li.errors.RescaleLayerError, match=r"output of Linear at 'body' has variance 0.0.*paths="
    ):
        li.lsuv(model, params, jnp.zeros_like(X))


def test_lsuv_says_when_it_does_not_converge():
    model = li.Sequential([li.Linear(4, bias_init=li.initializers.normal(10.0))])
    params = li.dry_run(model, jax.random.key(0), X)
    with pytest.raises(
        li.errors.RescaleLayerError, match=r"Linear at '0' still has variance .* after 1 "
    ):
        li.lsuv(model, params, X, max_iters=1, tol=1e-6)


def test_lsuv_refuses_layers_called_on_a_slice_of_their_params():
    model = li.Sequential([li.Linear(8), li.Repeat(li.Sequential([li.Linear(8), li.nn.tanh]), 2)])
    params = li.dry_run(model, jax.random.key(0), X)
    with pytest.raises(
        li.errors.RescaleLayerError, match=r"output of Linear at '1/0'.*inside li.Repeat"
    ):
        li.lsuv(model, params, X)


def hand_stats(batches, kernel, bias):
    """Mean and unbiased variance of each batch's Linear output, averaged over batches."""
    outs = [np.asarray(b) @ np.asarray(kernel) + np.asarray(bias)[None] for b in batches]
    mean = np.mean([o.mean(0) for o in outs], 0)
    var = np.mean([o.var(0, ddof=1) for o in outs], 0)
    return mean, var


@pytest.mark.parametrize("style", STYLES)
def test_warmup_stats_equal_a_hand_computation_and_keep_trainable_params(style):
    model = styles()[style]
    params = li.dry_run(model, jax.random.key(0), X)
    new = li.warmup_stats(model, params, BATCHES)
    mean, var = hand_stats(BATCHES, params["body"]["kernel"], params["body"]["bias"])
    np.testing.assert_allclose(new["norm"]["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["norm"]["var"], var, rtol=1e-5, atol=1e-6)
    assert int(new["norm"]["count"]) == len(BATCHES)  # as PyTorch's update_bn counts them
    for p, v in flat(params).items():
        if p not in ("norm/mean", "norm/var", "norm/count"):
            assert flat(new)[p] is v, p


def test_warmup_stats_cumulative_batchnorm_counts_the_batches():
    model = li.Sequential([li.Linear(16), li.BatchNorm(momentum=None)])
    params = li.dry_run(model, jax.random.key(0), X)
    new = li.warmup_stats(model, params, [(b,) for b in BATCHES])
    mean, var = hand_stats(BATCHES, params["0"]["kernel"], params["0"]["bias"])
    np.testing.assert_allclose(new["1"]["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["1"]["var"], var, rtol=1e-5, atol=1e-6)
    assert new["1"]["count"].dtype == jnp.float32 and int(new["1"]["count"]) == 3


def test_warmup_stats_instance_norm_averages_per_sample_statistics():
    model = li.InstanceNorm(track_running_stats=True, affine=True)
    batches = [jax.random.normal(jax.random.key(i), (3, 10, 4)) * (i + 1) for i in range(2)]
    params = li.dry_run(model, jax.random.key(0), batches[0])
    new = li.warmup_stats(model, params, batches)
    mean = np.mean([np.asarray(b).mean(1).mean(0) for b in batches], 0)
    var = np.mean([np.asarray(b).var(1, ddof=1).mean(0) for b in batches], 0)
    np.testing.assert_allclose(new["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["var"], var, rtol=1e-5, atol=1e-6)
    assert new["scale"] is params["scale"]


def test_warmup_stats_refusals():
    model = styles()["fields"]
    params = li.dry_run(model, jax.random.key(0), X)
    with pytest.raises(li.errors.InferShapeError, match="at least one batch of data"):
        li.warmup_stats(model, params, [])
    abstract = jax.ShapeDtypeStruct(X.shape, X.dtype)
    with pytest.raises(
        li.errors.InvalidArgumentError, match=r"batches of data \(arrays, not jax.Shape"
    ):
        li.warmup_stats(model, params, [abstract])
    with pytest.raises(
        li.errors.InvalidArgumentError, match=r"li.lsuv needs a batch of data \(arrays"
    ):
        li.lsuv(model, params, abstract)
    plain = li.Linear(3)
    with pytest.raises(
        li.errors.InvalidArgumentError, match="Linear has no BatchNorm or InstanceNorm"
    ):
        li.warmup_stats(plain, li.dry_run(plain, jax.random.key(0), X), BATCHES)
