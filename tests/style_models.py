"""One small model (Linear -> BatchNorm -> tanh -> Linear) written in the three styles a user
may write a lazyinit model in; the tests of reinit, LSUV, warm-up, labels and symbolic dims
run on each. All three have the same params: ``body``, ``norm`` (with buffers) and ``head``.

* ``fields``: children are dataclass fields, ``self.body(params["body"], x)``;
* ``inline``: children are built inside ``__call__``, ``li.Linear(16)(params["body"], x)``;
* ``wrapper``: a layer that passes its whole params to a child (the ``fields`` model), and
  says so (``children()`` returns it under ``""``, flax's ``share_scope``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import lazyinit as li


class Fields(li.Layer):
    body: li.Layer = li.Linear(16)
    norm: li.Layer = li.BatchNorm()
    head: li.Layer = li.Linear(4)

    def __call__(self, params: Any, x: jax.Array, *, train: bool = False) -> jax.Array:
        h = self.norm(params["norm"], self.body(params["body"], x), train=train)
        return self.head(params["head"], jnp.tanh(h))


def _linear16() -> li.Layer:
    return li.Linear(16)


class Inline(li.Layer):
    make_body: Callable[[], li.Layer] = _linear16

    def __call__(self, params: Any, x: jax.Array, *, train: bool = False) -> jax.Array:
        h = li.BatchNorm()(params["norm"], self.make_body()(params["body"], x), train=train)
        return li.Linear(4)(params["head"], jnp.tanh(h))


class Wrapper(li.Layer):
    inner: li.Layer = Fields()

    def children(self) -> dict[str, li.Layer]:
        return {"": self.inner}  # inner shares this layer's params

    def __call__(self, params: Any, x: jax.Array, *, train: bool = False) -> jax.Array:
        return self.inner(params, x, train=train)


def styles(body: li.Layer | None = None) -> dict[str, li.Layer]:
    """The three models, with ``body`` (default ``li.Linear(16)``) as their first layer."""
    body = body or li.Linear(16)
    return {
        "fields": Fields(body=body),
        "inline": Inline(make_body=lambda: body),
        "wrapper": Wrapper(Fields(body=body)),
    }


STYLES = sorted(styles())


def by_hand(params: Any, x: jax.Array) -> dict[str, jax.Array]:
    """Each layer's output in evaluation mode, computed without the model: body, norm, head."""
    row = {k: v[None] for k, v in params["norm"].items()}  # (1, 16): no rank promotion
    body = x @ params["body"]["kernel"] + params["body"]["bias"][None]
    norm = (body - row["mean"]) / jnp.sqrt(row["var"] + 1e-5) * row["scale"] + row["bias"]
    head = jnp.tanh(norm) @ params["head"]["kernel"] + params["head"]["bias"][None]
    return {"body": body, "norm": norm, "head": head}
