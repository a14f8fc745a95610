"""examples/models.py: the reference models have the sizes they claim, logical axes, and run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyinit as li
from examples import models

AXES = {"embed", "mlp", "heads", "kv", "vocab", None}


def count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "build,sample,total,trainable",
    [
        (models.mlp, ((8, 784), jnp.float32), 669_706, 669_706),
        # ResNet-18's buffers: running mean and var (9,600) and each BatchNorm's count (20), as in torch
        (models.resnet_cnn, ((8, 32, 32, 3), jnp.float32), 11_183_582, 11_173_962),
        (models.gpt_decoder, ((2, 1024), jnp.int32), 124_439_808, 124_439_808),
        (lambda: models.gpt_decoder(tie_head=False), ((2, 1024), jnp.int32), 163_037_184, None),
        (models.llama_decoder, ((1, 2048), jnp.int32), 6_738_415_616, 6_738_415_616),
    ],
    ids=["mlp", "resnet18", "gpt2-small", "gpt2-untied", "llama-7b"],
)
def test_full_size_models_plan_abstractly(build, sample, total, trainable):
    """Abstract dry runs: the published parameter counts, without allocating anything."""
    model = build()
    t = li.trace(model, jax.ShapeDtypeStruct(*sample))
    assert sum(int(np.prod(p.shape)) for p in t.params.values()) == total
    if trainable is not None:
        assert sum(int(np.prod(p.shape)) for p in t.params.values() if p.trainable) == trainable
    for path, param in t.params.items():
        assert param.axes is not None and set(param.axes) <= AXES, (path, param.axes)


def test_decoder_axes_name_the_sharded_dimensions():
    specs = li.trace(models.gpt_decoder(2, 16, 2, 50, 8), jnp.zeros((1, 8), jnp.int32)).params
    assert specs[("embed", "embedding")].axes == ("vocab", "embed")
    assert specs[("blocks", "1", "attn", "query", "kernel")].axes == ("embed", "heads", "kv")
    assert specs[("blocks", "1", "attn", "out", "kernel")].axes == ("heads", "kv", "embed")
    assert specs[("blocks", "0", "mlp", "0", "kernel")].axes == ("embed", "mlp")
    assert specs[("blocks", "0", "mlp", "2", "kernel")].axes == ("mlp", "embed")
    assert ("head", "kernel") not in specs  # tied to the token embedding


@pytest.mark.parametrize(
    "build",
    [
        lambda: models.gpt_decoder(2, 16, 2, 50, 8, dropout=0.1),
        lambda: models.gpt_decoder(1, 16, 4, 50, 8, tie_head=False),
        lambda: models.llama_decoder(2, 16, 2, 24, 50),
        lambda: models.llama_decoder(1, 16, 2, 24, 50, rotary=False),
    ],
    ids=["gpt", "gpt-untied", "llama", "llama-no-rotary"],
)
def test_small_decoders_are_causal(build):
    model = build()
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 50, (2, 8)), jnp.int32)
    params = li.dry_run(model, jax.random.key(0), ids)
    trainable, buffers = li.partition(model, params)  # attention's shapes need no sample either
    assert count(buffers) == 0 and count(trainable) == count(params)
    apply = jax.jit(model)  # one compilation instead of one per operation
    logits = apply(params, ids)
    assert logits.shape == (2, 8, 50)
    changed = apply(params, ids.at[:, 5].set((ids[:, 5] + 1) % 50))
    np.testing.assert_allclose(changed[:, :5], logits[:, :5], rtol=1e-5, atol=1e-6)
    assert not np.allclose(changed[:, 5:], logits[:, 5:])
    out = jax.jit(lambda p, i, k: model(p, i, train=True, key=k))(params, ids, jax.random.key(1))
    assert out.shape == logits.shape


def test_gpt_refuses_sequences_longer_than_its_positions():
    model = models.gpt_decoder(1, 16, 2, 50, max_len=4)
    with pytest.raises(li.errors.InferShapeError, match="sequences of 6 tokens exceed max_len=4"):
        li.dry_run(model, jax.random.key(0), jnp.zeros((1, 6), jnp.int32))


def test_small_resnet_and_mlp_run():
    resnet = models.resnet_cnn(num_classes=3, widths=(4, 8), blocks_per_stage=1)
    images = jnp.ones((2, 8, 8, 3))
    params = li.dry_run(resnet, jax.random.key(0), images)
    trainable, buffers = li.partition(resnet, params)  # no sample needed: kernels are tuples
    assert count(buffers) == 2 * (4 + 4 * 2 + 8 * 3) + 6  # mean and var, and 6 counts
    train = jax.jit(lambda p, x: li.apply(resnet, p, x, train=True, mutable=True))
    out, updates = train(params, images)
    assert out.shape == (2, 3)
    assert shapes_of(updates["4"]) == {
        "main": {
            "1": {"mean": (8,), "var": (8,), "count": ()},
            "4": {"mean": (8,), "var": (8,), "count": ()},
        },
        "shortcut": {"1": {"mean": (8,), "var": (8,), "count": ()}},
    }
    mlp = models.mlp()
    assert mlp(li.dry_run(mlp, jax.random.key(0), jnp.ones((2, 28, 28))), jnp.ones((2, 784))).shape == (2, 10)  # fmt: skip


def shapes_of(tree):
    return jax.tree.map(lambda a: tuple(a.shape), tree)


def test_module_docstring_example_runs():
    import doctest

    result = doctest.testmod(models, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
