"""Lazy state: placeholders before a dry run, and PyTorch's ``load_state_dict`` as a pure function."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from . import _match, _paths, _structure
from ._match import Report
from ._materialize import placement
from ._spec import Uninitialized
from ._tracer import trace
from ._typing import Path, PerPath, State

__all__ = ["lazy_state", "has_uninitialized", "uninitialized_paths", "load_state"]


def lazy_state(
    model: Any, /, *sample: Any, dtype: PerPath = None, device: PerPath = None, **kwargs: Any
) -> State:
    """The model's parameters before a dry run: a nested dict of :class:`Uninitialized`.

    With a sample (as for :func:`lazyinit.dry_run`), the model is traced
    abstractly and the placeholders are exactly the dry run's paths, every dim
    known. Without one, the paths are derived from what the layers declare
    (their ``specs`` and their child fields), with ``?`` for the dims that
    depend on the input; a layer that cannot say without being traced
    (children built inside ``__call__``) shows as one placeholder of unknown
    structure, so the state of a model with parameters is never ``{}``.
    ``dtype`` and ``device`` choose, for the whole model or per path, what
    the dry run will materialize in; pass the result as
    ``li.dry_run(..., state=...)``, which checks the derived paths against the
    trace.

    Examples:
        >>> import jax.numpy as jnp, lazyinit as li
        >>> li.lazy_state(li.Linear(10))
        {'kernel': Uninitialized(shape=(?, 10), dtype=float32), 'bias': Uninitialized(shape=(10,), dtype=float32)}
        >>> li.lazy_state(li.Linear(10), jnp.ones((2, 3)))["kernel"]
        Uninitialized(shape=(3, 10), dtype=float32)
    """
    if not sample and not kwargs:
        return _structure.derive(model, dtype=dtype, device=device)
    t = trace(model, *sample, **kwargs)
    flat = {
        path: Uninitialized(
            param.shape,
            _match.param_dtype(param, dtype, path),
            _paths.resolve(device, path),
            _paths.join(path),
        )
        for path, param in t.params.items()
    }
    return _paths.unflatten(flat, t.layers)


def uninitialized_paths(tree: Any) -> list[str]:
    """The ``/``-joined paths of every :class:`Uninitialized` leaf in ``tree``.

    A ``jax.ShapeDtypeStruct`` is a hole too (an abstract result) but not a
    placeholder: it is not listed.
    """
    if isinstance(tree, Uninitialized):
        return [_paths.join(())]
    if not isinstance(tree, dict):
        return []
    flat = _paths.flatten(tree, lambda x: True)
    return [_paths.join(p) for p, v in flat.items() if isinstance(v, Uninitialized)]


def has_uninitialized(tree: Any) -> bool:
    """Whether ``tree`` still holds placeholders: PyTorch's ``has_uninitialized_params()``.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> model = li.Linear(3)
        >>> li.has_uninitialized(li.lazy_state(model))
        True
        >>> li.has_uninitialized(li.dry_run(model, jax.random.key(0), jnp.ones((1, 2))))
        False
    """
    return bool(uninitialized_paths(tree))


def load_state(
    current: State, incoming: State, *, strict: bool = True, cast: bool = False
) -> tuple[State, Report]:
    """Loads ``incoming`` into ``current`` by PyTorch's rules, as a pure function.

    * a placeholder takes an initialized value whose shape agrees with the
      dimensions it already knows (and is placed on its chosen device); one of
      unknown structure (``shape=?``) takes the whole subtree at its path;
    * an initialized leaf takes one of the same shape and dtype; another shape
      is a *size mismatch*;
    * a placeholder loaded into an initialized leaf is an error; into a
      placeholder it changes nothing, so loading twice is harmless;
    * with ``strict=True`` paths of ``current`` absent from ``incoming``
      (*missing*) and paths of ``incoming`` absent from ``current``
      (*unexpected*) are errors; otherwise they are reported.

    Every problem is reported at once, and the inputs are never modified (numpy
    leaves are copied). Dtypes must match unless ``cast=True``, which converts
    and reports. The rules are those of every other entry point
    (``lazyinit._match``).

    Returns:
      ``(merged, report)``: a new tree shaped like ``current``, and a :class:`Report`.

    Raises:
      StateMismatchError: listing every offending path.
    """
    cur = _paths.flatten_state(current, "current state")
    inc = _paths.flatten_state(incoming, "incoming state")
    m = _match.match({p: _match.Target.of(v) for p, v in cur.items()}, inc, cast=cast)
    problems = _match.judge(m, missing=strict, unexpected=strict)
    advice = "Fix the state, or pass strict=False to load what fits and get a report of the rest."
    if strict and m.missing and m.unexpected:
        advice += (
            "\nIf the current state is li.lazy_state(model) without a sample, its paths were "
            "derived from the layers' fields: pass a sample, li.lazy_state(model, x), for the "
            "paths the model's trace really has."
        )
    _match.refuse("Cannot load the state", problems, advice)
    out: dict[Path, Any] = {}
    for path in dict.fromkeys([*cur, *m.values, *m.holes]):
        if path in m.values:
            out[path] = _place(m.values[path], cur.get(path))
        elif path in m.holes:  # what the two sides know together; the current device wins
            old, hole = cur.get(path), m.holes[path].placeholder()
            device = getattr(old, "device", None) or hole.device
            out[path] = dataclasses.replace(hole, device=device)
    if () in out:  # a root placeholder that stays one
        merged: Any = out[()]
    else:
        whole = isinstance(current, Uninitialized)
        merged = _paths.unflatten(out, _paths.subtrees(incoming if whole else current))
    return merged, _match.report(
        loaded=m.taken, missing=m.missing, unexpected=m.unexpected, cast=m.cast
    )


def _place(value: Any, target: Any) -> Any:
    """A loaded value, moved to the device its placeholder chose."""
    device = target.device if isinstance(target, Uninitialized) else None
    if device is None or not isinstance(value, jax.Array):
        return value
    return jax.device_put(value, placement(device))
