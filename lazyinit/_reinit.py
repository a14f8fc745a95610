"""``reinit``: re-draw some parameters exactly as a fresh dry run would, keep every other leaf.

Because a parameter's value depends only on the root key and its path, "re-initialize
the head" has one right answer: the values ``li.dry_run(model, key, sample)`` gives at
``head/...``. :func:`reinit` computes exactly those, and only those, by handing the dry
run the old params as ``state=`` with the chosen paths turned back into placeholders
(of the old dtype and placement). The dry run keeps the other leaves bit for bit: they
are the very same array objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from . import _match, _paths
from ._dry_run import dry_run
from ._recorder import Trace
from ._spec import Uninitialized
from ._trace_cache import is_abstract
from ._tracer import trace
from ._typing import Params, Path
from .errors import InvalidArgumentError, UninitializedParamError

__all__ = ["reinit", "select"]


def select(t: Trace, patterns: str | Iterable[str], *, what: str) -> list[Path]:
    """The parameter paths of ``t`` that match any of ``patterns`` (the ``dtype=`` syntax).

    Raises:
      InvalidArgumentError: no pattern given, or a pattern that matches no parameter.
    """
    pats = (patterns,) if isinstance(patterns, str) else tuple(patterns)
    if not all(isinstance(p, str) and p for p in pats):
        raise InvalidArgumentError(
            f"{what}: path patterns must be non-empty strings ('head', 'encoder/*/bias'), "
            f"got {pats!r}."
        )
    known = [*t.params, *t.layers]  # a layer without parameters may be named too
    unmatched = [p for p in pats if not any(_paths.resolve({p: True}, q) for q in known)]
    if unmatched:
        layers = sorted({_paths.join(q[:-1]) for q in t.params})
        raise InvalidArgumentError(
            f"{what}: pattern(s) {', '.join(map(repr, unmatched))} match no parameter of the "
            f"model. Its layers with parameters are: {', '.join(layers)}. Patterns are "
            "'/'-joined path prefixes or globs, as for dtype=."
        )
    choice = dict.fromkeys(pats, True)
    return [q for q in t.params if _paths.resolve(choice, q)]


def reinit(
    model: Any, params: Params, key: Any, /, *sample: Any, paths: str | Iterable[str], **kw: Any
) -> Params:
    """Re-draws the parameters under ``paths`` as ``li.dry_run(model, key, *sample)`` would.

    Every other leaf is kept bit for bit (the same array objects, on the same
    devices); a re-drawn leaf keeps its old dtype and placement. Pure: ``params``
    is not modified.

    Args:
      model: the :class:`lazyinit.Layer` the params belong to.
      params: its materialized params (a dry run's or a load's result).
      key: the root key of the fresh dry run whose values to take.
      *sample: a sample input, as for the dry run.
      **kw: sample keyword inputs, as for the dry run.
      paths: a path pattern or several (``'head'``, ``'*/bias'``), the
        syntax of ``dtype=`` per path.

    Raises:
      InvalidArgumentError: a pattern matches no parameter, or the sample is abstract.
      UninitializedParamError: ``params`` holds placeholders (dry-run first).
      StateMismatchError: ``params`` lacks parameters of the model, or
        holds some it does not have or of another shape.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> model = li.Sequential([li.Linear(4), li.nn.relu, li.Linear(2)])
        >>> x = jnp.ones((1, 3))
        >>> params = li.dry_run(model, jax.random.key(0), x)
        >>> new = li.reinit(model, params, jax.random.key(1), x, paths="2")
        >>> new["0"]["kernel"] is params["0"]["kernel"]
        True
        >>> bool((new["2"]["kernel"] == li.dry_run(model, jax.random.key(1), x)["2"]["kernel"]).all())
        True
    """
    if is_abstract((sample, kw)):
        raise InvalidArgumentError(
            "li.reinit draws values, but the sample is abstract (jax.ShapeDtypeStruct): the "
            "dry run would return ShapeDtypeStructs for every leaf. Pass an array sample, "
            "such as jnp.zeros(shape, dtype) of one example."
        )
    t = trace(model, *sample, **kw)
    chosen = select(t, paths, what="li.reinit")
    flat = _paths.flatten(params, _paths.is_leaf, what="params")
    holes = [_paths.join(p) for p, v in flat.items() if _paths.is_hole(v)]
    if holes:
        raise UninitializedParamError(
            f"li.reinit re-draws some parameters of materialized params, but {', '.join(holes)} "
            "hold no values (placeholders or ShapeDtypeStructs). Run li.dry_run(model, key, "
            "sample) with an array sample first: it initializes them."
        )
    m = _match.match({p: _match.Target(spec.shape) for p, spec in t.params.items()}, flat)
    _match.refuse(
        "li.reinit: the params do not fit the model",
        _match.judge(m, missing=True, unexpected=False),
        "Pass the params of this model (li.dry_run's result for it).",
    )
    state = dict(flat)
    for p in chosen:
        old = flat[p]
        state[p] = Uninitialized(tuple(old.shape), old.dtype, getattr(old, "sharding", None))
    # Kept leaves keep their dtype: name those that differ from the dry run's default.
    dtype = {
        _paths.join(p): np.dtype(v.dtype)
        for p, v in flat.items()
        if p in t.params and np.dtype(v.dtype) != _match.param_dtype(t.params[p])
    }
    skeleton = _paths.subtrees(params)
    return dry_run(
        model,
        key,
        *sample,
        state=_paths.unflatten(state, skeleton),
        dtype=dtype or None,
        **kw,
    )
