"""``dry_run``: trace, targets, match, draw.

1. **trace** the model on the sample (:mod:`lazyinit._tracer`): every path and spec;
2. **targets**: the dtype and placement each parameter is to have (``dtype=``,
   ``device=``, a mesh plan);
3. **match** the given ``state`` against them by the load rules
   (:mod:`lazyinit._match`): what is kept, what is still a hole;
4. **draw** each hole from its initializer with its per-path key
   (:mod:`lazyinit._materialize`).

The lifecycle and its guarantees are told once, in :mod:`lazyinit._tracer`.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Literal

import jax

from . import _drawing, _keys, _match, _materialize, _paths, _progress, _sharding, _structure
from ._match import Hole, Report, Target
from ._recorder import Trace
from ._trace_cache import is_abstract
from ._tracer import trace
from ._typing import Params, Path, PerPath, State
from .errors import (
    InitializerError,
    InvalidArgumentError,
    NonFiniteParamWarning,
    ReshardStateError,
    StateMismatchError,
)

__all__ = ["dry_run", "dry_run_with_report"]

NonFinite = Literal["warn", "raise", "ignore"]
"""What a dry run does when an initializer draws NaN or an infinity: numpy's words
(``np.errstate(invalid=...)``), since they say the same thing for the same kind of problem."""


def dry_run(
    model: Any,
    key: Any,
    /,
    *args: Any,
    state: State = None,
    dtype: PerPath = None,
    device: PerPath = None,
    jit: bool = False,
    mesh: Any = None,
    rules: _sharding.Rules | None = None,
    axes: PerPath = None,
    reshard: bool = False,
    progress: bool | None = None,
    nonfinite: NonFinite = "warn",
    **kwargs: Any,
) -> Params:
    """Infers every parameter's shape from a sample input and materializes the parameters.

    Args:
      model: a :class:`lazyinit.Layer`.
      key: the root PRNG key (``jax.random.key(0)``, a raw key or an int seed).
        Each parameter's key is derived from it and the parameter's path.
      *args: a sample of what the model is called with after ``params``.
        Arrays only lend their shapes and dtypes; with
        ``jax.ShapeDtypeStruct`` samples the result is abstract (a tree of
        ``ShapeDtypeStruct``) and nothing is allocated.
      state: what is already known: loaded arrays, which are checked and kept
        bit for bit, and placeholders from :func:`lazyinit.lazy_state`,
        whose dtype and device are honoured. May be partial.
      dtype: the dtype of every parameter, or a mapping of path patterns to
        dtypes (``{'*': 'float32', 'fc1': 'bfloat16'}``). Overrides the
        placeholders' and the specs' dtypes. Default: the spec's, else float32.
      device: a ``jax.Device`` or ``Sharding`` (or a mapping of path patterns
        to them) to materialize on. Loaded leaves are moved there too.
      jit: draw everything in one jit-compiled call instead of one cached
        kernel per kind of parameter (same values; slower to compile). Same-kind
        parameters of more than 4 MiB together are still drawn one by one by
        their kind's kernel, so that no stack of them is built.
      mesh: a ``jax.sharding.Mesh`` (or, for an abstract run, an
        ``AbstractMesh``) to shard every parameter over, as ``rules`` maps
        its logical axes (see :func:`lazyinit.plan`). All parameters are
        then drawn as with ``jit=True``, straight into their ``NamedSharding``
        (each device computes only its shards), with the same values as
        without a mesh; loaded leaves are placed in the same layout.
        ``device=`` and placeholders' devices win over the plan for their paths.
      rules: logical axis name -> mesh axis, tuple of mesh axes or None,
        as a dict or a sequence of pairs.
      axes: per-path overrides of the parameters' logical axes (a tuple of
        names per path pattern), or a ``PartitionSpec`` of mesh axes.
      reshard: whether a loaded array already spread over several devices in
        another layout may be moved to the planned one (and listed in
        ``report.resharded``); by default it is an error.
      progress: show a progress bar while drawing (``True``), never (``False``),
        or, by default, on a terminal or in Jupyter when the draw makes about a
        gigabyte or more.
      nonfinite: what to do when an initializer draws NaN or an infinity: ``"warn"``
        (a :class:`~lazyinit.errors.NonFiniteParamWarning` naming every such
        parameter), ``"raise"`` (an :class:`~lazyinit.errors.InitializerError`) or
        ``"ignore"``. The check is computed by the program that draws each parameter
        and read back once, after every draw (a dry run inside ``jax.jit`` is not
        checked: its values do not exist yet).

    Returns:
      The params, a nested dict of ``jax.Array`` (or ``ShapeDtypeStruct``).
      :func:`dry_run_with_report` also returns what was kept and initialized.

    Raises:
      InvalidArgumentError: ``key`` is not a PRNG key or seed (checked first).
      StateMismatchError: a leaf of ``state`` disagrees with its inferred shape
        or dtype, or ``state`` has paths the model lacks. All offending
        paths are listed; nothing is overwritten.
      InferShapeError: a layer cannot handle the sample input.
      InitializerError: an initializer fails or returns the wrong shape or dtype, or (with
        ``nonfinite="raise"``) draws NaN or an infinity.
      ShardParamError: a logical axis without a rule, a rule naming an axis
        the mesh lacks, or a dimension its mesh axes do not divide.
      ReshardStateError: a loaded array is sharded in another layout than
        the planned one and ``reshard`` is false.
      ProcessMismatchError: processes of a multi-process run disagree on
        the paths, shapes, dtypes or layouts to materialize.

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> model = li.Sequential([li.Linear(4), li.nn.relu, li.Linear(1)])
        >>> params = li.dry_run(model, jax.random.key(0), jnp.ones((8, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'0': {'bias': (4,), 'kernel': (3, 4)}, '2': {'bias': (1,), 'kernel': (4, 1)}}
    """
    options = _Options(dtype, device, jit, mesh, rules, axes, reshard, progress, nonfinite)
    return _run(model, key, args, kwargs, state, True, options)[0]


def dry_run_with_report(
    model: Any,
    key: Any,
    /,
    *args: Any,
    state: State = None,
    strict: bool = True,
    dtype: PerPath = None,
    device: PerPath = None,
    jit: bool = False,
    mesh: Any = None,
    rules: _sharding.Rules | None = None,
    axes: PerPath = None,
    reshard: bool = False,
    progress: bool | None = None,
    nonfinite: NonFinite = "warn",
    **kwargs: Any,
) -> tuple[Params, Report]:
    """:func:`dry_run`, returning ``(params, report)``: what was kept, initialized and ignored.

    With ``strict=False``, paths of ``state`` that the model lacks are ignored
    and listed in ``report.unexpected`` instead of being an error: the way to
    carry a checkpoint over to a changed model (a new head, an added block).

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li
        >>> old = li.dry_run(li.Linear(4), jax.random.key(0), jnp.ones((1, 3)))
        >>> params, report = li.dry_run_with_report(
        ...     li.Sequential([li.Linear(4)]), jax.random.key(1), jnp.ones((1, 3)),
        ...     state={"0": old, "head": old}, strict=False)
        >>> report.kept, report.unexpected
        (('0/bias', '0/kernel'), ('head/bias', 'head/kernel'))
    """
    options = _Options(dtype, device, jit, mesh, rules, axes, reshard, progress, nonfinite)
    return _run(model, key, args, kwargs, state, strict, options)


@dataclasses.dataclass(frozen=True)
class _Options:
    dtype: PerPath
    device: PerPath
    jit: bool
    mesh: Any
    rules: Any
    axes: PerPath
    reshard: bool
    progress: bool | None
    nonfinite: NonFinite

    def __post_init__(self) -> None:
        if self.nonfinite not in ("warn", "raise", "ignore"):
            raise InvalidArgumentError(
                f"nonfinite={self.nonfinite!r}: pass 'warn' (the default: a "
                "NonFiniteParamWarning naming each parameter), 'raise' (an InitializerError) "
                "or 'ignore'."
            )


def _run(
    model: Any, key: Any, args: tuple, kwargs: dict, state: Any, strict: bool, o: _Options
) -> tuple[Params, Report]:
    _progress.check(o.progress, "li.dry_run")
    abstract = is_abstract((args, kwargs))
    root = _keys.as_key(key, abstract=abstract)
    t = trace(model, *args, **kwargs)
    targets, planned = _targets(t, o, abstract)
    have = _paths.flatten_state(state, "state") if state is not None else {}
    m = _match.match(
        targets,
        have,
        abstract=abstract,
        cast_hint="convert it with li.load_state(..., cast=True) first",
    )
    # The dry run's policy: a missing path is a hole to draw, an unexpected one an error.
    problems = _match.judge(m, missing=False, unexpected=strict)
    if strict and m.unexpected:
        problems += _structure.contradictions(model, t)
    out, moves, resharded, blocked = _place_kept(m.values, t, o, planned, abstract)
    _refuse(problems, blocked)
    holes = {
        path: dataclasses.replace(
            hole, device=_materialize.placement(_paths.resolve(o.device, path) or hole.device)
        )
        for path, hole in m.holes.items()
    }
    for hole in holes.values():
        _materialize.check_dtype(hole)
    if abstract:
        out.update({p: _materialize.abstract_leaf(hole) for p, hole in holes.items()})
    else:
        if planned and _sharding.spans_processes(o.mesh):
            _sharding.agree_across_processes(
                _sharding.fingerprint_rows(root, o.mesh, holes, m.taken)
            )
        with _progress.bar("li.dry_run", _progress.nbytes(holes.values()), o.progress):
            drawn = _draw(root, holes, moves, out, jit=o.jit or bool(planned))
        if o.nonfinite != "ignore":
            _check_finite(holes, drawn, o.nonfinite)
        out.update(drawn.values)
    params = _paths.unflatten({p: out[p] for p in t.params}, t.layers)
    return params, _match.report(
        kept=m.taken, initialized=list(holes), unexpected=m.unexpected, resharded=resharded
    )


def _targets(t: Trace, o: _Options, abstract: bool) -> tuple[dict[Path, Target], dict]:
    """What each parameter is to be: its shape, the dtype chosen for it, its planned placement."""
    if o.mesh is None and (o.rules is not None or o.axes is not None):
        raise InvalidArgumentError(
            "li.dry_run: rules= and axes= lay parameters out on a mesh; pass mesh= too."
        )
    planned = (
        {}
        if o.mesh is None
        else _sharding.plan_shardings(t.params, o.mesh, o.rules, o.axes, abstract)
    )
    targets = {
        path: Target.declared(spec, dtype=o.dtype, path=path, device=planned.get(path))
        for path, spec in t.params.items()
    }
    return targets, planned


def _place_kept(
    values: dict[Path, Any], t: Trace, o: _Options, planned: dict, abstract: bool
) -> tuple[dict[Path, Any], dict[Path, Any], list[Path], list[str]]:
    """Kept leaves, with the moves their placement asks for and any refused resharding."""
    out: dict[Path, Any] = {}
    moves: dict[Path, Any] = {}
    resharded: list[Path] = []
    blocked: list[str] = []
    for path, leaf in values.items():
        sharding = _materialize.placement(_paths.resolve(o.device, path) or planned.get(path))
        if abstract:
            out[path] = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
        elif sharding is not None and getattr(leaf, "sharding", None) != sharding:
            out[path], moves[path] = leaf, sharding
            moved = _sharding.reshard_problem(path, leaf, sharding)
            if moved is not None and not o.reshard:
                blocked.append(moved)
            elif moved is not None:
                resharded.append(path)
        else:
            out[path] = leaf
    return out, moves, resharded, blocked


def _draw(
    root: jax.Array,
    holes: dict[Path, Hole],
    moves: dict[Path, Any],
    kept: dict[Path, Any],
    *,
    jit: bool,
) -> _drawing.Drawn:
    """The holes drawn from their initializers (with their checks for NaN and infinities),
    and the kept leaves moved where planned."""
    out = {path: jax.device_put(kept[path], sharding) for path, sharding in moves.items()}
    # Initializers that draw a whole module's variables at once (a wrapped flax module) are
    # compiled together even without jit=True: one program, not one per leaf.
    together = {
        p: h for p, h in holes.items() if jit or getattr(h.spec.init, "draws_together", False)
    }
    apart = {p: h for p, h in holes.items() if p not in together}
    drawn = _drawing.Drawn(out, {})
    for group in [
        *(_drawing.draw_holes(root, g, together=True) for g in _sharding.by_devices(together)),
        _drawing.draw_holes(root, apart, together=False),
    ]:
        drawn.values.update(group.values)
        drawn.finite.update(group.finite)
    return drawn


def _check_finite(holes: dict[Path, Hole], drawn: _drawing.Drawn, nonfinite: str) -> None:
    """Names every parameter drawn with a NaN or an infinity: one transfer of all the checks.

    A dry run traced by JAX (inside ``jax.jit``) has no values to look at: it is not checked.
    """
    if any(isinstance(f, jax.core.Tracer) for f in drawn.finite.values()):
        return
    checks = {id(f): f for f in drawn.finite.values()}  # a batch's parameters share one
    read = dict(zip(checks, jax.device_get(list(checks.values()))))
    bad = [
        p
        for p, f in drawn.finite.items()
        if not read[id(f)] and not _drawing.confirm_finite(drawn.values[p])
    ]
    if not bad:
        return
    lines = [
        f"{_paths.join(p)!r} ({_drawing.initializer_name(holes[p].spec)})" for p in sorted(bad)
    ]
    message = (
        f"The initializers drew NaN or infinite values for {len(bad)} parameter(s):\n  "
        + "\n  ".join(lines)
        + "\nCheck the initializer's arguments (a zero fan-in or a scale of inf gives NaN); "
    )
    if nonfinite == "raise":
        raise InitializerError(message + "the params were not returned.")
    warnings.warn(
        message + "pass nonfinite='raise' to make this an error, 'ignore' to skip the check.",
        NonFiniteParamWarning,
        stacklevel=4,  # the caller of li.dry_run
    )


_ADVICE = (
    "Load a state made for this model and input size, or drop the offending entries to "
    "re-initialize them (li.dry_run_with_report(..., strict=False) ignores unexpected ones)."
)


def _refuse(problems: list[str], blocked: list[str]) -> None:
    """One error for every problem: a reshard alone is a :class:`ReshardStateError`."""
    advice = _ADVICE
    if blocked:
        advice += (
            " Pass reshard=True to move loaded arrays to the planned layout (listed in "
            "report.resharded), or load them with the planned shardings."
        )
    error = StateMismatchError if problems else ReshardStateError
    _match.refuse("The dry run cannot use the given state", problems + blocked, advice, error)
