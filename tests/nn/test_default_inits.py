"""Default initializers chosen on purpose (docs/layers.md lists each layer's).

``Embedding`` draws ``N(0, 0.02)`` so that a GPT whose output head is tied to
its embedding starts near the loss of a uniform guess, ``ln(vocab)``; with
PyTorch's ``N(0, 1)`` the tied head's logits have standard deviation
``sqrt(d_model)`` and the first loss is many times that. ``InstanceNorm``
keeps ``InstanceNorm{1,2,3}d``'s defaults, which PyTorch's lazy versions do not
share: the test pins both so the documented difference stays true.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys

import jax
import jax.numpy as jnp
import optax
import pytest

import lazyinit as li

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
from models import gpt_decoder  # noqa: E402

VOCAB, LENGTH = 512, 16


def _first_loss(model: li.Layer) -> float:
    ids = jax.random.randint(jax.random.key(1), (4, LENGTH + 1), 0, VOCAB)
    params = li.dry_run(model, jax.random.key(0), ids[:, :-1])
    logits = jax.jit(model)(params, ids[:, :-1])
    return float(optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean())


def _tiny_gpt(**kwargs) -> li.Layer:
    return gpt_decoder(num_layers=1, d_model=64, num_heads=2, vocab=VOCAB, max_len=LENGTH, **kwargs)


def test_embedding_default_is_gpt2s():
    assert li.Embedding(10, 4).embedding_init == li.initializers.normal(0.02)


def test_tied_gpt_starts_near_ln_vocab():
    assert abs(_first_loss(_tiny_gpt()) - math.log(VOCAB)) < 0.5


def test_pytorchs_embedding_init_would_not():
    """What the default avoids: N(0, 1), tied, starts far above ln(vocab)."""
    model = _tiny_gpt()
    torch_like = dataclasses.replace(
        model, embed=dataclasses.replace(model.embed, embedding_init=li.initializers.normal(1.0))
    )
    assert _first_loss(torch_like) > math.log(VOCAB) + 5


def test_instance_norm_defaults_and_pytorchs_lazy_ones():
    norm = li.InstanceNorm()
    assert (norm.affine, norm.track_running_stats) == (False, False)
    params = li.dry_run(norm, jax.random.key(0), jnp.ones((2, 5, 3)))
    assert params == {}
    torch = pytest.importorskip("torch")
    plain, lazy = torch.nn.InstanceNorm1d(3), torch.nn.LazyInstanceNorm1d()
    assert (plain.affine, plain.track_running_stats) == (False, False)
    assert (lazy.affine, lazy.track_running_stats) == (True, True)  # documented difference
    same_as_lazy = li.InstanceNorm(affine=True, track_running_stats=True)
    params = li.dry_run(same_as_lazy, jax.random.key(0), jnp.ones((2, 5, 3)))
    assert sorted(params) == ["bias", "mean", "scale", "var"]
