"""The rule vocabulary: how parameters of a lazyinit layer correspond to another library's entries.

A :class:`Rule` ties some parameters of one layer to some entries of the
other library's state, with a function each way. Rules are small values that
compose: :func:`same`, :func:`permute`, :func:`reshape` and :func:`linear`
(one parameter, one entry, in some layout); :func:`fused` (several parameters
packed into one entry: q/k/v in one ``c_attn``, a gate/up pair); :func:`rotary`
(the rows of q/k in another rotary layout); :func:`extra` (an entry lazyinit
does not keep). A converter returns a list of them for one layer.

Shapes written with ``-1`` are read off the array being converted, so a rule
also serves a model whose input sizes are not known yet (no sample).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._typing import Path
from ..errors import InvalidArgumentError

__all__ = [
    "Leaf",
    "Rule",
    "same",
    "permute",
    "reshape",
    "linear",
    "fused",
    "rotary",
    "extra",
    "LAYOUTS",
]

Convert = Callable[..., Any]
LAYOUTS = ("linear", "conv1d")
"""How a 2-d weight stores a kernel: ``'linear'`` (out, in), as ``nn.Linear``; ``'conv1d'``
(in, out), as Hugging Face's ``Conv1D`` (GPT-2)."""


@dataclasses.dataclass(frozen=True)
class Leaf:
    """What a converter knows of one parameter: its shape (``None`` for a dim that depends on an
    input not seen yet), dtype and whether it is trainable."""

    shape: tuple[int | None, ...]
    dtype: Any
    trainable: bool = True


@dataclasses.dataclass(frozen=True)
class Rule:
    """Parameters ``lazy`` of a layer correspond to entries ``other`` of the other library.

    Paths are relative to the layer (lazyinit) and to its module (the other
    library). ``to_lazy(*other_arrays)`` and ``to_other(*lazy_arrays)`` each
    return a tuple, in the order of the paths. A rule with no ``lazy`` paths
    is an entry lazyinit does not keep (PyTorch's ``num_batches_tracked`` of an
    ``InstanceNorm``): it is checked on import and written by ``to_other()`` on export.
    """

    lazy: tuple[Path, ...]
    other: tuple[Path, ...]
    to_lazy: Convert
    to_other: Convert


def _lazy(name: str | Path) -> Path:
    return tuple(name.split("/")) if isinstance(name, str) else tuple(name)


def _other(other: str | Path) -> Path:
    return (other,) if isinstance(other, str) else tuple(other)


def same(name: str, other: str | Path | None = None) -> Rule:
    """Parameter ``name`` is entry ``other`` (default: the same name), in the same layout.

    Examples:
        >>> from lazyinit.interop import same
        >>> same("scale", "weight").other
        (('weight',),)
    """
    return permute(name, other or name, None)


def permute(name: str, other: str | Path, perm: tuple[int, ...] | None) -> Rule:
    """Parameter ``name`` is entry ``other`` with its axes transposed by ``perm`` (lazyinit -> other).

    Examples:
        >>> import jax.numpy as jnp
        >>> from lazyinit.interop import permute
        >>> permute("kernel", "weight", (1, 0)).to_other(jnp.ones((3, 4)))[0].shape
        (4, 3)
    """
    if perm is None:
        return Rule((_lazy(name),), (_other(other),), lambda a: (a,), lambda a: (a,))
    back = tuple(int(i) for i in np.argsort(perm))
    return Rule(
        (_lazy(name),),
        (_other(other),),
        lambda a: (jnp.transpose(a, back),),
        lambda a: (jnp.transpose(a, perm),),
    )


def reshape(
    name: str, other: str | Path, shape: Sequence[int], other_shape: Sequence[int] = (-1,)
) -> Rule:
    """Parameter ``name`` is entry ``other`` reshaped to ``shape`` (a ``-1`` is read off the entry);
    on export it is reshaped to ``other_shape`` (default: flat).

    Examples:
        >>> import jax.numpy as jnp
        >>> from lazyinit.interop import reshape
        >>> reshape("query/bias", "q.bias", (2, -1)).to_lazy(jnp.ones(8))[0].shape
        (2, 4)
    """
    shape, other_shape = tuple(shape), tuple(other_shape)
    return Rule(
        (_lazy(name),),
        (_other(other),),
        lambda a: (jnp.reshape(a, shape),),
        lambda a: (jnp.reshape(a, other_shape),),
    )


def linear(
    name: str,
    other: str | Path = "weight",
    *,
    layout: str = "linear",
    in_shape: Sequence[int] | None = None,
    out_shape: Sequence[int] | None = None,
) -> Rule:
    """A kernel ``(*in_shape, *out_shape)`` stored as a 2-d weight in ``layout`` (``'linear'`` or ``'conv1d'``).

    ``'linear'`` is ``nn.Linear``'s ``(out, in)``, ``'conv1d'`` Hugging Face
    ``Conv1D``'s ``(in, out)``. ``in_shape`` and ``out_shape`` split the
    kernel's input and output axes (attention's ``(in, heads, head_dim)``
    kernel has ``out_shape=(heads, -1)``); by default each is one axis.

    Examples:
        >>> import jax.numpy as jnp
        >>> from lazyinit.interop import linear
        >>> rule = linear("kernel", "weight", out_shape=(2, -1))
        >>> rule.to_lazy(jnp.ones((8, 3)))[0].shape           # (out, in) -> (in, heads, head_dim)
        (3, 2, 4)
        >>> linear("kernel", layout="conv1d").to_other(jnp.ones((3, 8)))[0].shape
        (3, 8)
    """
    if layout not in LAYOUTS:
        raise InvalidArgumentError(
            f"linear: layout={layout!r} is not a layout; pass 'linear' (nn.Linear's (out, in)) "
            "or 'conv1d' (Hugging Face Conv1D's (in, out))."
        )
    n_in = 1 if in_shape is None else len(in_shape)

    def to_lazy(w: Any) -> tuple[Any]:
        m = jnp.transpose(w) if layout == "linear" else w  # (in, out)
        ins = (m.shape[0],) if in_shape is None else tuple(in_shape)
        outs = (m.shape[1],) if out_shape is None else tuple(out_shape)
        if len(ins) + len(outs) > 2:
            ins, outs = _fill(ins, m.shape[0]), _fill(outs, m.shape[1])
        return (jnp.reshape(m, (*ins, *outs)),)

    def to_other(k: Any) -> tuple[Any]:
        m = jnp.reshape(k, (math.prod(k.shape[:n_in]), -1))
        return (jnp.transpose(m) if layout == "linear" else m,)

    return Rule((_lazy(name),), (_other(other),), to_lazy, to_other)


def _fill(shape: tuple[int, ...], size: int) -> tuple[int, ...]:
    """``shape`` with its ``-1`` (if any) resolved so that it holds ``size`` elements."""
    known = math.prod(d for d in shape if d != -1)
    return tuple(size // known if d == -1 else d for d in shape)


def fused(
    other: str | Path, parts: Sequence[Rule], *, axis: int = 0, sizes: Sequence[int] | None = None
) -> Rule:
    """Several parameters packed into one entry ``other``, concatenated along ``axis``.

    Each of ``parts`` converts its parameters to one piece of the entry (its own
    ``other`` is ignored): ``fused("in_proj_weight", [linear("query/kernel"),
    linear("key/kernel"), linear("value/kernel")])`` is ``nn.MultiheadAttention``'s
    packed q/k/v. Import splits the entry into equal pieces, or by ``sizes``
    along ``axis`` (grouped-query attention packs fewer key/value rows).

    Examples:
        >>> import jax.numpy as jnp
        >>> from lazyinit.interop import fused, linear
        >>> rule = fused("c_fc.weight", [linear("gate/kernel"), linear("up/kernel")])
        >>> [k.shape for k in rule.to_lazy(jnp.ones((10, 3)))]   # (2 * 5, 3): gate rows, then up
        [(3, 5), (3, 5)]
        >>> rule.to_other(jnp.ones((3, 5)), jnp.ones((3, 5)))[0].shape
        (10, 3)
    """
    parts = list(parts)
    lazy = tuple(p for part in parts for p in part.lazy)
    counts = [len(part.lazy) for part in parts]

    def to_lazy(w: Any) -> tuple[Any, ...]:
        if sizes is None:
            pieces = jnp.split(w, len(parts), axis=axis)
        else:
            pieces = jnp.split(w, np.cumsum(sizes)[:-1].tolist(), axis=axis)
        return tuple(a for part, piece in zip(parts, pieces) for a in part.to_lazy(piece))

    def to_other(*arrays: Any) -> tuple[Any]:
        pieces, i = [], 0
        for part, k in zip(parts, counts):
            pieces.append(part.to_other(*arrays[i : i + k])[0])
            i += k
        return (jnp.concatenate(pieces, axis=axis),)

    return Rule(lazy, (_other(other),), to_lazy, to_other)


def rotary(rule: Rule, head_dim: int, layout: str = "interleaved") -> Rule:
    """``rule``, for q/k projections whose other library orders each head's rows for another
    rotary layout.

    lazyinit's rotary embedding (``li.MultiHeadAttention(rotary=True)``) pairs
    feature ``j`` of a head with ``j + head_dim / 2`` (half-split, as Hugging
    Face's LLaMA); ``layout='interleaved'`` is the pairing of ``2j`` with ``2j + 1``
    (Meta's original LLaMA checkpoints, GPT-J). Each head's output features are
    permuted on import and back on export. ``layout='half'`` leaves ``rule`` as it is.

    Examples:
        >>> import jax.numpy as jnp
        >>> from lazyinit.interop import linear, rotary
        >>> rule = rotary(linear("kernel", "weight"), head_dim=4)
        >>> rule.to_lazy(jnp.arange(4.0)[:, None])[0].tolist()  # rows 0, 1, 2, 3 of one head
        [[0.0, 2.0, 1.0, 3.0]]
    """
    if layout == "half":
        return rule
    if layout != "interleaved":
        raise InvalidArgumentError(
            f"rotary: layout={layout!r} is not a rotary layout; pass 'interleaved' (pairs 2j, "
            "2j + 1: Meta's LLaMA, GPT-J) or 'half' (pairs j, j + head_dim/2: lazyinit's own)."
        )
    half = np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])
    back = np.argsort(half)

    def per_head(a: Any, order: np.ndarray) -> Any:
        heads = a if a.shape[-1] == head_dim else jnp.reshape(a, (*a.shape[:-1], -1, head_dim))
        return jnp.reshape(jnp.take(heads, order, axis=-1), a.shape)

    return Rule(
        rule.lazy,
        rule.other,
        lambda *w: tuple(per_head(a, half) for a in rule.to_lazy(*w)),
        lambda *k: rule.to_other(*(per_head(a, back) for a in k)),
    )


def extra(other: str | Path, value: Callable[[], Any]) -> Rule:
    """An entry of the other library that lazyinit does not keep; ``value()`` is written on export.

    Examples:
        >>> import numpy as np
        >>> from lazyinit.interop import extra
        >>> extra("num_batches_tracked", lambda: np.zeros((), np.int64)).to_other()[0]
        array(0)
    """
    return Rule((), (_other(other),), lambda a: (), lambda: (value(),))
