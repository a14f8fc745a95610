"""PyTorch's layouts: the rules of each lazyinit layer beside each torch module type.

A rule set is registered per pair ``(lazyinit layer type, torch module type)``;
the first one listed for a layer type also serves a bare state dict, where no
module type is known (``layouts=`` declares another):

* ``Linear`` <- ``nn.Linear`` (weight ``(out, in)`` is ``kernel (in, out)``) and
  Hugging Face ``Conv1D`` (weight ``(in, out)`` is the kernel as it is).
* ``Conv`` <- ``nn.Conv{1,2,3}d``: weight ``(out, in/g, *k)`` is ``kernel (*k, in/g, out)``.
* ``ConvTranspose`` <- ``nn.ConvTranspose{1,2,3}d``: weight ``(in, out/g, *k)`` is
  ``kernel (*k, in/g, out)`` spatially flipped and regrouped.
* ``BatchNorm`` <- ``nn.BatchNorm{1,2,3}d``, ``nn.SyncBatchNorm``; ``InstanceNorm`` <-
  ``nn.InstanceNorm{1,2,3}d``: ``weight, bias, running_mean, running_var`` are ``scale,
  bias, mean, var``; ``num_batches_tracked`` is BatchNorm's ``count`` (InstanceNorm's
  is always 0 in PyTorch, and written as 0).
* ``LayerNorm``, ``RMSNorm``, ``GroupNorm`` <- the same: ``weight`` is ``scale``.
* ``Embedding`` <- ``nn.Embedding``: ``weight`` is ``embedding``.
* ``MultiHeadAttention`` <- ``nn.MultiheadAttention(batch_first=True)``: the packed
  ``in_proj_weight`` (3E, E) is ``query``/``key``/``value`` ``kernel``s (E, H, D)
  (``q/k/v_proj_weight`` when ``kdim``/``vdim`` differ), ``in_proj_bias`` their
  ``bias``es (H, D), ``out_proj.weight`` (E, E) the ``out`` ``kernel`` (H, D, E).
  :func:`attention` builds the rules of other attention modules (GPT-2's, BERT's).

``torch`` and ``transformers`` are never imported here: module types are named.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _paths, nn
from .._typing import Path
from ._planning import Planned
from ._registry import Converter, Registry, Shape
from ._rules import Leaf, Rule, extra, fused, linear, reshape, same

__all__ = [
    "REGISTRY",
    "ALIASES",
    "register",
    "attention",
    "register_builtins",
    "hint",
    "square_notes",
]

ALIASES = {
    "linear": "torch.nn.modules.linear.Linear",
    "conv1d": "transformers.pytorch_utils.Conv1D",
}
"""Names for ``layouts=``: ``'linear'`` is ``nn.Linear``, ``'conv1d'`` Hugging Face's ``Conv1D``."""

REGISTRY = Registry(ALIASES)


def register(layer_type: type, module_type: Any = None) -> Callable[[Converter], Converter]:
    """Registers ``converter(layer, leaves) -> list[Rule]`` for ``layer_type`` (and subclasses).

    With ``module_type`` (a torch module class, or its class name such as
    ``'GPT2Attention'``), the converter serves ``layer_type`` beside modules of
    that type (and its subclasses); without, for a bare state dict, and beside
    any module if the layer type has no rules per module type (a layer of your
    own). A user's registration replaces a built-in one for the same pair. ``leaves`` maps each parameter path below the layer (relative, a
    tuple) to its :class:`lazyinit.interop.Leaf`; the rules (:mod:`lazyinit.interop`:
    ``same``, ``linear``, ``fused``, ``rotary``, ...) say which PyTorch entries
    (relative dotted names) each parameter comes from.

    Examples:
        >>> import jax, jax.numpy as jnp, torch, lazyinit as li
        >>> from lazyinit.interop import linear, same
        >>> from lazyinit.interop.torch import from_torch_state_dict, register
        >>> class Projection(torch.nn.Module):       # a torch layer that stores (in, out)
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.w, self.b = torch.nn.Parameter(torch.ones(3, 4)), torch.nn.Parameter(torch.zeros(4))
        >>> @register(li.Linear, Projection)
        ... def _(layer, leaves):
        ...     return [linear("kernel", "w", layout="conv1d"), same("bias", "b")]
        >>> params, _ = from_torch_state_dict(li.Linear(4), Projection(), jnp.ones((2, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'bias': (4,), 'kernel': (3, 4)}
    """

    def decorate(converter: Converter) -> Converter:
        REGISTRY.add(layer_type, converter, module_type)
        return converter

    return decorate


def _own(leaves: dict[Path, Leaf], *names: str) -> list[str]:
    return [n for n in names if (n,) in leaves]


def _linear(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    return [linear("kernel", "weight"), *map(same, _own(leaves, "bias"))]


def _conv1d(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    return [linear("kernel", "weight", layout="conv1d"), *map(same, _own(leaves, "bias"))]


def _conv(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    n = len(leaves[("kernel",)].shape) - 2
    return [_perm("kernel", "weight", (n + 1, n, *range(n))), *map(same, _own(leaves, "bias"))]


def _perm(name: str, other: str, perm: tuple[int, ...]) -> Rule:
    back = tuple(int(i) for i in np.argsort(perm))
    return Rule(
        ((name,),),
        ((other,),),
        lambda a: (jnp.transpose(a, back),),
        lambda a: (jnp.transpose(a, perm),),
    )


def _conv_transpose(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    """PyTorch's ``(in, out/g, *k)`` weight is lazyinit's ``(*k, in/g, out)`` kernel flipped, by group."""
    n = len(leaves[("kernel",)].shape) - 2
    g = layer.groups
    spatial = tuple(range(n))

    def to_lazy(w: jax.Array) -> tuple[jax.Array]:
        cin, per, *k = w.shape
        w = jnp.flip(jnp.reshape(w, (g, cin // g, per, *k)), tuple(range(3, 3 + n)))
        w = jnp.transpose(w, (*range(3, 3 + n), 1, 0, 2))  # (*k, in/g, g, out/g)
        return (jnp.reshape(w, (*k, cin // g, g * per)),)

    def to_torch(kernel: jax.Array) -> tuple[jax.Array]:
        *k, per_in, cout = kernel.shape
        w = jnp.reshape(kernel, (*k, per_in, g, cout // g))
        w = jnp.transpose(w, (n + 1, n, n + 2, *spatial))  # (g, in/g, out/g, *k)
        return (jnp.flip(jnp.reshape(w, (g * per_in, cout // g, *k)), tuple(range(2, 2 + n))),)

    rule = Rule((("kernel",),), (("weight",),), to_lazy, to_torch)
    return [rule, *map(same, _own(leaves, "bias"))]


def _norm(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    rules = [same(n, t) for n, t in (("scale", "weight"), ("bias", "bias")) if (n,) in leaves]
    if ("mean",) in leaves:
        rules += [same("mean", "running_mean"), same("var", "running_var")]
        if ("count",) in leaves:  # BatchNorm counts its training batches, as PyTorch does
            rules.append(_count(leaves[("count",)].dtype))
        else:  # InstanceNorm: PyTorch's count stays 0
            rules.append(extra("num_batches_tracked", lambda: np.zeros((), np.int64)))
    return rules


def _count(dtype: Any) -> Rule:
    """PyTorch's integer ``num_batches_tracked`` is BatchNorm's floating-point ``count``."""
    return Rule(
        (("count",),),
        (("num_batches_tracked",),),
        lambda n: (jnp.asarray(n).astype(dtype),),
        lambda c: (jnp.round(c).astype(jnp.int32),),
    )


def _embedding(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    return [same(name, "weight") for (name,) in leaves]


def attention(
    *,
    qkv: str | None = None,
    q: str | None = None,
    k: str | None = None,
    v: str | None = None,
    out: str,
    layout: str = "linear",
    bias: str | None = None,
) -> Converter:
    """The rules of ``li.MultiHeadAttention`` beside an attention module whose projections are
    named as given.

    Each name is the prefix of a projection's ``weight`` and ``bias`` entries,
    relative to the attention module: ``qkv`` one packed q/k/v projection
    (GPT-2's ``"c_attn."``, ``nn.MultiheadAttention``'s ``"in_proj_"``), or
    ``q``, ``k`` and ``v`` apart (BERT's ``"self.query."``); ``out`` the output
    projection. ``layout`` is their weights' (``'linear'``: ``(out, in)``;
    ``'conv1d'``: ``(in, out)``); ``bias`` the prefix of a packed q/k/v bias
    when it differs from the weights' (``nn.MultiheadAttention`` with ``kdim``).

    Examples:
        >>> import lazyinit as li
        >>> from lazyinit.interop.torch import attention, register
        >>> gpt2 = attention(qkv="c_attn.", out="c_proj.", layout="conv1d")
        >>> _ = register(li.MultiHeadAttention, "GPT2Attention")(gpt2)
    """
    names = ("query", "key", "value")

    def convert(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
        heads = {n: int(leaves[(n, "kernel")].shape[1] or layer.num_heads) for n in names}
        split = 0 if layout == "linear" else 1

        def kernel(n: str, other: str = "") -> Rule:
            return linear(f"{n}/kernel", other, layout=layout, out_shape=(heads[n], -1))

        def per_head(n: str, other: str = "") -> Rule:
            return reshape(f"{n}/bias", other, (heads[n], -1))

        has_bias = ("query", "bias") in leaves
        if qkv is not None:
            rules = [fused(f"{qkv}weight", [kernel(n) for n in names], axis=split)]
        else:
            rules = [kernel(n, f"{p}weight") for n, p in zip(names, (q, k, v))]
        if has_bias and (bias or qkv) is not None:
            rules.append(fused(f"{bias or qkv}bias", [per_head(n) for n in names]))
        elif has_bias:
            rules += [per_head(n, f"{p}bias") for n, p in zip(names, (q, k, v))]
        rules.append(  # it reads one output per query head (fewer key/value heads with GQA)
            linear("out/kernel", f"{out}weight", layout=layout, in_shape=(heads["query"], -1))
        )
        if ("out", "bias") in leaves:
            rules.append(same("out/bias", f"{out}bias"))
        return rules

    return convert


def _multihead(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    """``nn.MultiheadAttention``: packed ``in_proj_weight``, or ``q/k/v_proj_weight`` apart when
    keys or values come from another width (``kdim``/``vdim``); ``in_proj_bias`` is packed."""
    widths = {leaves[(n, "kernel")].shape[0] for n in ("query", "key", "value")}
    if len(widths) == 1:
        return attention(qkv="in_proj_", out="out_proj.")(layer, leaves)
    parts = dict(q="q_proj_", k="k_proj_", v="v_proj_")
    return attention(**parts, out="out_proj.", bias="in_proj_")(layer, leaves)


_CONVS = tuple(f"torch.nn.modules.conv.Conv{d}d" for d in (1, 2, 3))
_TRANSPOSED = tuple(f"torch.nn.modules.conv.ConvTranspose{d}d" for d in (1, 2, 3))
_BATCH = (
    *(f"torch.nn.modules.batchnorm.BatchNorm{d}d" for d in (1, 2, 3)),
    "torch.nn.modules.batchnorm.SyncBatchNorm",
)
_INSTANCE = tuple(f"torch.nn.modules.instancenorm.InstanceNorm{d}d" for d in (1, 2, 3))
_NORMS = "torch.nn.modules.normalization."
_BUILTINS: list[tuple[type, Converter, tuple[str, ...], bool]] = [
    # (lazyinit layer, its rules, beside these module types, also for a bare state dict)
    (nn.Linear, _linear, ("torch.nn.modules.linear.Linear",), True),
    (nn.Linear, _conv1d, ("transformers.pytorch_utils.Conv1D",), False),
    (nn.Conv, _conv, _CONVS, True),
    (nn.ConvTranspose, _conv_transpose, _TRANSPOSED, True),
    (nn.BatchNorm, _norm, _BATCH, True),
    (nn.InstanceNorm, _norm, _INSTANCE, True),
    (nn.LayerNorm, _norm, (f"{_NORMS}LayerNorm",), True),
    (nn.RMSNorm, _norm, (f"{_NORMS}RMSNorm",), True),
    (nn.GroupNorm, _norm, (f"{_NORMS}GroupNorm",), True),
    (nn.Embedding, _embedding, ("torch.nn.modules.sparse.Embedding",), True),
    (nn.MultiHeadAttention, _multihead, ("torch.nn.modules.activation.MultiheadAttention",), True),
]


def register_builtins() -> None:
    """The rules of each lazyinit layer with a PyTorch counterpart; a user's registration of
    the same pair wins."""
    for layer_type, converter, kinds, default in _BUILTINS:
        for i, kind in enumerate(kinds):
            REGISTRY.add(layer_type, converter, kind, default=default and i == 0, replace=False)


# ---------------------------------------------------------------------------
# The size-mismatch hint: the likely cause, by the layer and what it saw.


def _dim(d: int | None) -> int:
    return -1 if d is None else d


def hint(found: Shape | None, expected: Shape | None, item: Planned | None) -> str:
    """Why an entry of ``item`` may have ``found`` where ``expected``: a layout the shapes
    cannot tell (Conv1D's), a channels-first sample given to channels-last layers, or a state
    already converted to lazyinit's layout."""
    if found is None or expected is None or None in expected or found == expected:
        return ""
    nchw = _channels_first_sample(found, expected, item) if item is not None else ""
    if nchw:
        return nchw
    if len(found) == 2 and tuple(found) == tuple(expected[::-1]):
        return _transposed(item)
    lazy = [p for p, l in zip(item.lazy, item.leaves) if l.shape == tuple(found)] if item else []
    if lazy and len(found) > 1:
        return (
            f" (lazyinit's own layout of {_paths.join(lazy[0])!r}: the state looks already "
            "converted; load it with li.load_state or li.dry_run(..., state=...), or pass "
            "PyTorch's own state dict)"
        )
    if len(found) > 2 and sorted(found, key=_dim) == sorted(expected, key=_dim):
        return (
            " (the same sizes in another order: PyTorch kernels are (out, in, *kernel_size), "
            "lazyinit's (*kernel_size, in, out); pass PyTorch's own layout)"
        )
    return ""


def _transposed(item: Planned | None) -> str:
    kind = item.kind if item is not None else None
    if item is not None and isinstance(item.layer, nn.Linear) and kind is None:
        at = _paths.join(item.at)
        return (
            " (the transpose: PyTorch's nn.Linear stores it (out, in), lazyinit (in, out); a "
            "Hugging Face Conv1D stores (in, out): if that is what this module is, pass the "
            f"torch module, or declare it: layouts={{{at!r}: 'conv1d'}}; else pass PyTorch's own "
            "state dict, not one already converted)"
        )
    return (
        " (the transpose: PyTorch stores it (out, in), lazyinit (in, out); pass PyTorch's "
        "own state dict, not one already converted)"
    )


def _channels_first_sample(found: Shape, expected: Shape, item: Planned) -> str:
    """A channels-last layer that inferred its channels from the last axis of an input whose
    axis 1 has the size the state says: the sample was given channels-first (NCHW)."""
    layer, x = item.layer, item.input
    shape = getattr(x, "shape", None)
    if getattr(layer, "channels_first", True) or shape is None or len(shape) < 3:
        return ""
    if len(found) != len(expected):
        return ""
    groups = getattr(layer, "groups", 1)
    diff = [i for i, (a, b) in enumerate(zip(found, expected)) if a != b]
    if len(diff) != 1 or expected[diff[0]] != shape[-1] // groups:
        return ""
    axes = [i for i in range(1, len(shape) - 1) if found[diff[0]] == shape[i] // groups]
    if not axes:
        return ""
    return (
        f" ({type(layer).__name__} at {_paths.join(item.at)!r} is channels-last and took "
        f"{shape[-1]} channels from the last axis of its input {tuple(shape)}; the state has "
        f"{found[diff[0]]}, the size of axis {axes[0]}: was the sample given channels-first "
        "(N, C, ...)? Pass it channels-last (N, ..., C), or make the layers channels-first "
        "(channels_first=True))"
    )


def square_notes(
    planned: list[Planned], expected: Mapping[Path, Shape], found: Mapping[Path, Shape]
) -> list[str]:
    """When some ``Linear`` weights were found transposed (a ``Conv1D`` layout, likely), the
    square ones of layers whose module type is unknown loaded either way: name them, with one
    ``layouts=`` declaring every such layer."""
    unknown = [
        item
        for item in planned
        if isinstance(item.layer, nn.Linear) and item.kind is None and item.other
    ]
    flipped, square = [], []
    for item in unknown:
        weight = item.other[0]
        shape, want = found.get(weight), expected.get(weight)
        if shape is None or want is None or len(shape) != 2:
            continue
        if shape[0] == shape[1]:
            square.append(item)
        elif tuple(shape) == tuple(want)[::-1]:
            flipped.append(item)
    if not flipped or not square:
        return []
    paths = ", ".join(f"{_paths.join(i.at)!r}: 'conv1d'" for i in [*flipped, *square])
    names = ", ".join(repr(_paths.join(i.at)) for i in square)
    return [
        f"the Linear layers {names} have square weights, whose shapes cannot tell nn.Linear's "
        "(out, in) from Conv1D's (in, out): if the transposed ones above are Conv1D, these "
        f"probably are too. Declare each (layouts={{{paths}}}, or 'linear' where it is one), or "
        "pass the torch module, whose types say"
    ]
