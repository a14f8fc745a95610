"""Helpers every layer goes through: shape agreement, the lifecycle, and PyTorch weight conversion."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import lazyinit as li


def shapes(tree: Any) -> Any:
    return jax.tree.map(lambda a: tuple(a.shape), tree)


def abstract(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def check_shapes(layer: li.Layer, *inputs: Any, **kwargs: Any) -> Any:
    """Dry-run shapes (abstract and concrete) equal the shapes of a real apply; returns the params."""
    planned = li.dry_run(layer, jax.random.key(0), *abstract(inputs), **kwargs)
    params = li.dry_run(layer, jax.random.key(0), *inputs, **kwargs)
    assert shapes(planned) == shapes(params)
    traced = li.trace(layer, *inputs, **kwargs).outputs
    if kwargs.get("train"):
        out, _ = li.apply(layer, params, *inputs, mutable=True, **kwargs)
    else:
        out = layer(params, *inputs, **kwargs)
    assert jax.tree.map(lambda o: (o.shape, o.dtype), traced) == jax.tree.map(
        lambda o: (o.shape, o.dtype), out
    )
    return params


def check_lifecycle(layer: li.Layer, *inputs: Any, **kwargs: Any) -> None:
    """uninitialized -> dry run -> load into a fresh lazy state -> a later dry run keeps it."""
    lazy = li.lazy_state(layer)
    params = li.dry_run(layer, jax.random.key(0), *inputs, **kwargs)
    if jax.tree.leaves(params):
        assert li.has_uninitialized(lazy)
    if isinstance(lazy, li.Uninitialized):
        # A root layer that needs the input's rank to name its params (Conv(8, 3)) is one
        # placeholder of unknown structure, which load_state cannot load into: keep the params.
        assert lazy.shape is None
        loaded = params
    else:
        loaded, _ = li.load_state(lazy, params)
    assert not li.has_uninitialized(loaded)
    again = li.dry_run(layer, jax.random.key(1), *inputs, state=loaded, **kwargs)
    assert shapes(again) == shapes(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    trainable, buffers = li.partition(layer, params, *inputs, **kwargs)
    assert shapes(li.merge(trainable, buffers)) == shapes(params)


# ---------------------------------------------------------------------------
# PyTorch -> lazyinit, for the parity tests only (lazyinit.interop.torch is the library's).


def t2n(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy()


def conv_kernel(weight: np.ndarray) -> np.ndarray:
    """PyTorch ``Conv`` weight ``(out, in // g, *k)`` -> lazyinit ``(*k, in // g, out)``."""
    n = weight.ndim - 2
    return np.transpose(weight, (*range(2, 2 + n), 1, 0))


def conv_transpose_kernel(weight: np.ndarray, groups: int) -> np.ndarray:
    """PyTorch ``ConvTranspose`` weight ``(in, out // g, *k)`` -> lazyinit ``(*k, in // g, out)``."""
    n = weight.ndim - 2
    cin, cout_g, *k = weight.shape
    w = np.flip(weight, axis=tuple(range(2, 2 + n)))
    w = w.reshape(groups, cin // groups, cout_g, *k)
    w = np.transpose(w, (*range(3, 3 + n), 1, 0, 2))  # (*k, in//g, g, out//g)
    return np.ascontiguousarray(w.reshape(*k, cin // groups, groups * cout_g))


def from_torch(module: Any) -> dict[str, Any]:
    """The lazyinit params of one PyTorch module (its state dict, renamed and re-laid out)."""
    import torch

    sd = {k: t2n(v) for k, v in module.state_dict().items()}
    nn = torch.nn
    if isinstance(module, nn.Linear):
        out = {"kernel": sd["weight"].T}
    elif isinstance(module, nn.modules.conv._ConvTransposeNd):
        out = {"kernel": conv_transpose_kernel(sd["weight"], module.groups)}
    elif isinstance(module, nn.modules.conv._ConvNd):
        out = {"kernel": conv_kernel(sd["weight"])}
    elif isinstance(module, nn.Embedding):
        out = {"embedding": sd["weight"]}
    elif isinstance(module, nn.MultiheadAttention):
        return _mha_from_torch(module, sd)
    else:  # the norms; a BatchNorm's count is PyTorch's num_batches_tracked (InstanceNorm has none)
        names = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            names["num_batches_tracked"] = "count"
        return {
            names[k]: jnp.asarray(v, jnp.float32 if k == "num_batches_tracked" else None)
            for k, v in sd.items()
            if k in names
        }
    if "bias" in sd:
        out["bias"] = sd["bias"]
    return {k: jnp.asarray(np.ascontiguousarray(v)) for k, v in out.items()}


def _mha_from_torch(m: Any, sd: dict[str, np.ndarray]) -> dict[str, Any]:
    e, h = m.embed_dim, m.num_heads
    if "in_proj_weight" in sd:
        ws = np.split(sd["in_proj_weight"], 3)
    else:
        ws = [sd[f"{n}_proj_weight"] for n in "qkv"]
    bs = np.split(sd["in_proj_bias"], 3) if "in_proj_bias" in sd else [None] * 3
    out = {}
    for name, w, b in zip(("query", "key", "value"), ws, bs):
        out[name] = {"kernel": jnp.asarray(w.T.reshape(w.shape[1], h, e // h))}
        if b is not None:
            out[name]["bias"] = jnp.asarray(b.reshape(h, e // h))
    out["out"] = {"kernel": jnp.asarray(sd["out_proj.weight"].T.reshape(h, e // h, e))}
    if "out_proj.bias" in sd:
        out["out"]["bias"] = jnp.asarray(sd["out_proj.bias"])
    return out


def randomize(module: Any, seed: int = 0) -> None:
    """Random values for every floating parameter and buffer (variances stay positive)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)


def channels_first(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


def channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def assert_close(actual: Any, expected: Any, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol * 10, atol=tol)
