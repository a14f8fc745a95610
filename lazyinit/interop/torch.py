"""PyTorch state dicts to lazyinit params and back, each layer converted by its torch module's type.

PyTorch's dotted keys are lazyinit's paths when the lazyinit model mirrors
the torch module's attribute names: ``fc1.weight`` is ``fc1/kernel``,
``li.Sequential`` indices are ``nn.Sequential``'s (``0.weight``), and copy
``i`` of ``li.Repeat``/``li.Ensemble`` at ``h`` is module ``h.i`` of an
``nn.ModuleList``; ``rename=`` maps other names. Which lazyinit layer owns
each parameter comes from the model's trace on the sample, or, without one,
from what its layers declare.

**Module-aware conversion.** Given the ``nn.Module`` itself, each layer is
converted by the type of the torch module at its path: a lazyinit ``Linear``
beside ``nn.Linear`` transposes its ``(out, in)`` weight, beside Hugging
Face's ``Conv1D`` (GPT-2) takes its ``(in, out)`` weight as it is, and beside
a module type it has no rule for is refused by name (:func:`register` adds
one). With a bare state dict a square weight cannot say which it is: each
layer type has a default (``nn.Linear``), and ``layouts=`` declares the others
per lazyinit path pattern (``layouts={"h/*/c_attn": "conv1d"}``). The rules
per layer are listed in ``lazyinit/interop/_torch_rules.py``; the rule
vocabulary (``same``, ``linear``, ``fused``, ``rotary``, ...) is in
:mod:`lazyinit.interop`.

**Tied weights.** Entries that are one tensor under two names
(``lm_head.weight`` and ``transformer.wte.weight``) are found from a module's
shared storage, or declared with ``ties=``. Import keeps one (checking that the
other is equal) and lists the other in ``report.tied``; export writes both, so
that PyTorch's ``load_state_dict(strict=True)`` passes.

Import validates everything first and raises one
:class:`~lazyinit.errors.StateMismatchError` listing every missing, unexpected
and mis-shaped entry (with the likely cause: a ``Conv1D`` layout, a
channels-first sample, a state already converted, a prefix such as
DataParallel's ``module.``); the caller's state dict is only read, one tensor
at a time. :func:`compare` then finds the first layer whose output differs.

``torch`` is imported only inside these functions: it is never a dependency of
lazyinit. Files are read with ``torch.load(..., weights_only=True)`` (or as
safetensors), never unpickled freely.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _match
from .._match import Report
from .._typing import Params, Path
from ..errors import InvalidArgumentError
from . import _convert, _torch_rules, _torch_state
from ._compare import Comparison, LayerDiff, compare
from ._registry import Framework, Kinds
from ._rules import same
from ._torch_rules import attention, register
from ._torch_state import read_state_dict

__all__ = [
    "from_torch_state_dict",
    "to_torch_state_dict",
    "compare",
    "Comparison",
    "LayerDiff",
    "register",
    "attention",
    "read_state_dict",
]

Rename = Mapping[str, str] | Callable[[str], str] | None
Layouts = Mapping[str, Any] | None
TiesArg = Mapping[str, str] | None

FRAMEWORK = Framework(
    name="PyTorch",
    noun="a PyTorch state dict",
    entry="state dict key",
    registry=_torch_rules.REGISTRY,
    default=lambda name, leaf: same(name),
    locate=lambda module, rel: (*module, *(part for r in rel for part in r.split("."))),
    show=".".join,
    split=_torch_state.split,
    hint=_torch_rules.hint,
    notes=_torch_rules.square_notes,
    stacks=True,
    register="lazyinit.interop.torch.register",
    importer="from_torch_state_dict",
    exporter="to_torch_state_dict",
)


def _ties(found: tuple[tuple[str, str], ...], given: TiesArg) -> list[tuple[Path, ...]]:
    if given is not None and not isinstance(given, Mapping):
        raise InvalidArgumentError(
            f"ties must map a state dict key to the key it is a copy of "
            f"({{'lm_head.weight': 'transformer.wte.weight'}}), got {type(given).__name__}."
        )
    pairs = [*found, *(given or {}).items()]
    split = _torch_state.split
    return _convert.tie_groups((split(a), split(b)) for a, b in pairs)


def _kinds(modules: dict[str, Any] | None, layouts: Layouts) -> Kinds:
    if layouts is not None and not isinstance(layouts, Mapping):
        raise InvalidArgumentError(
            "layouts must map lazyinit layer path patterns to torch module types "
            f"({{'h/*/c_attn': 'conv1d'}}), got {type(layouts).__name__}."
        )
    return Kinds(modules, dict(layouts or {}))


def from_torch_state_dict(
    model: Any,
    state_dict: Any,
    /,
    *sample: Any,
    strict: bool = True,
    rename: Rename = None,
    layouts: Layouts = None,
    ties: TiesArg = None,
    dtype: Any = None,
    **kwargs: Any,
) -> tuple[Params, Report]:
    """A PyTorch state dict as lazyinit params for ``model``, each layer's layout converted.

    Args:
      model: the lazyinit model, whose layer names mirror the torch module's.
      state_dict: the ``nn.Module`` itself (a lazy one after its dry run too):
        each layer is then converted by its torch module's type, and tied
        weights are found; or its ``state_dict()``; or the path of a file saved
        with ``torch.save`` (read with ``weights_only=True``) or of a
        ``.safetensors`` file.
      *sample: a sample of what ``model`` is called with, as for
        ``li.dry_run`` (a ``jax.ShapeDtypeStruct`` is enough); without one,
        the structure the layers declare, with sizes read off the entries.
      **kwargs: call-time options of the model, as for ``li.dry_run``.
      strict: whether entries missing from the state dict, or that the model
        has no place for, are errors. With ``strict=False`` the params hold
        what was converted and the report lists what was missing and unexpected.
      rename: where the torch module's names differ from the model's: a
        mapping from lazyinit layer paths to torch module paths
        (``{'encoder/fc': 'enc.0'}``, longest prefix wins; ``{'': 'module'}``
        prefixes everything), or a function of the lazyinit layer path.
      layouts: for a bare state dict, the torch module type of layers whose
        layout the shapes cannot tell, by lazyinit path pattern as for
        ``dtype=`` of ``li.dry_run`` (``{'h/*/c_attn': 'conv1d'}``; ``'linear'``
        is ``nn.Linear``, ``'conv1d'`` Hugging Face's ``Conv1D``; a torch class
        or class name picks a registered rule). A module's own types win.
      ties: entries that are copies of another (``{'lm_head.weight':
        'transformer.wte.weight'}``), besides those found in a module.
      dtype: converts every floating-point entry to this dtype.

    Returns:
      ``(params, report)``: a nested dict of ``jax.Array`` for
      ``li.dry_run(model, key, x, state=params)`` or ``li.load_state``, and an
      ``li.Report`` (``loaded``, ``missing``, ``unexpected``, ``tied``), as ``li.load`` returns.

    Raises:
      StateMismatchError: listing every missing, unexpected, uninitialized or
        mis-shaped entry, and every torch module without a rule; nothing is converted.

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
    _torch_rules.register_builtins()
    source = _torch_state.source_of(state_dict)
    problems: list[str] = []
    state = _torch_state.entries(source.state, dtype, problems)
    return _convert.import_state(
        FRAMEWORK,
        model,
        state,
        sample,
        kwargs,
        strict=strict,
        rename=rename,
        problems=problems,
        kinds=_kinds(source.modules, layouts),
        ties=_ties(source.ties, ties),
        fetch=lambda entry: entry.array(),
    )


def to_torch_state_dict(
    model: Any,
    params: Params,
    /,
    *sample: Any,
    module: Any = None,
    rename: Rename = None,
    layouts: Layouts = None,
    ties: TiesArg = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """``params`` as a PyTorch state dict (``torch.Tensor`` values) for ``load_state_dict``.

    The inverse of :func:`from_torch_state_dict`. Without a sample, layers are
    found from what the model's layers declare; with one (as for ``li.dry_run``),
    the trace also checks every parameter's shape first. With ``module=`` (the
    torch module to load into), each layer is converted by its torch module's
    type, tied entries are all written, integer entries take the module's
    dtypes, and the keys and shapes are checked against the module's own state
    dict, so that ``module.load_state_dict(state, strict=True)`` passes.

    Examples:
        >>> import jax, jax.numpy as jnp, torch, lazyinit as li
        >>> from lazyinit.interop.torch import to_torch_state_dict
        >>> model = li.Sequential([li.Linear(4), li.nn.relu, li.Linear(1)])
        >>> params = li.dry_run(model, jax.random.key(0), jnp.ones((2, 3)))
        >>> {k: tuple(v.shape) for k, v in to_torch_state_dict(model, params).items()}
        {'0.weight': (4, 3), '0.bias': (4,), '2.weight': (1, 4), '2.bias': (1,)}
    """
    import torch

    _torch_rules.register_builtins()
    source = _torch_state.source_of(module) if module is not None else None
    if module is not None and source is not None and source.modules is None:
        raise InvalidArgumentError(
            f"to_torch_state_dict: module= takes the torch nn.Module to load into, got "
            f"{type(module).__name__}."
        )
    flat = _convert.export_state(
        FRAMEWORK,
        model,
        params,
        sample,
        kwargs,
        rename=rename,
        kinds=_kinds(source.modules if source else None, layouts),
        ties=_ties(source.ties if source else (), ties),
    )
    if source is not None:
        _check_against(model, module, source.state, flat)
        order = {_torch_state.split(k): i for i, k in enumerate(source.state)}
        flat = dict(sorted(flat.items(), key=lambda kv: order.get(kv[0], len(order))))
    out: dict[str, Any] = {}
    for path, value in flat.items():
        array = np.array(jax.device_get(value))
        if array.dtype == jnp.bfloat16:
            tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(array)
        key = FRAMEWORK.show(path)
        theirs = source.state.get(key) if source is not None else None
        if array.dtype.kind in "iu":  # counters: PyTorch's int64, or the module's own dtype
            tensor = tensor.to(theirs.dtype if theirs is not None else torch.int64)
        out[key] = tensor
    return out


def _check_against(model: Any, module: Any, state: Mapping[str, Any], flat: Mapping) -> None:
    """Refuses an export whose keys or shapes are not the module's: its strict load would fail."""
    split = _torch_state.split
    m = _match.match(
        {split(k): _match.Target(tuple(v.shape)) for k, v in state.items()},
        {p: jax.ShapeDtypeStruct(np.shape(v), v.dtype) for p, v in flat.items()},
        abstract=True,
        show=FRAMEWORK.show,
        hint=lambda found, expected, path: "",  # the layouts are the module's own: no guess
    )
    _match.refuse(
        f"{type(model).__name__}'s params do not make the state dict of {type(module).__name__}",
        _match.judge(m, missing=True, unexpected=True),
        "Its load_state_dict(strict=True) would fail: check rename= and the model's structure.",
    )
