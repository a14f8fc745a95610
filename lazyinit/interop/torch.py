"""PyTorch state dicts to lazyinit params and back, with each layer's layout converted.

PyTorch's dotted keys are lazyinit's paths when the lazyinit model mirrors
the torch module's attribute names: ``fc1.weight`` is ``fc1/kernel``, and
``li.Sequential`` indices are ``nn.Sequential``'s (``0.weight``). Which
lazyinit layer owns each parameter comes from the dry run's trace, so the
right converter is picked per layer type:

* ``Linear`` <- ``Linear``/``LazyLinear``: ``weight`` (out, in) is ``kernel`` (in, out).
* ``Conv`` <- ``Conv{1,2,3}d``: ``weight`` (out, in/g, *k) is ``kernel`` (*k, in/g, out).
* ``ConvTranspose`` <- ``ConvTranspose{1,2,3}d``: ``weight`` (in, out/g, *k) is
  ``kernel`` (*k, in/g, out) spatially flipped and regrouped.
* ``BatchNorm``, ``InstanceNorm`` <- ``BatchNorm{1,2,3}d``, ``InstanceNorm{1,2,3}d``:
  ``weight, bias, running_mean, running_var`` are ``scale, bias, mean, var``;
  ``num_batches_tracked`` is ``count`` for ``BatchNorm(momentum=None)`` (a
  cumulative average); otherwise it is checked but not kept, and exported as 0.
* ``LayerNorm``, ``RMSNorm``, ``GroupNorm`` <- the same: ``weight`` is ``scale``.
* ``Embedding`` <- ``Embedding``: ``weight`` is ``embedding``.
* ``MultiHeadAttention`` <- ``MultiheadAttention(batch_first=True)``: the packed
  ``in_proj_weight`` (3E, E) is ``query``/``key``/``value`` ``kernel``s
  (E, H, D) (``q/k/v_proj_weight`` when ``kdim``/``vdim`` differ),
  ``in_proj_bias`` their ``bias``es (H, D), ``out_proj.weight`` (E, E) the
  ``out`` ``kernel`` (H, D, E).
* any other layer: each parameter is the entry of the same name, as it is
  (:func:`register` a converter for your own layers).

Import validates everything first and raises one
:class:`~lazyinit.errors.StateMismatchError` listing every missing, unexpected and
mis-shaped entry (with a hint when a shape is the transpose of the expected
one); the caller's state dict is only read. The result is a plain nested dict
to pass to ``li.dry_run(..., state=...)`` or ``li.load_state``.

``torch`` is imported only inside these functions: it is never a dependency of
lazyinit. Files are read with ``torch.load(..., weights_only=True)`` (or as
safetensors), never unpickled freely.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import nn
from .._match import Report
from .._typing import Params, Path
from ..errors import InvalidArgumentError
from . import _convert
from ._convert import Converter, Framework, Leaf, Rule, Shape, extra, permute, same

__all__ = ["from_torch_state_dict", "to_torch_state_dict", "read_state_dict", "register"]

Rename = Mapping[str, str] | Callable[[str], str] | None

_REGISTRY: dict[type, Converter] = {}


def register(layer_type: type) -> Callable:
    """Registers ``converter(layer, leaves) -> list[Rule]`` for ``layer_type`` (and subclasses).

    ``leaves`` maps each parameter path below the layer (relative, a tuple)
    to its :class:`lazyinit.interop.Leaf`; the rules say which
    PyTorch entries (relative dotted names) each parameter comes from.
    """

    def decorate(converter: Callable) -> Callable:
        _REGISTRY[layer_type] = converter
        return converter

    return decorate


def _own(leaves: dict[Path, Leaf], *names: str) -> list[str]:
    return [n for n in names if (n,) in leaves]


def _linear(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    return [permute("kernel", "weight", (1, 0)), *map(same, _own(leaves, "bias"))]


def _conv(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    n = len(leaves[("kernel",)].shape) - 2
    return [permute("kernel", "weight", (n + 1, n, *range(n))), *map(same, _own(leaves, "bias"))]


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
        if ("count",) in leaves:  # momentum=None: the count of batches is the state
            rules.append(
                Rule(
                    (("count",),),
                    (("num_batches_tracked",),),
                    lambda n: (jnp.asarray(n).astype(jnp.int32),),
                    lambda c: (jnp.asarray(c, jnp.int32),),
                )
            )
        else:
            rules.append(extra("num_batches_tracked", lambda: np.zeros((), np.int64)))
    return rules


def _embedding(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    return [same(name, "weight") for (name,) in leaves]


def _attention(layer: Any, leaves: dict[Path, Leaf]) -> list[Rule]:
    """``query/key/value`` kernels ``(in, H, D)`` are PyTorch's packed ``in_proj_weight`` (3HD, in).

    When keys or values come from another width than queries (PyTorch's
    ``kdim``/``vdim``), PyTorch keeps ``q_proj_weight``, ``k_proj_weight`` and
    ``v_proj_weight`` apart; ``in_proj_bias`` is packed in both cases.
    """
    names = ("query", "key", "value")
    shapes = [leaves[(n, "kernel")].shape for n in names]

    def heads_in(kernel: jax.Array) -> jax.Array:  # (in, H, D) -> (H * D, in)
        return jnp.transpose(jnp.reshape(kernel, (kernel.shape[0], -1)))

    def from_rows(w: jax.Array, shape: tuple) -> jax.Array:  # (H * D, in) -> (in, H, D)
        return jnp.reshape(jnp.transpose(w), shape)

    rules = []
    if len({s[0] for s in shapes}) == 1:
        rules.append(
            Rule(
                tuple((n, "kernel") for n in names),
                (("in_proj_weight",),),
                lambda w: tuple(
                    from_rows(p, s) for p, s in zip(jnp.split(w, 3), shapes, strict=True)
                ),
                lambda *ks: (jnp.concatenate([heads_in(k) for k in ks]),),
            )
        )
    else:
        rules += [
            Rule(
                ((n, "kernel"),),
                ((f"{n[0]}_proj_weight",),),
                lambda w, s=s: (from_rows(w, s),),
                lambda k: (heads_in(k),),
            )
            for n, s in zip(names, shapes)
        ]
    if ("query", "bias") in leaves:
        heads = [leaves[(n, "bias")].shape for n in names]
        rules.append(
            Rule(
                tuple((n, "bias") for n in names),
                (("in_proj_bias",),),
                lambda b: tuple(jnp.reshape(p, s) for p, s in zip(jnp.split(b, 3), heads)),
                lambda *bs: (jnp.concatenate([jnp.ravel(b) for b in bs]),),
            )
        )
    out = leaves[("out", "kernel")].shape
    rules.append(
        Rule(
            (("out", "kernel"),),
            (("out_proj.weight",),),
            lambda w: (jnp.reshape(jnp.transpose(w), out),),
            lambda k: (jnp.transpose(jnp.reshape(k, (-1, k.shape[-1]))),),
        )
    )
    if ("out", "bias") in leaves:
        rules.append(Rule((("out", "bias"),), (("out_proj.bias",),), _keep, _keep))
    return rules


def _keep(a: Any) -> tuple[Any]:
    return (a,)


def _stacked(layer: Any, leaves: dict[Path, Leaf], layers: dict[Path, Any]) -> list[Rule]:
    """``li.Repeat``/``li.Ensemble``: copy ``i`` is PyTorch's module ``i`` (an ``nn.Sequential``
    or ``nn.ModuleList`` of the block), each converted by the block's own rules. ``layers`` are
    the block's (at ``()``) and its children's, by path relative to the stacked layer."""
    one = {p: Leaf(leaf.shape[1:], leaf.dtype, leaf.trainable) for p, leaf in leaves.items()}
    return [
        _per_copy(item.rule, item.lazy, item.other, layer.n)
        for item in _convert.rules_for(FRAMEWORK, layer.stacked_layer, one, layers)
    ]


_stacked.takes_layers = True  # type: ignore[attr-defined]


def _per_copy(rule: Rule, lazy: tuple[Path, ...], other: tuple[Path, ...], n: int) -> Rule:
    k = len(other)

    def to_lazy(*arrays: Any) -> tuple[Any, ...]:
        copies = [rule.to_lazy(*arrays[i * k : (i + 1) * k]) for i in range(n)]
        return tuple(jnp.stack(parts) for parts in zip(*copies))

    def to_torch(*stacked: Any) -> tuple[Any, ...]:
        return tuple(a for i in range(n) for a in rule.to_other(*(s[i] for s in stacked)))

    return Rule(lazy, tuple((str(i), *o) for i in range(n) for o in other), to_lazy, to_torch)


def _register_builtins() -> None:
    """The converter of each lazyinit layer with a PyTorch counterpart."""
    table: dict[type, Converter] = {
        nn.Linear: _linear,
        nn.Conv: _conv,
        nn.ConvTranspose: _conv_transpose,
        nn.BatchNorm: _norm,
        nn.InstanceNorm: _norm,
        nn.LayerNorm: _norm,
        nn.RMSNorm: _norm,
        nn.GroupNorm: _norm,
        nn.Embedding: _embedding,
        nn.MultiHeadAttention: _attention,
        nn.Repeat: _stacked,
        nn.Ensemble: _stacked,
    }
    for cls, converter in table.items():
        _REGISTRY.setdefault(cls, converter)


def _hint(found: Shape | None, expected: Shape | None) -> str:
    if found is None or expected is None or None in expected:
        return ""
    if len(found) == 2 and found == expected[::-1]:
        return (
            " (the transpose: PyTorch stores it (out, in), lazyinit (in, out); pass PyTorch's "
            "own state dict, not one already converted)"
        )
    if (
        len(found) > 2
        and found != expected
        and sorted(found, key=_dim) == sorted(expected, key=_dim)
    ):
        return (
            " (the same sizes in another order: PyTorch kernels are (out, in, *kernel_size), "
            "lazyinit's (*kernel_size, in, out); pass PyTorch's own layout)"
        )
    return ""


def _split(module: str) -> Path:
    return tuple(module.split(".")) if module else ()


FRAMEWORK = Framework(
    name="PyTorch",
    noun="a PyTorch state dict",
    entry="state dict key",
    registry=_REGISTRY,
    default=lambda name, leaf: same(name),
    locate=lambda module, rel: (*module, *(part for r in rel for part in r.split("."))),
    show=".".join,
    split=_split,
    hint=_hint,
    importer="from_torch_state_dict",
    exporter="to_torch_state_dict",
)


# ---------------------------------------------------------------------------
# Reading state dicts.


def read_state_dict(source: Any) -> dict[str, Any]:
    """The state dict of ``source``: an ``nn.Module``, a mapping, or a file path.

    A file is read with ``torch.load(path, map_location='cpu', weights_only=True)``,
    or with ``safetensors`` when its name ends in ``.safetensors``.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return dict(load_file(path))
        import torch

        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, Mapping):
            raise InvalidArgumentError(
                f"{path!r} holds a {type(loaded).__name__}, not a state dict. Save "
                "module.state_dict() with torch.save and pass that file."
            )
        return dict(loaded)
    if hasattr(source, "state_dict") and callable(source.state_dict):
        return dict(source.state_dict())
    if isinstance(source, Mapping):
        return dict(source)
    raise InvalidArgumentError(
        f"Expected a torch nn.Module, a state dict or a file path, got {type(source).__name__}."
    )


def _to_numpy(key: str, value: Any, dtype: Any, problems: list[str]) -> np.ndarray | None:
    if type(value).__module__.startswith("torch"):
        import torch

        if isinstance(value, torch.nn.parameter.UninitializedTensorMixin):  # type: ignore[attr-defined]
            problems.append(
                f"{key!r} is an uninitialized PyTorch parameter: run the lazy torch module on a "
                "sample batch first (its dry run), then take its state_dict()"
            )
            return None
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            import ml_dtypes

            value = value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            value = value.numpy()
    elif not hasattr(value, "shape") or not hasattr(value, "dtype"):
        problems.append(f"{key!r} is a {type(value).__name__}, not a tensor")
        return None
    array = np.asarray(value)
    if dtype is not None and jnp.issubdtype(array.dtype, jnp.floating):
        return array.astype(dtype)
    if array.dtype.itemsize == 8 and not jax.config.jax_enable_x64:  # type: ignore[attr-defined]
        if array.dtype.kind == "f":
            problems.append(
                f"{key!r} is {array.dtype.name}, which JAX holds only with jax_enable_x64: "
                "pass dtype='float32' to convert it"
            )
            return None
        if array.dtype.kind in "iu":
            narrow = np.int32 if array.dtype.kind == "i" else np.uint32
            if array.size and (
                array.min() < np.iinfo(narrow).min or array.max() > np.iinfo(narrow).max
            ):
                problems.append(
                    f"{key!r} holds {array.dtype.name} values beyond {np.dtype(narrow).name}"
                )
                return None
            return array.astype(narrow)
    return array


def from_torch_state_dict(
    model: Any,
    state_dict: Any,
    /,
    *sample: Any,
    strict: bool = True,
    rename: Rename = None,
    dtype: Any = None,
    **kwargs: Any,
) -> tuple[Params, Report]:
    """A PyTorch state dict as lazyinit params for ``model``, each layer's layout converted.

    Args:
      model: the lazyinit model, whose layer names mirror the torch module's.
      state_dict: an ``nn.Module`` (a lazy one after its dry run too), its
        ``state_dict()``, or the path of a file saved with ``torch.save``
        (read with ``weights_only=True``) or of a ``.safetensors`` file.
      *sample: a sample of what ``model`` is called with, as for
        ``li.dry_run``: it says which layer owns each parameter and which
        shape each entry must have (a ``jax.ShapeDtypeStruct`` is enough).
      **kwargs: call-time options of the model, as for ``li.dry_run``.
      strict: whether entries missing from the state dict, or that the model
        has no place for, are errors. With ``strict=False`` the params hold
        what was converted and the report lists what was missing and unexpected.
      rename: where the torch module's names differ from the model's: a
        mapping from lazyinit layer paths to torch module paths
        (``{'encoder/fc': 'enc.0'}``, longest prefix wins; ``{'': 'module'}``
        prefixes everything), or a function of the lazyinit layer path.
      dtype: converts every floating-point entry to this dtype.

    Returns:
      ``(params, report)``: a nested dict of ``jax.Array`` for
      ``li.dry_run(model, key, x, state=params)`` or ``li.load_state``, and an
      ``li.Report`` (``loaded``, ``missing``, ``unexpected``), as ``li.load`` returns.

    Raises:
      StateMismatchError: listing every missing, unexpected, uninitialized or
        mis-shaped entry; nothing is converted.

    Examples:
        >>> import jax, jax.numpy as jnp, torch, lazyinit as li
        >>> from lazyinit.interop.torch import from_torch_state_dict
        >>> torch_mlp = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
        >>> model = li.Sequential([li.Linear(4), li.nn.relu, li.Linear(1)])
        >>> params, report = from_torch_state_dict(model, torch_mlp, jnp.ones((2, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'0': {'bias': (4,), 'kernel': (3, 4)}, '2': {'bias': (1,), 'kernel': (4, 1)}}
        >>> report.loaded
        ('0/bias', '0/kernel', '2/bias', '2/kernel')
    """
    _register_builtins()
    raw = read_state_dict(state_dict)
    problems: list[str] = []
    flat: dict[Path, np.ndarray] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not key:
            problems.append(f"key {key!r} is not a non-empty string")
            continue
        array = _to_numpy(key, value, dtype, problems)
        if array is not None:
            flat[_split(key)] = array
    params, report = _convert.import_state(
        FRAMEWORK,
        model,
        flat,
        sample,
        kwargs,
        strict=strict,
        rename=rename,
        problems=problems,
    )
    return params, report


def to_torch_state_dict(
    model: Any, params: Params, /, *sample: Any, rename: Rename = None, **kwargs: Any
) -> dict[str, Any]:
    """``params`` as a PyTorch state dict (``torch.Tensor`` values) for ``load_state_dict``.

    The inverse of :func:`from_torch_state_dict`. Without a sample, layers are
    found by walking ``model.children()``; with one (as for ``li.dry_run``),
    the trace also checks every parameter's shape first.

    Examples:
        >>> import jax, jax.numpy as jnp, torch, lazyinit as li
        >>> from lazyinit.interop.torch import to_torch_state_dict
        >>> model = li.Sequential([li.Linear(4), li.nn.relu, li.Linear(1)])
        >>> params = li.dry_run(model, jax.random.key(0), jnp.ones((2, 3)))
        >>> {k: tuple(v.shape) for k, v in to_torch_state_dict(model, params).items()}
        {'0.weight': (4, 3), '0.bias': (4,), '2.weight': (1, 4), '2.bias': (1,)}
    """
    import torch

    _register_builtins()
    flat = _convert.export_state(FRAMEWORK, model, params, sample, kwargs, rename=rename)
    out: dict[str, Any] = {}
    for path, value in flat.items():
        array = np.array(jax.device_get(value))
        if array.dtype == jnp.bfloat16:
            tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(array)
        out[FRAMEWORK.show(path)] = tensor
    return out


def _dim(d: int | None) -> int:
    return -1 if d is None else d
