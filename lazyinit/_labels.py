"""``labels``: the label tree that ``optax.multi_transform`` takes, to freeze part of a model.

Each parameter is ``"trainable"``, ``"frozen"`` (it matched a ``frozen=`` pattern) or
``"buffer"`` (declared ``trainable=False``: running statistics, counters). Freezing a
backbone is then one line::

    tx = optax.multi_transform(
        {"trainable": optax.adam(1e-3), "frozen": optax.set_to_zero(), "buffer": optax.set_to_zero()},
        li.labels(model, params, x, frozen="backbone"),
    )
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

from . import _match, _paths
from ._reinit import select
from ._spec import Uninitialized
from ._tracer import needs_sample, no_sample, trace
from ._typing import Params

__all__ = ["labels", "TRAINABLE", "FROZEN", "BUFFER"]

TRAINABLE, FROZEN, BUFFER = "trainable", "frozen", "buffer"


def labels(
    model: Any, params: Params, /, *sample: Any, frozen: str | Iterable[str] = (), **kw: Any
) -> Params:
    """A tree shaped like ``params`` with ``"trainable"``, ``"frozen"`` or ``"buffer"`` leaves.

    Args:
      model: the :class:`lazyinit.Layer` the params belong to.
      params: its params, or a part of them (the trainable half of
        ``li.partition``): the labels follow this tree's structure.
      *sample: a sample input: which parameters are buffers is read from
        the specs the model declares on it.
      **kw: sample keyword inputs.
      frozen: path patterns (``'backbone'``, ``'*/bias'``, the ``dtype=``
        syntax) of trainable parameters to freeze. Buffers stay ``"buffer"``.

    Raises:
      InferShapeError: no sample.
      InvalidArgumentError: a pattern that matches no parameter.
      StateMismatchError: ``params`` holds paths the model does not have.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> model = li.Sequential([li.Linear(4), li.BatchNorm(), li.Linear(2)])
        >>> x = jnp.ones((2, 3))
        >>> params = li.dry_run(model, jax.random.key(0), x)
        >>> li.labels(model, params, x, frozen="0")
        {'0': {'kernel': 'frozen', 'bias': 'frozen'}, '1': {'scale': 'trainable', 'bias': 'trainable', 'mean': 'buffer', 'var': 'buffer'}, '2': {'kernel': 'trainable', 'bias': 'trainable'}}
    """
    if no_sample(sample, kw):
        raise needs_sample(
            model,
            why="li.labels reads which parameters are buffers from the model's trace",
            example="li.labels(model, params, x, frozen=...)",
        )
    t = trace(model, *sample, **kw)
    chosen = set(select(t, frozen, what="li.labels(frozen=...)")) if frozen else set()
    flat = _paths.flatten(params, lambda x: True, what="params")
    m = _match.match(
        {p: _match.Target(spec.shape) for p, spec in t.params.items()},
        {p: _shape_only(v) for p, v in flat.items()},
        abstract=True,
    )
    _match.refuse(
        "li.labels: the params do not fit the model on this sample",
        _match.judge(m, missing=False, unexpected=True),
        "Pass this model's params (or a part of them) and the sample it was dry-run on.",
    )
    out = {
        p: BUFFER if not t.params[p].trainable else FROZEN if p in chosen else TRAINABLE
        for p in flat
    }
    return _paths.unflatten(out, _paths.subtrees(params))


def _shape_only(leaf: Any) -> Any:
    """What the rules need of a leaf here: its shape where it has one (a label has none)."""
    if _paths.is_shaped(leaf):
        return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype)
    return leaf if isinstance(leaf, Uninitialized) else Uninitialized()
