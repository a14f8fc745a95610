"""Model-wide switches: one option set on every layer of a model that has it.

Layers are frozen dataclasses, and an option such as ``compute_dtype`` or
``channels_first`` is a field of each layer that has it. :func:`set_everywhere` is
the one walk that rewrites such a field through a whole model (children in fields,
lists and tuples of children, layers of your own included) and returns a copy;
:func:`lazyinit.mixed_precision` and :func:`channels_first` are that walk with a name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["set_everywhere", "channels_first"]


def set_everywhere(model: Any, name: str, value: Any) -> Any:
    """A copy of ``model`` where every dataclass with a field ``name`` has it set to ``value``.

    Parts that change nothing are kept as they are (the same objects).
    """
    if isinstance(model, list | tuple):
        items = [set_everywhere(v, name, value) for v in model]
        same = all(new is old for new, old in zip(items, model))
        if same:
            return model
        return type(model)(*items) if hasattr(model, "_fields") else type(model)(items)
    if not dataclasses.is_dataclass(model) or isinstance(model, type):
        return model
    fields = [f.name for f in dataclasses.fields(model)]
    changes = {
        f: new
        for f in fields
        if f != name
        and (new := set_everywhere(getattr(model, f), name, value)) is not getattr(model, f)
    }
    if name in fields and not _same(getattr(model, name), value):
        changes[name] = value
    return dataclasses.replace(model, **changes) if changes else model


def _same(a: Any, b: Any) -> bool:
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:
        return False


def channels_first(model: Any) -> Any:
    """A copy of ``model`` whose layers all take PyTorch's ``(N, C, *spatial)`` layout.

    Sets ``channels_first=True`` on every layer that has the option (``Conv``,
    ``ConvTranspose``, ``BatchNorm``, ``InstanceNorm``, ``GroupNorm``, the pooling
    layers, and layers of your own with a ``channels_first`` field), as
    :func:`lazyinit.mixed_precision` sets ``compute_dtype``; other layers are
    unchanged. Parameter shapes do not depend on the layout, so the same params serve
    both models.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> cnn = li.Sequential([li.Conv(8, 3, padding=1), li.BatchNorm(), li.nn.relu,
        ...                      li.MaxPool(2), li.GlobalAvgPool(), li.Linear(10)])
        >>> torch_like = li.channels_first(cnn)
        >>> params = li.dry_run(torch_like, jax.random.key(0), jnp.ones((2, 3, 32, 32)))
        >>> params["0"]["kernel"].shape
        (3, 3, 3, 8)
        >>> torch_like(params, jnp.ones((2, 3, 32, 32))).shape
        (2, 10)
    """
    return set_everywhere(model, "channels_first", True)
