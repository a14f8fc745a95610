"""Plain JAX transforms inside a model's ``__call__``: in the dry run and in real calls (eager, jit)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lazyinit as li


@jax.custom_vjp
def _clip_grad(x):
    return x


_clip_grad.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1.0, 1.0),))


@jax.custom_jvp
def _softplus(x):
    return jnp.logaddexp(x, 0.0)


_softplus.defjvps(lambda t, ans, x: t * jax.nn.sigmoid(x))


class Transformed(li.Layer):
    """Two same-shaped children called through the transform named by ``mode``."""

    mode: str
    a: li.Layer = li.Linear(8)
    b: li.Layer = li.Linear(8)
    head: li.Layer = li.Linear(2)

    def __call__(self, params, x):
        a, b = params["a"], params.get("b")
        if self.mode == "checkpoint":
            h = jax.checkpoint(self.a)(a, x)
        elif self.mode == "remat_policy":
            policy = jax.checkpoint_policies.dots_with_no_batch_dims_saveable
            h = jax.remat(self.a, policy=policy)(a, x)
        elif self.mode == "named_call":
            h = jax.named_call(self.a, name="block_a")(a, x)
        elif self.mode == "named_scope":
            with jax.named_scope("block_a"):
                h = self.a(a, x)
        elif self.mode == "custom_vjp":
            h = _clip_grad(self.a(a, x))
        elif self.mode == "custom_jvp":
            h = _softplus(self.a(a, x))
        elif self.mode == "cond":
            h = jax.lax.cond(
                x.sum() > 0,
                lambda p, x: self.a(p["a"], x),
                lambda p, x: self.b(p["b"], x),
                params,
                x,
            )
        elif self.mode == "switch":
            h = jax.lax.switch(
                (x.sum() > 0).astype(jnp.int32),
                [lambda p, x: self.a(p, x), lambda p, x: self.a(p, 2 * x)],
                a,
                x,
            )
            h = h + self.b(b, x)
        elif self.mode == "jit":
            h = jax.jit(self.a)(a, x)
        else:
            raise AssertionError(self.mode)
        return self.head(params["head"], h)


MODES = [
    "checkpoint",
    "remat_policy",
    "named_call",
    "named_scope",
    "custom_vjp",
    "custom_jvp",
    "cond",
    "switch",
    "jit",
]


def _expected_paths(mode):
    paths = {"a/kernel", "a/bias", "head/kernel", "head/bias"}
    if mode in ("cond", "switch"):
        paths |= {"b/kernel", "b/bias"}
    return paths


def _paths(tree):
    return {"/".join(k.key for k in p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("mode", MODES)
def test_transform_in_dry_run_and_real_calls(mode, key):
    model = Transformed(mode)
    x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    params = li.dry_run(model, key, x)
    assert _paths(params) == _expected_paths(mode)
    assert params["a"]["kernel"].shape == (3, 8)
    eager = model(params, x)
    jitted = jax.jit(model)(params, x)
    assert eager.shape == (4, 2)
    np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda p: model(p, x).sum())(params)
    assert jax.tree.map(jnp.shape, grads) == jax.tree.map(jnp.shape, params)


@pytest.mark.parametrize("mode", ["checkpoint", "cond", "jit"])
def test_transform_in_abstract_dry_run(mode, key):
    model = Transformed(mode)
    params = li.dry_run(model, key, jax.ShapeDtypeStruct((4, 3), jnp.float32))
    assert isinstance(params["a"]["kernel"], jax.ShapeDtypeStruct)
    assert _paths(params) == _expected_paths(mode)


def test_checkpoint_values_equal_plain_call(key):
    """Remat changes memory, not values: same params, same outputs and gradients."""
    x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    plain = Transformed("named_scope")
    ckpt = Transformed("checkpoint")
    params = li.dry_run(plain, key, x)
    np.testing.assert_array_equal(params["a"]["kernel"], li.dry_run(ckpt, key, x)["a"]["kernel"])
    np.testing.assert_allclose(plain(params, x), ckpt(params, x), rtol=1e-6)
    g1 = jax.grad(lambda p: plain(p, x).sum())(params)
    g2 = jax.grad(lambda p: ckpt(p, x).sum())(params)
    np.testing.assert_allclose(g1["a"]["kernel"], g2["a"]["kernel"], rtol=1e-5, atol=1e-7)


def test_custom_vjp_function_taking_params(key):
    through = jax.custom_vjp(lambda f, p, x: f(p, x), nondiff_argnums=(0,))
    through.defvjp(
        lambda f, p, x: (f(p, x), (p, x)),
        lambda f, res, g: jax.vjp(f, *res)[1](g),
    )

    class M(li.Layer):
        fc: li.Layer = li.Linear(5)

        def __call__(self, params, x):
            return through(self.fc, params["fc"], x)

    x = jnp.ones((2, 3))
    params = li.dry_run(M(), key, x)
    assert params["fc"]["kernel"].shape == (3, 5)
    assert jax.jit(M())(params, x).shape == (2, 5)


class VmapOverParams(li.Layer):
    m: li.Layer = li.Linear(4)

    def __call__(self, params, x):
        return jax.vmap(lambda p: self.m(p, x))(params["m"])


class ScanOverParams(li.Layer):
    m: li.Layer = li.Linear(3)

    def __call__(self, params, x):
        y, _ = jax.lax.scan(lambda c, p: (self.m(p, c), None), x, params["m"])
        return y


def test_vmap_over_params_names_ensemble(key):
    with pytest.raises(li.errors.InferShapeError, match=r"params at 'm' was mapped.*li\.Ensemble"):
        li.dry_run(VmapOverParams(), key, jnp.ones((2, 3)))


def test_scan_over_params_names_repeat(key):
    with pytest.raises(li.errors.InferShapeError, match=r"params at 'm' was mapped.*li\.Repeat"):
        li.dry_run(ScanOverParams(), key, jnp.ones((2, 3)))


def test_vmap_over_inputs_with_shared_params_is_fine(key):
    class PerExample(li.Layer):
        m: li.Layer = li.Linear(4)

        def __call__(self, params, xs):
            return jax.vmap(lambda x: self.m(params["m"], x))(xs)

    xs = jnp.ones((5, 3))
    params = li.dry_run(PerExample(), key, xs)
    assert params["m"]["kernel"].shape == (3, 4)
    assert PerExample()(params, xs).shape == (5, 4)


def test_vmap_over_params_and_inputs_together_names_ensemble(key):
    class ByHand(li.Layer):
        m: li.Layer = li.Linear(3)

        def __call__(self, params, xs):
            return jax.vmap(lambda p, x: self.m(p, x))(params["m"], xs)

    with pytest.raises(
        li.errors.InferShapeError,
        match=r"ByHand at '<root>': params were mapped over a leading axis .*together with the "
        r"inputs.*li.Ensemble\(layer, n, map_inputs=True\)",
    ):
        li.dry_run(ByHand(), key, jnp.ones((4, 2, 5)))


@pytest.mark.parametrize("unroll", [2, 3, True])
def test_repeat_unroll_keeps_params_outputs_and_grads(unroll, key):
    block = li.Residual([li.LayerNorm(), li.Linear(4), li.nn.tanh])
    x = jax.random.normal(jax.random.key(1), (2, 4))
    looped, unrolled = li.Repeat(block, 5), li.Repeat(block, 5, unroll=unroll)
    params = li.dry_run(looped, key, x)
    assert jax.tree.all(
        jax.tree.map(np.array_equal, params, li.dry_run(unrolled, key, x))
    )  # unroll changes the loop, never the params

    def loss(model):
        return jax.jit(jax.value_and_grad(lambda p: (model(p, x) ** 2).sum()))(params)

    (value, grads), (value_k, grads_k) = loss(looped), loss(unrolled)
    np.testing.assert_allclose(value_k, value, rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), grads_k, grads
    )


@pytest.mark.parametrize("unroll", [0, -2, 1.5, "4"])
def test_repeat_refuses_an_unroll_that_is_not_a_positive_int(unroll):
    with pytest.raises(
        li.errors.InvalidArgumentError,
        match=r"li\.Repeat: unroll must be a positive int \(copies per loop iteration\) or "
        r"True \(no loop\), got .*\. Use unroll=1",
    ):
        li.Repeat(li.Linear(4), 3, unroll=unroll)
