"""Bad input to the layers: each error names the layer path and the numbers, and says what to do."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

import lazyinit as li


def ones(*shape, dtype=jnp.float32):
    return jnp.ones(shape, dtype)


def dry(model, *inputs, **kwargs):
    return li.dry_run(model, jax.random.key(0), *inputs, **kwargs)


# ---------------------------------------------------------------------------
# Options that cannot work are refused when the layer is built.


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: li.Conv(6, 3, groups=4), "Conv: groups=4 does not divide out_channels=6"),
        (lambda: li.Conv(4, 0), r"Conv: `kernel_size`=0 must be a positive int or a tuple"),
        (lambda: li.Conv(4, (3, -1)), r"`kernel_size`=\(3, -1\) must be a positive int"),
        (lambda: li.Conv(4, 3, padding="full"), "`padding`='full' must be 'SAME', 'VALID'"),
        (lambda: li.Conv(4, 3, padding=(1, (2, 3, 4))), r"one int or \(low, high\) pair"),
        (
            lambda: li.ConvTranspose(4, 3, padding="SAME", output_padding=1),
            "output_padding=1 needs integer padding, got padding='SAME'",
        ),
        (
            lambda: li.ConvTranspose(4, 3, stride=2, output_padding=2),
            r"output_padding=2 must be smaller than stride or dilation \(here 2 and 1\)",
        ),
        (lambda: li.ConvTranspose(4, 3, output_padding=-1), "`output_padding`=-1 must be a non"),
        (lambda: li.Conv(4, 3, padding_mode="mirror"), "`padding_mode`='mirror' must be one of"),
        (lambda: li.MaxPool(0), "MaxPool: `window`=0 must be a positive int"),
        (lambda: li.AvgPool(2, padding=-1), "AvgPool: `padding`=-1 must be"),
        (
            lambda: li.MultiHeadAttention(3, qkv_features=8),
            "num_heads=3 does not divide qkv_features=8. Choose qkv_features a multiple",
        ),
        (lambda: li.MultiHeadAttention(0), "`num_heads`=0 must be a positive int"),
        (
            lambda: li.MultiHeadAttention(4, num_kv_heads=3),
            r"`num_kv_heads`=3 must be a positive int that divides num_heads=4 \(each key/value",
        ),
        (lambda: li.GroupNorm(0), "GroupNorm: `num_groups`=0 must be a positive int"),
        (lambda: li.Dropout(1.5), r"Dropout: `rate`=1.5 must lie in \[0, 1\]"),
    ],
)
def test_impossible_options_are_refused_when_built(build, match):
    with pytest.raises(li.errors.ConfigureLayerError, match=match):
        build()


def test_residual_wraps_a_layer():
    with pytest.raises(
        li.errors.ConfigureLayerError, match="Residual wraps a li.Layer .* got 'relu'"
    ):
        li.Residual("relu")


# ---------------------------------------------------------------------------
# Inputs a layer cannot take: found by the dry run, with the layer's path.


def test_groups_not_dividing_the_input_channels():
    model = li.Sequential([li.Conv(4, (3, 3), groups=2)])
    with pytest.raises(li.errors.InferShapeError) as e:
        dry(model, ones(2, 5, 5, 3))
    assert str(e.value).startswith(
        "Conv at '0': groups=2 does not divide the input channels (3); input shape (2, 5, 5, 3). "
        "Choose groups dividing 3. lazyinit layers are channels-last"
    )


def test_kernel_larger_than_the_padded_input_hints_at_the_channel_axis():
    """PyTorch-layout data (N, C, H, W) fed to a channels-last conv: H=3 is taken as spatial."""
    model = li.Sequential([li.Conv(8, (5, 5))])
    expected = (
        "Conv at '0': the dilated kernel (5 along spatial dim 0) is larger than the padded input "
        "(3 + 0 + 0 = 3); input shape (2, 3, 32, 32), spatial shape (3, 32). Use a smaller "
        "kernel_size or dilation, more padding or padding='SAME'."
    )
    with pytest.raises(li.errors.InferShapeError, match=re.escape(expected)) as e:
        dry(model, ones(2, 3, 32, 32))
    assert "for PyTorch's (N, C, ...) layout pass channels_first=True" in str(e.value)
    with pytest.raises(
        li.errors.InferShapeError, match=r"the dilated kernel \(9 along spatial dim 1\)"
    ):
        dry(li.Conv(2, (1, 5), dilation=2), ones(1, 9, 8, 1))


def test_wrong_channel_axis_with_loaded_params_is_a_size_mismatch():
    """Params made for 3 channels-last channels; the same images given channels-first."""
    model = li.Sequential([li.Conv(8, (3, 3), padding=1), li.BatchNorm()])
    params = dry(model, ones(2, 16, 16, 3))
    with pytest.raises(
        li.errors.StateMismatchError,
        match=re.escape(
            "size mismatch for '0/kernel': found shape (3, 3, 3, 8), expected (3, 3, 16, 8)"
        ),  # fmt: skip
    ):
        dry(model, ones(2, 3, 16, 16), state=params)


def test_wrong_rank():
    with pytest.raises(
        li.errors.InferShapeError,
        match=re.escape(
            "Conv at '<root>': Conv with kernel_size (3, 3) expects inputs of rank 4 "
            "(N, *spatial, C), got shape (5, 5, 3)."
        ),
    ):
        dry(li.Conv(4, (3, 3)), ones(5, 5, 3))
    with pytest.raises(li.errors.InferShapeError, match=r"rank 3-5, got shape \(5, 3\)"):
        dry(li.MaxPool(2), ones(5, 3))
    with pytest.raises(
        li.errors.InferShapeError, match=r"InstanceNorm expects inputs with at least 3"
    ):
        dry(li.InstanceNorm(), ones(4, 3))


def test_heads_not_dividing_the_features():
    model = li.Sequential([li.MultiHeadAttention(3)])
    with pytest.raises(
        li.errors.InferShapeError,
        match=re.escape(
            "MultiHeadAttention at '0': num_heads=3 does not divide the query features (8); "
            "input shape (2, 4, 8). Choose num_heads dividing 8."
        ),
    ):
        dry(model, ones(2, 4, 8))
    with pytest.raises(
        li.errors.InferShapeError, match=r"even head_dim, got 6 features / 2 heads = 3"
    ):
        dry(li.MultiHeadAttention(2, rotary=True), ones(1, 3, 6))


def test_group_norm_groups_not_dividing_channels():
    with pytest.raises(
        li.errors.InferShapeError, match=re.escape("num_groups=4 does not divide the channels (6)")
    ):
        dry(li.GroupNorm(4), ones(2, 3, 6))


def test_pool_window_larger_than_input():
    with pytest.raises(
        li.errors.InferShapeError, match=re.escape("the window (4 along spatial dim 1)")
    ):
        dry(li.MaxPool((2, 4)), ones(1, 4, 3, 2))


def test_conv_transpose_cropping_everything():
    with pytest.raises(
        li.errors.InferShapeError, match=re.escape("padding 5 crops more than the whole output")
    ):
        dry(li.ConvTranspose(2, 3, padding=5), ones(1, 2, 2, 1))


def test_padding_entries_must_match_the_spatial_dims():
    with pytest.raises(
        li.errors.ConfigureLayerError, match=re.escape("has 3 entries for 2 spatial")
    ):
        dry(li.Conv(2, (3, 3), padding=(1, 1, 1)), ones(1, 5, 5, 1))


def test_embedding_takes_integer_ids():
    with pytest.raises(
        li.errors.InferShapeError,
        match=re.escape("Embedding takes integer ids, got float32 input of shape (2, 3)"),
    ):
        dry(li.Embedding(10, 4), ones(2, 3))


def test_residual_needs_matching_shapes():
    with pytest.raises(
        li.errors.InferShapeError, match=re.escape("the wrapped layer maps shape (2, 4) to (2, 3)")
    ):
        dry(li.Residual(li.Linear(3)), ones(2, 4))


def test_flatten_axes_outside_the_input():
    with pytest.raises(li.errors.InferShapeError, match=re.escape("both must lie in [-2, 2)")):
        dry(li.Flatten(1, 3), ones(2, 3))


# ---------------------------------------------------------------------------
# Call-time state and randomness.


def test_dropout_in_training_needs_a_key():
    model = li.Sequential([li.Linear(4), li.Dropout(0.1)])
    params = dry(model, ones(2, 3))
    with pytest.raises(li.errors.InvalidArgumentError, match=r"train=True but no key\. Pass key="):
        model(params, ones(2, 3), train=True)
    assert isinstance(li.errors.InvalidArgumentError("x"), TypeError)


def test_batch_norm_training_outside_a_mutable_apply():
    params = dry(li.BatchNorm(), ones(4, 3))
    with pytest.raises(li.errors.UpdateBuffersError, match="outside a mutable call"):
        li.BatchNorm()(params, ones(4, 3), train=True)
