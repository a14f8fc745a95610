"""lazyinit's versions: the reference models of ``examples/models.py``, adapted to :class:`Impl`."""

from __future__ import annotations

import jax

import lazyinit as li
from examples import models

from .common import Impl, Sizes, batch, xent


def net(model: str, sizes: Sizes, layers: int | None = None) -> li.Layer:
    if model == "mlp":
        return models.mlp(sizes.mlp_widths[1:-1], sizes.mlp_widths[-1])
    if model == "cnn":
        return models.resnet_cnn(sizes.cnn_classes, sizes.cnn_widths, sizes.cnn_blocks)
    c = sizes.gpt(layers)
    return models.gpt_decoder(c["layers"], c["width"], c["heads"], c["vocab"], c["max_len"])


def llama_abstract(cfg: dict, tokens: jax.ShapeDtypeStruct):
    """A new abstract dry run of the LLaMA (after ``li.clear_cache()``): ``key -> ShapeDtypeStructs``."""
    llama = models.llama_decoder(
        cfg["layers"], cfg["width"], cfg["heads"], cfg["hidden"], cfg["vocab"]
    )
    li.clear_cache()
    return lambda key: li.dry_run(llama, key, tokens)


def build(model: str, sizes: Sizes, layers: int | None = None) -> Impl:
    x, _ = batch(model, sizes)
    layer = net(model, sizes, layers)
    sample = jax.ShapeDtypeStruct(x.shape, x.dtype)

    def abstract_init():
        li.clear_cache()  # the first call is a true first trace
        return lambda key: li.dry_run(layer, key, sample)

    def loss(p, s, xb, yb):
        if model == "cnn":
            out, new = li.apply(layer, li.merge(p, s), xb, train=True, mutable=True)
            return xent(out, yb), li.merge(s, new)
        return xent(layer(p, xb), yb), s

    return Impl(
        init=lambda key: li.dry_run(layer, key, x),
        jit_init=lambda: lambda key: li.dry_run(layer, key, x, jit=True),
        abstract_init=abstract_init,
        apply=lambda v, xb: layer(v, xb),
        split=lambda v: li.partition(layer, v),
        loss=loss,
        net=layer,
    )
