"""The dry run: how a lazyinit model learns its parameter shapes.

A lazyinit layer is immutable configuration. Its parameters live outside it,
in a nested dict (``params``) that every call takes as its first argument, so
``model(params, x)`` is a pure function that ``jax.jit``, ``jax.grad`` and
``jax.vmap`` accept. A *leaf* layer declares the parameters it needs in
``specs(*inputs)``, from the inputs it is about to see: ``Linear`` asks for a
``(x.shape[-1], out_features)`` kernel. A *composite* layer declares nothing;
it calls its children with their sub-dicts, ``self.fc1(params["fc1"], x)``.

**The dry run** (``li.dry_run(model, key, sample)``) replaces PyTorch's first
forward pass of a lazy module. It runs the model once under
``jax.eval_shape``, with a stand-in for ``params`` that records, at each path
it is indexed with, the specs of the layer called there. Everything is
abstract: no forward FLOPs and no forward memory, only shapes. It then
materializes each parameter from its spec.

**Guarantees.**

* A parameter's value depends only on the root key and its path: its key is
  ``fold_in`` of the root key and a hash of the path (:func:`param_key`,
  scheme version :data:`KEY_SCHEME`, pinned by golden tests). Adding,
  removing or reordering other layers never changes it, unlike PyTorch,
  whose lazy modules draw from one global generator in call order.
* The same dry run gives bitwise the same result, under ``jax.jit`` or not.
* A layer called again with inputs of the same shapes is traced once: the
  specs and output shapes of ``(layer, input signature)`` are cached, so
  identical blocks cost one trace and a repeated dry run costs no trace.

**Structure.** The trace is the one source of a model's structure: the
paths ``__call__`` really indexes ``params`` with, whatever the style
(children as fields, children built inside ``__call__``, wrappers).
:func:`lazyinit.lazy_state` with a sample gives exactly those paths; without
one it derives what the layers declare and shows a layer it cannot know
without tracing as one placeholder of unknown structure
(:mod:`lazyinit._structure`). Every trace checks that derivation: a field
child called with another sub-dict than its name says is a
:class:`~lazyinit.errors.DeriveStructureError` naming the fix, so the derived
and the traced paths never silently disagree. Functions that get no sample
work from the derivation and what they were given, never from a trace that
happened to run earlier: the trace cache changes speed, never an answer.

**Calls.** A real call checks its params against the specs of its trace
for these input shapes (paths, shapes, integer dtypes) before computing, and
raises :class:`~lazyinit.StateMismatchError` naming every offending path;
under ``jax.jit`` the check runs once, at tracing.

**Loading.** ``state=`` passes what is already known: a loaded checkpoint, a
partial one, or a lazy state from :func:`lazyinit.lazy_state` holding
:class:`~lazyinit.Uninitialized` placeholders with their chosen dtype and
device. Initialized leaves are never overwritten: they are checked against
the inferred shape and dtype and kept bit for bit (numpy ones are copied);
only the holes are drawn. Keys that the model does not have are an error
(:func:`lazyinit.dry_run_with_report` with ``strict=False`` ignores them
and lists them in its report); nothing is dropped silently. The rules are
PyTorch's ``load_state_dict`` rules, written once in :mod:`lazyinit._match`,
and every entry point (``dry_run``, :func:`lazyinit.load_state`, ``li.load``,
the converters, ``li.summary``) applies them with the same words.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from . import _channels, _paths, _structure
from ._recorder import Call, ParamsStandIn, Recorder, Trace
from ._spec import Param
from ._trace_cache import (
    CACHE,
    abstractify,
    aval,
    cache_key,
    is_array,
    rebuild,
)
from ._typing import Path
from .errors import (
    DuplicateParamError,
    InferShapeError,
    InvalidArgumentError,
    InvalidSpecError,
    LazyInitError,
)

__all__ = ["trace", "trace_call", "needs_sample", "no_sample"]

_CONCRETIZATION = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerIntegerConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerArrayConversionError,
)


def _check_specs(layer: Any, path: Path, specs: Any) -> dict[str, Param]:
    where = f"{type(layer).__name__} at {_paths.join(path)!r}"
    if not isinstance(specs, Mapping):
        raise InvalidSpecError(
            f"{where}: specs() must return a dict of name -> li.Param, got {type(specs).__name__}."
        )
    for name, param in specs.items():
        full = _paths.join((*path, str(name)))
        if not isinstance(name, str) or not name or "/" in name:
            raise InvalidSpecError(
                f"{where}: parameter name {name!r} must be a non-empty string without '/'."
            )
        if not isinstance(param, Param):
            raise InvalidSpecError(
                f"{where}: specs()[{name!r}] must be a li.Param, got {type(param).__name__}."
            )
        shape = param.shape
        symbolic = (
            [d for d in shape if jax.export.is_symbolic_dim(d)] if isinstance(shape, tuple) else []
        )
        if symbolic:
            dims = sorted({v for d in symbolic for v in d.get_vars()})
            raise InvalidSpecError(
                f"Parameter {full!r} of {where} has shape ({', '.join(map(str, shape))}), which "
                f"depends on the symbolic dimension(s) {', '.join(map(repr, dims))} of the sample: "
                "a parameter's size must not depend on the batch size (or any other symbolic "
                "dimension). Compute it from the feature axes (x.shape[-1]) or from the layer's "
                "configuration."
            )
        if not isinstance(shape, tuple) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in shape
        ):
            raise InvalidSpecError(
                f"Parameter {full!r} of {where} has shape {shape}: every dimension must be a "
                "positive int. Check the sizes given to the layer and the sample input's shape."
            )
        if param.axes is not None and len(param.axes) != len(shape):
            raise InvalidSpecError(
                f"Parameter {full!r} of {where} has shape {shape} but axes {param.axes}: give "
                "one logical axis name (or None) per dimension."
            )
        if not callable(param.init):
            raise InvalidSpecError(
                f"Parameter {full!r} of {where}: init must be callable as init(key, shape, "
                f"dtype), got {param.init!r}."
            )
    return {
        name: dataclasses.replace(p, shape=tuple(int(d) for d in p.shape))
        for name, p in specs.items()
    }


def _shapes(args: tuple, kwargs: dict) -> str:
    def show(a: Any) -> str:
        return str(jax.tree.map(lambda l: tuple(np.shape(l)) if is_array(l) else l, a))

    return ", ".join([show(a) for a in args] + [f"{k}={show(v)}" for k, v in kwargs.items()])


@functools.cache
def _specs_signature(specs: Any) -> tuple[int | None, frozenset[str] | None]:
    """How many positional inputs and which keywords ``specs`` takes (None: any)."""
    params = list(inspect.signature(specs).parameters.values())[1:]  # drop self
    kinds = {p.kind for p in params}
    positional = sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    names = frozenset(p.name for p in params if p.kind is not p.POSITIONAL_ONLY)
    return (
        None if inspect.Parameter.VAR_POSITIONAL in kinds else positional,
        None if inspect.Parameter.VAR_KEYWORD in kinds else names,
    )


def _call_specs(layer: Any, args: tuple, kwargs: dict) -> Any:
    """``layer.specs`` with the inputs it declares: a spec may ignore some call arguments."""
    n, names = _specs_signature(type(layer).specs)
    if n is not None:
        args = args[:n]
    if names is not None:
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    return layer.specs(*args, **kwargs)


def needs_sample(
    layer: Any,
    path: Path = (),
    *,
    why: str = "",
    example: str = "li.dry_run(model, key, x)",
    got: str = "",
) -> InferShapeError:
    """The error of every function that needs a sample input and got none, in one wording:
    the layer, why the function needs one (if it says), and the call to write instead."""
    where = f"{type(layer).__name__} at {_paths.join(path)!r}"
    return InferShapeError(
        f"{where} needs a sample input and got none{f' (only {got})' if got else ''}"
        f"{f': {why}' if why else ''}. Pass a sample as for li.dry_run: {example}."
    )


def no_sample(args: tuple, kwargs: dict) -> bool:
    """No input to trace on: no positional argument and no array among the keywords."""
    return not args and not any(is_array(l) for l in jax.tree.leaves(kwargs))


def _hint_layout(
    error: InferShapeError, layer: Any, path: Path, args: tuple, sub: Recorder
) -> InferShapeError:
    """``error``, told that the sample may be channels-first if ``layer`` or a call completed
    under it before the failure read a channels-first-looking input as channels-last
    (:mod:`lazyinit._channels`). Called at every level the error crosses: an outer level's
    calls came first, so its hint replaces an inner one's and the earliest misread is named."""
    seen = [(layer, path, args), *((c.layer, c.path, c.inputs[0]) for c in sub.calls)]
    hint = next((h for h in (_channels.hint(*s) for s in seen) if h), "")
    if hint:
        plain = getattr(error, "without_layout_hint", error.args[0])
        error.without_layout_hint = plain  # type: ignore[attr-defined]
        error.args = (f"{plain} {hint}", *error.args[1:])
    return error


def trace_call(layer: Any, call: Any, node: ParamsStandIn, args: tuple, kwargs: dict) -> Any:
    """Runs ``layer`` under a dry run at ``node``'s path, or reuses a cached trace of it."""
    rec, rel = node._rec, node._rel
    key = cache_key(layer, args, kwargs)
    frag = CACHE.get(key)
    if frag is not None:
        rec.graft(rel, frag)
        return rebuild(frag.outputs)

    sub = Recorder((*rec.base, *rel))
    path = sub.base
    where = f"{type(layer).__name__} at {_paths.join(path)!r}"
    try:
        own = _check_specs(layer, path, _call_specs(layer, args, kwargs))
        sub.declare((), own, layer)
        sub.layers[()] = None
        out = call(layer, ParamsStandIn(sub, ()), *args, **kwargs)
    except InferShapeError as e:
        if getattr(e, "layer_path", None) is not None:
            _hint_layout(e, layer, path, args, sub)  # located below: a hint may still apply
            raise
        if not path and no_sample(args, kwargs):  # the root, called without inputs
            located = needs_sample(layer, path, got=_shapes(args, kwargs))
        else:
            located = InferShapeError(f"{where}: {e}")
        located.layer_path = path
        raise _hint_layout(located, layer, path, args, sub) from e
    except LazyInitError:
        raise
    except _CONCRETIZATION as e:
        located = InferShapeError(
            f"{where}: a shape depends on the values of the input. Parameter and output "
            "shapes may depend only on input shapes and dtypes (and static arguments)."
        )
        located.layer_path = path  # so that enclosing layers do not wrap it again
        raise _hint_layout(located, layer, path, args, sub) from e
    except Exception as e:
        if not path and no_sample(args, kwargs) and isinstance(e, TypeError):
            located = needs_sample(layer, path, got=_shapes(args, kwargs))
        elif "lazyinit_params_stand_in" in str(e):  # jax.vmap over params and inputs together
            located = InferShapeError(
                f"{where}: params were mapped over a leading axis (jax.vmap over params) "
                "together with the inputs, but no layer declares that axis: specs describe one "
                "copy. Use li.Ensemble(layer, n, map_inputs=True) for n copies mapped with their "
                "inputs, or li.Repeat(block, n) for n blocks applied in sequence."
            )
        else:
            located = InferShapeError(
                f"{where} failed on inputs of shape {_shapes(args, kwargs)}: "
                f"{type(e).__name__}: {e}"
            )
        located.layer_path = path
        raise _hint_layout(located, layer, path, args, sub) from e
    outputs = jax.tree.map(lambda o: aval(o) if is_array(o) else o, out)
    sub.calls.insert(
        0,
        Call(
            path,
            layer,
            jax.tree.map(lambda a: aval(a) if is_array(a) else a, (args, kwargs)),
            outputs,
        ),
    )
    frag = sub.freeze(outputs)
    frag = dataclasses.replace(
        frag, calls=tuple(dataclasses.replace(c, path=c.path[len(path) :]) for c in frag.calls)
    )
    CACHE.put(key, frag)
    rec.graft(rel, frag)
    return out


def _check_collisions(t: Trace) -> None:
    bad = [
        f"{_paths.join(p)!r} is a parameter and also holds {_paths.join(q)!r}"
        for q in t.params
        for i in range(1, len(q))
        if (p := q[:i]) in t.params
    ]
    bad += [
        f"{_paths.join(p)!r} is both a parameter and a layer" for p in t.layers if p in t.params
    ]
    if bad:
        raise DuplicateParamError(
            "Parameter paths collide:\n  " + "\n  ".join(bad) + "\nRename one of them."
        )


def trace(model: Any, *args: Any, **kwargs: Any) -> Trace:
    """Traces ``model`` on sample inputs and returns what it declares, without materializing.

    Only shapes and dtypes of array arguments matter (arrays,
    ``jax.ShapeDtypeStruct``s or tracers); other arguments are static. A
    second call with the same model and signature is a cache lookup.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> t = li.trace(li.Linear(4), jnp.ones((2, 3)))
        >>> jax.tree.map(lambda p: p.shape, t.specs)
        {'bias': (4,), 'kernel': (3, 4)}
        >>> t.outputs
        ShapeDtypeStruct(shape=(2, 4), dtype=float32)
    """
    if not callable(getattr(model, "specs", None)):
        raise InvalidArgumentError(
            f"li.trace and li.dry_run take a li.Layer, got {type(model).__name__}. Wrap plain "
            "functions in li.Sequential([...]) or a li.Layer subclass."
        )
    args, kwargs = abstractify((args, kwargs))
    key = cache_key(model, args, kwargs)
    t = CACHE.get(key)
    if t is None:
        root = Recorder(())
        leaves, treedef = jax.tree.flatten((args, kwargs))
        dyn = [i for i, l in enumerate(leaves) if isinstance(l, jax.ShapeDtypeStruct)]

        def run(*dyn_values: Any) -> Any:
            full = list(leaves)
            for i, v in zip(dyn, dyn_values):
                full[i] = v
            a, k = jax.tree.unflatten(treedef, full)
            return model(ParamsStandIn(root, ()), *a, **k)

        out = jax.eval_shape(run, *[leaves[i] for i in dyn])
        t = CACHE.get(key)
        if t is None:  # an unhashable model or input: what the root recorded
            t = root.freeze(out)
    if not getattr(t, "_checked", False):
        _check_collisions(t)
        _structure.check_derivation(model, t)
        object.__setattr__(t, "_checked", True)  # a cached trace is checked once
    return t
