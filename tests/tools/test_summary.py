"""``li.summary`` and ``li.describe``: contents, totals, statuses, renderings, and no allocation."""

import gc
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rich.console

import lazyinit as li

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Block(li.Layer):
    fc1: li.Layer = li.Linear(6)
    fc2: li.Layer = li.Linear(3)

    def __call__(self, params, x):
        return self.fc2(params["fc2"], jax.nn.relu(self.fc1(params["fc1"], x)))


class Stats(li.Layer):
    """A leaf with a trainable scale and a non-trainable buffer."""

    def specs(self, x):
        n = x.shape[-1]
        return {
            "scale": li.Param((n,), jax.nn.initializers.ones),
            "count": li.Param((n,), jax.nn.initializers.zeros, trainable=False),
        }

    def __call__(self, params, x):
        return x * params["scale"][None, :]


class Twice(li.Layer):
    """Calls one child twice with one sub-dict: shared weights."""

    fc: li.Layer = li.Linear(4)

    def __call__(self, params, x):
        return self.fc(params["fc"], self.fc(params["fc"], x))


def model():
    return li.Sequential([Block(), li.nn.relu, Stats(), li.Linear(2)])


X = jax.ShapeDtypeStruct((8, 5), jnp.float32)


def sizes(tree):
    return [int(np.prod(a.shape)) for a in jax.tree.leaves(tree)]


def test_rows_name_each_layer_call_with_its_type_and_shapes():
    s = li.summary(model(), X)
    got = [("/".join(r.path), type(r.layer).__name__) for r in s.rows]
    assert got == [
        ("", "Sequential"),
        ("0", "Block"),
        ("0/fc1", "Linear"),
        ("0/fc2", "Linear"),
        ("2", "Stats"),
        ("3", "Linear"),
    ]
    fc1 = s.rows[2]
    assert fc1.inputs[0][0].shape == (8, 5) and fc1.outputs.shape == (8, 6)
    assert [(p.path, p.shape) for p in fc1.params] == [
        (("0", "fc1", "kernel"), (5, 6)),
        (("0", "fc1", "bias"), (6,)),
    ]


def test_counts_bytes_and_totals_match_the_params_of_a_dry_run(key):
    m = model()
    params = li.dry_run(m, key, jnp.ones((8, 5)))
    s = li.summary(m, X)
    assert s.total_params == sum(sizes(params)) == 5 * 6 + 6 + 6 * 3 + 3 + 3 + 3 + 3 * 2 + 2
    assert s.total_bytes == sum(a.nbytes for a in jax.tree.leaves(params))
    assert s.trainable_params == s.total_params - 3
    assert len(s.params) == len(jax.tree.leaves(params))
    for row in s.rows:
        sub = params
        for k in row.path:
            sub = sub[k]
        own = {k: v for k, v in sub.items() if not isinstance(v, dict)}
        assert row.count == sum(sizes(own))
    assert sum(r.count for r in s.rows) == s.total_params
    assert s.caption()[0] == "71 parameters in 8 arrays, 284 B; 68 trainable, 3 non-trainable"


def test_dtype_choice_and_the_params_dtypes_decide_the_bytes(key):
    m = model()
    assert li.summary(m, X, dtype="bfloat16").total_bytes == li.summary(m, X).total_bytes // 2
    mixed = li.summary(m, X, dtype={"*": "float32", "0": "bfloat16"})
    assert mixed.params[("0", "fc1", "kernel")].dtype == jnp.bfloat16
    assert mixed.params[("3", "kernel")].dtype == jnp.float32
    params = li.dry_run(m, key, jnp.ones((8, 5)), dtype="bfloat16")
    assert li.summary(m, X, params=params).total_bytes == li.summary(m, X).total_bytes // 2


def test_depth_rolls_hidden_layers_into_their_shown_ancestor():
    s = li.summary(model(), X, depth=1)
    assert [r.path for r in s.rows] == [(), ("0",), ("2",), ("3",)]
    block = s.rows[1]
    assert block.count == 5 * 6 + 6 + 6 * 3 + 3 and block.below == 4
    assert "4 arrays in layers below" in str(s)
    assert li.summary(model(), X, depth=0).rows[0].count == s.total_params


def test_shared_weights_count_once():
    s = li.summary(Twice(), jax.ShapeDtypeStruct((2, 4), jnp.float32))
    assert s.total_params == 4 * 4 + 4
    assert [r.shared for r in s.rows] == [False, False, True]
    assert "(shares the params above)" in str(s)


def test_status_of_each_parameter(key):
    m = model()
    x = jnp.ones((8, 5))
    assert li.summary(m, X).with_status is False
    lazy = li.lazy_state(m)
    assert li.summary(m, X, params=lazy).counts() == {"uninitialized": 8}
    full = li.dry_run(m, key, x)
    assert li.summary(m, X, params=full).counts() == {"initialized": 8}
    abstract = li.dry_run(m, key, X)
    assert li.summary(m, X, params=abstract).counts() == {"abstract": 8}
    state, report = li.load_state(lazy, {"0": full["0"]}, strict=False)
    s = li.summary(m, X, params=state, report=report)
    assert s.counts() == {"uninitialized": 4, "loaded": 4}
    assert s.params[("0", "fc1", "kernel")].status == "loaded"
    assert s.params[("3", "kernel")].status == "uninitialized"
    text = str(s)
    assert "loaded" in text and "4 uninitialized, 4 loaded" in text


def test_status_reports_mismatch_missing_and_unexpected(key):
    m = model()
    full = li.dry_run(m, key, jnp.ones((8, 5)))
    bad = {**full, "3": {"kernel": jnp.zeros((4, 2))}, "9": {"w": jnp.zeros(2)}}
    s = li.summary(m, X, params=bad)
    assert s.params[("3", "kernel")].status == "mismatch"
    assert s.params[("3", "kernel")].found == (4, 2)
    assert s.params[("3", "bias")].status == "missing"
    assert s.unexpected == (("9", "w"),)
    text = str(s)
    assert "mismatch: found (4, 2)" in text
    lazy = li.lazy_state(m)
    lazy["0"]["fc2"]["kernel"] = li.Uninitialized((None, 4))
    s = li.summary(m, X, params=lazy)
    assert s.params[("0", "fc2", "kernel")].found == (None, 4)
    assert "mismatch: found (?, 4)" in str(s)
    assert "unexpected in params (the model has no such parameter): 9/w" in text


def test_renders_as_text_rich_and_html():
    s = li.summary(model(), X)
    text = str(s)
    assert repr(s) == text
    for needle in ["0/fc1", "Linear", "float32[8,5]", "kernel: float32[5,6]", "Total", "284 B"]:
        assert needle in text
    console = rich.console.Console(record=True, width=200, color_system=None)
    console.print(s)
    assert "kernel: float32[5,6]" in console.export_text()  # rich markup does not eat [...]
    page = s._repr_html_()
    assert page.startswith('<table class="lazyinit-summary">')
    assert "<code>kernel: float32[5,6]<br>bias: float32[6]</code></td>" in page
    assert "&lt;root&gt;" in page and "<root>" not in page


def test_a_model_that_fails_to_trace_raises_the_trace_error():
    with pytest.raises(li.errors.InferShapeError, match=r"Linear at '0/fc1'.*at least 1 dimension"):
        li.summary(model(), jax.ShapeDtypeStruct((), jnp.float32))


def _llama_7b():
    """The 7B decoder of ``examples/models.py``."""
    path = ROOT / "examples" / "models.py"
    spec = importlib.util.spec_from_file_location("_examples_models", path)
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    return models.llama_decoder()


def test_summary_of_a_7b_decoder_allocates_nothing():
    decoder = _llama_7b()
    tokens = jax.ShapeDtypeStruct((1, 2048), jnp.int32)
    li.summary(decoder, tokens)  # warm caches once: compiled helpers may keep constants
    gc.collect()
    before = {id(a) for a in jax.live_arrays()}
    li.clear_cache()
    s = li.summary(decoder, tokens, dtype="bfloat16", depth=2)
    gc.collect()
    new = [a for a in jax.live_arrays() if id(a) not in before]
    assert new == []
    assert 6.5e9 < s.total_params < 7.0e9
    assert s.total_bytes == 2 * s.total_params


def test_describe_shows_inferred_sizes_like_pytorch_after_a_dry_run():
    text = li.describe(model(), X)
    assert text == (
        "Sequential(\n"
        "  (0): Block(\n"
        "    (fc1): Linear(in_features=5, out_features=6)\n"
        "    (fc2): Linear(in_features=6, out_features=3)\n"
        "  )\n"
        "  (1): relu\n"
        "  (2): Stats()  # scale: float32[3], count: float32[3]\n"
        "  (3): Linear(in_features=3, out_features=2)\n"
        ")"
    )
    assert repr(text) == text
    assert repr(model()) == (
        "Sequential(layers=(Block(), relu, Stats(), Linear(out_features=2)))"
    )  # the model itself is unchanged


def test_describe_marks_a_child_the_sample_never_reached():
    class Skip(li.Layer):
        used: li.Layer = li.Linear(2)
        unused: li.Layer = li.Linear(7)

        def __call__(self, params, x):
            return self.used(params["used"], x)

    text = li.describe(Skip(), X)
    assert "(used): Linear(in_features=5, out_features=2)" in text
    assert "(unused): Linear(out_features=7)  # not reached by this sample" in text


def test_describe_names_channels_of_channels_first_layers():
    x = jax.ShapeDtypeStruct((2, 3, 8, 8), jnp.float32)
    text = li.describe(li.Conv(4, 3, channels_first=True), x)
    assert text.startswith("Conv(in_channels=3, out_channels=4")


def test_describe_points_at_a_channels_first_sample_read_as_channels_last():
    """The trace succeeds (32 channels taken from the width), so nothing else would say so."""
    cnn = li.Sequential([li.Conv(16, 3, padding=1), li.BatchNorm(), li.GlobalAvgPool()])
    x = jax.ShapeDtypeStruct((2, 3, 32, 32), jnp.float32)
    assert li.describe(cnn, x) == (
        "Sequential(\n"
        "  (0): Conv(in_channels=32, out_channels=16, kernel_size=3, padding=1)  # 32 channels "
        "from the last axis of (2, 3, 32, 32): a channels-first sample? li.channels_first(model)\n"
        "  (1): BatchNorm(num_features=16)\n"
        "  (2): GlobalAvgPool()\n"
        ")"
    )
    assert "channels-first sample?" not in li.describe(li.channels_first(cnn), x)
    last = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    assert "channels-first sample?" not in li.describe(cnn, last)


def test_treescope_renders_placeholders_by_their_repr():
    treescope = pytest.importorskip("treescope")
    lazy = li.lazy_state(Block())
    text = treescope.render_to_text(lazy)
    assert "'kernel': Uninitialized(shape=(?, 6), dtype=float32)" in text
    assert "Rich HTML" not in text
    assert "color:#b35900" in treescope.render_to_html(lazy, compressed=False)


def test_summary_of_a_7b_parameter_stack_of_core_layers_allocates_nothing():
    class MLPBlock(li.Layer):
        up: li.Layer = li.Linear(11008)
        down: li.Layer = li.Linear(4096)

        def __call__(self, params, x):
            return self.down(params["down"], jax.nn.silu(self.up(params["up"], x)))

    stack = li.Sequential([MLPBlock() for _ in range(80)])
    x = jax.ShapeDtypeStruct((4, 2048, 4096), jnp.float32)
    gc.collect()
    before = {id(a) for a in jax.live_arrays()}
    s = li.summary(stack, x)
    gc.collect()
    assert [a for a in jax.live_arrays() if id(a) not in before] == []
    assert s.total_params == 80 * (4096 * 11008 + 11008 + 11008 * 4096 + 4096)
    assert s.total_params > 7e9 and s.total_bytes == 4 * s.total_params


# ---------------------------------------------------------------------------
# Wrapped flax and nnx modules: one row each, their variables listed on it.


def _wrapped(kind):
    """A model holding a wrapped module of two dense layers, in flax.linen or in flax.nnx."""
    from lazyinit.interop.flax import FlaxModule, NnxModule

    if kind == "flax":
        import flax.linen as fnn

        class Two(fnn.Module):
            @fnn.compact
            def __call__(self, x):
                h = fnn.relu(fnn.Dense(4)(x))
                return fnn.Dense(2)(h)

        return li.Sequential([FlaxModule(Two()), li.Linear(1)])
    from flax import nnx

    def two(rngs, x):
        return nnx.Sequential(
            nnx.Linear(x.shape[-1], 4, rngs=rngs), nnx.relu, nnx.Linear(4, 2, rngs=rngs)
        )

    return li.Sequential([NnxModule(two), li.Linear(1)])


LISTED = {
    "flax": [
        "params/Dense_0/bias: float32[4]",
        "params/Dense_0/kernel: float32[5,4]",
        "params/Dense_1/bias: float32[2]",
        "params/Dense_1/kernel: float32[4,2]",
    ],
    "nnx": [
        "layers/0/bias: float32[4]",
        "layers/0/kernel: float32[5,4]",
        "layers/2/bias: float32[2]",
        "layers/2/kernel: float32[4,2]",
    ],
}


@pytest.mark.parametrize("kind", ["flax", "nnx"])
def test_a_wrapped_module_is_one_row_with_its_variables_listed_on_it(kind, key):
    model = _wrapped(kind)
    s = li.summary(model, X)
    wrapper = {"flax": "FlaxModule", "nnx": "NnxModule"}[kind]
    assert [("/".join(r.path), type(r.layer).__name__) for r in s.rows] == [
        ("", "Sequential"),
        ("0", wrapper),
        ("1", "Linear"),
    ]
    row = s.rows[1]
    assert row.count == 5 * 4 + 4 + 4 * 2 + 2 and row.below == 0
    assert s.total_params == row.count + 2 + 1
    assert s.total_params == sum(sizes(li.dry_run(model, key, jnp.ones((8, 5)))))
    text = str(s)
    assert all(line in text for line in LISTED[kind])
    assert "DeclaredVariables" not in text
    rolled = li.summary(model, X, depth=0)
    assert rolled.rows[0].count == s.total_params and rolled.rows[0].below == 6
    described = li.describe(model, X)
    assert "DeclaredVariables" not in described
    assert ", ".join(LISTED[kind]) in described


def test_a_wrapped_module_at_the_root_shares_no_row_with_its_variables():
    """nnx.Linear's variables are declared at the wrapper's own path: still one row."""
    from flax import nnx

    from lazyinit.interop.flax import NnxModule

    s = li.summary(NnxModule(lambda rngs, x: nnx.Linear(x.shape[-1], 4, rngs=rngs)), X)
    assert [(r.path, r.shared, r.count) for r in s.rows] == [((), False, 24)]
    assert "shares the params above" not in str(s)
