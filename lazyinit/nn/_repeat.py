"""``Repeat``: one block applied ``n`` times through ``jax.lax.scan``, over stacked params.

A deep stack of identical blocks compiles as one block: ``Repeat(block, 12)``
traces ``block`` once, in the dry run and under ``jax.jit``. Its params are the
block's with every leaf stacked on a new leading axis of length ``n`` (logical
axis ``"layers"``, for sharding rules). Values follow the key scheme as if the
model were unrolled: slice ``i`` of every leaf is bit for bit what
``Sequential([block] * n)`` draws at ``<path>/<i>/...``, so
:func:`stack_layers` and :func:`unstack_layers` convert checkpoints between the
two losslessly. flax's ``nn.scan`` splits one key per step instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _buffers, _paths
from .._layer import Layer
from .._recorder import is_tracing, record_stacked
from .._spec import Uninitialized
from .._trace_cache import aval, is_array
from .._typing import Params
from ..errors import ConfigureLayerError, InferShapeError, InvalidArgumentError
from ._sequential import accepted_keywords, check_keywords

__all__ = [
    "Repeat",
    "stack_layers",
    "unstack_layers",
    "check_count",
    "block_kwargs",
    "with_key",
]


def check_count(owner: str, layer: Any, n: Any) -> None:
    if not isinstance(layer, Layer):
        raise ConfigureLayerError(f"{owner} takes a li.Layer to copy, got {layer!r}.")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise InvalidArgumentError(f"{owner}: n must be a positive int (the copies), got {n!r}.")


def block_kwargs(owner: Layer, block: Layer, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's keywords that ``block`` accepts (a typo in any is an error)."""
    check_keywords(owner, [block], kwargs)
    names = accepted_keywords(type(block))  # type: ignore[arg-type]
    return dict(kwargs) if names is None else {k: v for k, v in kwargs.items() if k in names}


def with_key(kwargs: dict[str, Any], i: Any) -> dict[str, Any]:
    """Copy ``i`` draws with ``fold_in(key, i)``, as ``Sequential``'s child ``i`` does."""
    if kwargs.get("key") is None:
        return kwargs
    return {**kwargs, "key": jax.random.fold_in(kwargs["key"], i)}


class Repeat(Layer):
    """``block`` applied ``n`` times in sequence through ``jax.lax.scan``, over stacked params.

    The block must map its input to an output of the same shape and dtype
    (the scan's carry). Keywords of the call reach the block; ``key=``
    reaches copy ``i`` as ``fold_in(key, i)``, as in ``Sequential``. With
    ``remat=True`` each step is wrapped in ``jax.checkpoint`` (``policy``
    chooses what it saves), trading compute for activation memory. ``unroll``
    is ``jax.lax.scan``'s: ``k`` copies per loop iteration (``True``: no loop),
    the same values and params, a faster step for a longer compile. Buffers
    (BatchNorm statistics) are stacked too and updated per copy.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> block = li.Residual([li.LayerNorm(), li.Linear(4)])
        >>> deep = li.Repeat(block, 3)
        >>> params = li.dry_run(deep, jax.random.key(0), jnp.ones((2, 4)))
        >>> jax.tree.map(jnp.shape, params)["layer"]["1"]
        {'bias': (3, 4), 'kernel': (3, 4, 4)}
        >>> unrolled = li.dry_run(li.Sequential([block] * 3), jax.random.key(0), jnp.ones((2, 4)))
        >>> bool((params["layer"]["1"]["kernel"][2] == unrolled["2"]["layer"]["1"]["kernel"]).all())
        True
    """

    block: Layer
    n: int
    remat: bool = False
    policy: Callable[..., Any] | None = None
    axis: str = "layers"
    unroll: int | bool = 1

    def __post_init__(self) -> None:
        check_count("li.Repeat", self.block, self.n)
        object.__setattr__(self, "n", int(self.n))
        u = self.unroll
        if not isinstance(u, (bool, int, np.integer)) or (not isinstance(u, bool) and u < 1):
            raise InvalidArgumentError(
                f"li.Repeat: unroll must be a positive int (copies per loop iteration) or True "
                f"(no loop), got {u!r}. Use unroll=1 for one copy per iteration."
            )

    @property
    def stacked_layer(self) -> Layer:
        """The layer copied ``n`` times (``li.summary`` shows one row, ``<layer> x<n>``)."""
        return self.block

    def summary_label(self) -> str:
        return f"{type(self).__name__}: {type(self.block).__name__} x{self.n}"

    def children(self) -> dict[str, Layer]:
        return {}  # the block's params are this layer's own, stacked: no key of their own

    children._lazyinit_default = True  # type: ignore[attr-defined]  # derived only by tracing

    def __call__(self, params: Any, x: Any, **kwargs: Any) -> Any:
        kwargs = block_kwargs(self, self.block, kwargs)
        if is_tracing(params):  # a dry run: trace one copy, declare n
            y = record_stacked(params, self.block, self.n, self.axis, (x,), with_key(kwargs, 0))
            _check_carry(x, y)
            return y

        def step(p: Params, carry: Any, i: Any) -> Any:
            return self.block(p, carry, **with_key(kwargs, i))

        body = _buffers.collect_per_copy(step)

        def scan_body(carry: Any, xs: tuple[Params, Any]) -> tuple[Any, Params]:
            return body(xs[0], carry, xs[1])

        if self.remat:
            scan_body = jax.checkpoint(scan_body, policy=self.policy)
        y, updates = jax.lax.scan(scan_body, x, (params, jnp.arange(self.n)), unroll=self.unroll)
        _buffers.report_stacked(params, updates)
        return y


def _check_carry(x: Any, y: Any) -> None:
    shapes = [jax.tree.map(lambda a: aval(a) if is_array(a) else a, t) for t in (x, y)]
    if shapes[0] != shapes[1]:
        raise InferShapeError(
            f"li.Repeat's block maps {_show(shapes[0])} to {_show(shapes[1])}; a repeated block "
            "must return what it takes (same shape and dtype), as each output is the next "
            "input. Repeat only the part that keeps the shape, and apply the rest once."
        )


def _show(tree: Any) -> str:
    return str(
        jax.tree.map(lambda a: f"{a.dtype}{list(a.shape)}" if hasattr(a, "shape") else a, tree)
    )


def _leading(path: str, leaf: Any) -> int:
    shape = getattr(leaf, "shape", None)
    if shape is None or len(shape) == 0:
        raise InvalidArgumentError(
            f"unstack_layers: leaf {path!r} has shape {shape}, not a stacked axis. Pass the "
            "params of a li.Repeat or li.Ensemble (every leaf stacked on a leading axis)."
        )
    return shape[0]


def _slice(leaf: Any, i: int) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype)
    if isinstance(leaf, Uninitialized):
        return Uninitialized(leaf.shape and leaf.shape[1:], leaf.dtype, leaf.device)
    spec = getattr(getattr(leaf, "sharding", None), "spec", None)
    if spec and spec[0] is not None:  # the stacked axis is sharded: slice on the host
        return np.asarray(leaf)[i]
    return leaf[i]


def _stack(leaves: list[Any]) -> Any:
    first = leaves[0]
    if isinstance(first, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct((len(leaves), *first.shape), first.dtype)
    if isinstance(first, Uninitialized):
        known = None if first.shape is None else (len(leaves), *first.shape)
        return Uninitialized(known, first.dtype, first.device)
    return jnp.stack(leaves)


def _at(tree: Params, at: str | None, convert: Callable[[Any, str], Any]) -> Params:
    if at is None or at == "":
        return convert(tree, "<root>")
    path = tuple(at.split("/"))
    node, parents = tree, []
    for name in path:
        if not isinstance(node, Mapping) or name not in node:
            raise InvalidArgumentError(f"There is no subtree {at!r} in the params to convert.")
        parents.append(node)
        node = node[name]
    new = convert(node, at)
    for parent, name in zip(reversed(parents), reversed(path)):
        new = {**parent, name: new}
    return new


def unstack_layers(tree: Params, at: str | None = None) -> Params:
    """Stacked params (``li.Repeat``/``li.Ensemble``) -> ``{"0": ..., "1": ..., ...}``.

    ``at`` is the ``/``-joined path of the stacked subtree (the whole tree by
    default); the result is what ``Sequential([block] * n)`` has there, with
    the same values. The input is not changed.

    Examples:
        >>> import jax.numpy as jnp, lazyinit as li
        >>> li.unstack_layers({"w": jnp.arange(6).reshape(3, 2)})["2"]["w"].tolist()
        [4, 5]
    """

    def convert(sub: Any, where: str) -> Params:
        flat = _paths.flatten(sub, lambda x: not isinstance(x, Mapping), what="params")
        sizes = {_paths.join(p): _leading(_paths.join(p), leaf) for p, leaf in flat.items()}
        if len(set(sizes.values())) > 1:
            raise InvalidArgumentError(
                f"unstack_layers at {where!r}: leaves disagree on the stacked axis: {sizes}. "
                "Every leaf of a stacked subtree has the same leading size."
            )
        n = next(iter(sizes.values()), 0)
        return {
            str(i): _paths.unflatten({p: _slice(leaf, i) for p, leaf in flat.items()})
            for i in range(n)
        }

    return _at(tree, at, convert)


def stack_layers(tree: Params, at: str | None = None) -> Params:
    """``{"0": ..., "1": ..., ...}`` (an unrolled ``Sequential([block] * n)``) -> stacked params.

    The inverse of :func:`unstack_layers`: every copy must have the same paths,
    shapes and dtypes.

    Examples:
        >>> import jax.numpy as jnp, lazyinit as li
        >>> li.stack_layers({"0": {"w": jnp.zeros(2)}, "1": {"w": jnp.ones(2)}})["w"].shape
        (2, 2)
    """

    def convert(sub: Any, where: str) -> Params:
        names = sorted(sub, key=lambda k: int(k) if str(k).isdigit() else -1)
        if not names or names != [str(i) for i in range(len(names))]:
            raise InvalidArgumentError(
                f"stack_layers at {where!r}: expected copies named '0', '1', ..., found "
                f"{sorted(sub)}. Pass the subtree of a Sequential([block] * n)."
            )
        flats = [_paths.flatten(sub[k], lambda x: not isinstance(x, Mapping)) for k in names]
        sig = [{p: (np.shape(v), getattr(v, "dtype", None)) for p, v in f.items()} for f in flats]
        for k, s in zip(names[1:], sig[1:]):
            if s != sig[0]:
                diff = sorted(_paths.join(p) for p in set(s) ^ set(sig[0])) or sorted(
                    _paths.join(p) for p in s if s[p] != sig[0].get(p)
                )
                raise InvalidArgumentError(
                    f"stack_layers at {where!r}: copy {k!r} differs from copy '0' at {diff}; "
                    "only identical blocks stack."
                )
        return _paths.unflatten({p: _stack([f[p] for f in flats]) for p in flats[0]})

    return _at(tree, at, convert)
