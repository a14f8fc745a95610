"""``dry_run``: trace the model on a sample, then materialize what is not there yet.

The lifecycle and its guarantees are told once, in :mod:`lazyinit._tracer`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from . import _materialize, _paths, _sharding
from ._errors import InvalidArgumentError, ReshardStateError, StateMismatchError
from ._spec import Param, Uninitialized
from ._state import Report, _report, describe_mismatch, is_leaf
from ._trace_cache import is_abstract
from ._tracer import trace
from ._typing import Params, Path, PerPath

__all__ = ["dry_run"]


def _policy(dtype: PerPath, path: Path, param: Param) -> Any:
    """The ``dtype=`` choice for ``path``; it applies to floating-point parameters only, so a
    counter declared int32 (BatchNorm's ``count``) stays an int."""
    if param.dtype is not None and not np.issubdtype(param.dtype, np.floating):
        return None
    return _paths.resolve(dtype, path)


def _covering(state: dict[Path, Any], path: Path) -> Path | None:
    """The path of a placeholder of unknown structure that stands for ``path``'s layer."""
    for i in range(len(path) - 1, -1, -1):
        leaf = state.get(path[:i])
        if isinstance(leaf, Uninitialized) and leaf.shape is None:
            return path[:i]
    return None


def dry_run(
    model: Any,
    key: Any,
    /,
    *args: Any,
    state: Params | None = None,
    strict: bool = True,
    dtype: PerPath = None,
    device: PerPath = None,
    jit: bool = False,
    mesh: Any = None,
    rules: _sharding.Rules | None = None,
    axes: PerPath = None,
    reshard: bool = False,
    **kwargs: Any,
) -> Params | tuple[Params, Report]:
    """Infers every parameter's shape from a sample input and materializes the parameters.

    Args:
      model: a :class:`lazyinit.Layer`.
      key: the root PRNG key (``jax.random.key(0)``, a raw key or an int seed).
        Each parameter's key is derived from it and the parameter's path.
      *args, **kwargs: a sample of what the model is called with after
        ``params``. Arrays only lend their shapes and dtypes; with
        ``jax.ShapeDtypeStruct`` samples the result is abstract (a tree of
        ``ShapeDtypeStruct``) and nothing is allocated.
      state: what is already known: loaded arrays, which are checked and kept
        bit for bit, and placeholders from :func:`lazyinit.lazy_state`,
        whose dtype and device are honoured. May be partial.
      strict: whether paths in ``state`` that the model lacks are an error.
        With ``strict=False`` they are ignored and the call returns
        ``(params, report)`` saying what was kept, initialized and ignored.
      dtype: the dtype of every parameter, or a mapping of path patterns to
        dtypes (``{'*': 'float32', 'fc1': 'bfloat16'}``). Overrides the
        placeholders' and the specs' dtypes. Default: the spec's, else float32.
      device: a ``jax.Device`` or ``Sharding`` (or a mapping of path patterns
        to them) to materialize on. Loaded leaves are moved there too.
      jit: draw everything in one jit-compiled call instead of one cached
        kernel per kind of parameter (same values; slower to compile).
      mesh: a ``jax.sharding.Mesh`` (or, for an abstract run, an
        ``AbstractMesh``) to shard every parameter over, as ``rules`` maps
        its logical axes (see :mod:`lazyinit._sharding`). All parameters are
        then drawn in one jit-compiled call straight into their
        ``NamedSharding``, with the same values as without a mesh; loaded
        leaves are placed in the same layout. ``device=`` and placeholders'
        devices win over the plan for their paths.
      rules: logical axis name -> mesh axis, tuple of mesh axes or None,
        as a dict or a sequence of pairs.
      axes: per-path overrides of the parameters' logical axes (a tuple of
        names per path pattern), or a ``PartitionSpec`` of mesh axes.
      reshard: whether a loaded array already spread over several devices in
        another layout may be moved to the planned one (and listed in
        ``report.resharded``); by default it is an error.

    Returns:
      The params, a nested dict of ``jax.Array`` (or ``ShapeDtypeStruct``);
      ``(params, report)`` when ``strict=False``.

    Raises:
      StateMismatchError: a leaf of ``state`` disagrees with its inferred shape
        or dtype, or (strict) ``state`` has paths the model lacks. All offending
        paths are listed; nothing is overwritten.
      InferShapeError: a layer cannot handle the sample input.
      ShardParamError: a logical axis without a rule, a rule naming an axis
        the mesh lacks, or a dimension its mesh axes do not divide.
      ReshardStateError: a loaded array is sharded in another layout than
        the planned one and ``reshard`` is false.
      ProcessMismatchError: processes of a multi-process run disagree on
        the paths, shapes, dtypes or layouts to materialize.

    >>> import jax, jax.numpy as jnp, lazyinit as li
    >>> model = li.Sequential([li.Linear(4), li.relu, li.Linear(1)])
    >>> params = li.dry_run(model, jax.random.key(0), jnp.ones((8, 3)))
    >>> jax.tree.map(jnp.shape, params)
    {'0': {'bias': (4,), 'kernel': (3, 4)}, '2': {'bias': (1,), 'kernel': (4, 1)}}
    """
    t = trace(model, *args, **kwargs)
    abstract = is_abstract((args, kwargs))
    root = _materialize.as_key(key, abstract=abstract)
    if isinstance(
        state, Uninitialized
    ):  # the lazy state of a layer that needs its input to name params
        have: dict[Path, Any] = {(): state}
    else:
        have = _paths.flatten(state, is_leaf, what="state") if state is not None else {}
    if mesh is None and (rules is not None or axes is not None):
        raise InvalidArgumentError(
            "li.dry_run: rules= and axes= lay parameters out on a mesh; pass mesh= too."
        )
    planned = (
        {} if mesh is None else _sharding.plan_shardings(t.params, mesh, rules, axes, abstract)
    )
    moves: dict[Path, Any] = {}
    resharded: list[Path] = []
    blocked: list[str] = []  # loaded arrays laid out otherwise, while reshard is false

    out: dict[Path, Any] = {}
    todo: dict[Path, tuple[Param, np.dtype, Any]] = {}
    problems: list[str] = []
    kept, used = [], set()
    for path, param in t.params.items():
        leaf = have.get(path)
        cover = None if leaf is not None else _covering(have, path)
        hint = (
            leaf
            if isinstance(leaf, Uninitialized)
            else have.get(cover)
            if cover is not None
            else None
        )
        used.add(path if leaf is not None else cover)
        want = np.dtype(
            _policy(dtype, path, param)
            or (hint.dtype if hint is not None and hint.dtype is not None else None)
            or param.dtype
            or np.float32
        )
        device_choice = (
            _paths.resolve(device, path)
            or (hint.device if hint is not None else None)
            or planned.get(path)
        )
        sharding = _materialize.placement(device_choice)
        _materialize.check_dtype(path, want)
        if leaf is None or isinstance(leaf, Uninitialized):
            if leaf is not None and not leaf.matches(param.shape):
                problems.append(describe_mismatch(path, param, leaf, "inferred", "placeholder"))
            elif abstract:
                out[path] = _materialize.abstract_leaf(param, want, sharding)
            else:
                todo[path] = (param, want, sharding)
            continue
        if tuple(leaf.shape) != param.shape:
            problems.append(describe_mismatch(path, leaf, param, "existing", "inferred"))
        elif np.dtype(leaf.dtype) != want:
            problems.append(
                f"dtype mismatch for {_paths.join(path)!r}: existing {np.dtype(leaf.dtype).name}, "
                f"inferred {want.name} (convert it with li.load_state(..., cast=True) first)"
            )
        else:
            kept.append(path)
            if abstract:
                out[path] = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
            elif sharding is not None and getattr(leaf, "sharding", None) != sharding:
                out[path], moves[path] = leaf, sharding
                moved = _sharding.reshard_problem(path, leaf, sharding)
                if moved is not None and not reshard:
                    blocked.append(moved)
                elif moved is not None:
                    resharded.append(path)
            else:
                out[path] = leaf
    unexpected = [p for p in have if p not in used]
    if strict:
        params = [p for p in t.params if p not in have]
        problems += [
            f"unexpected key {_paths.join(p)!r} in state: the model has no such parameter"
            f"{_paths.near_miss(p, params)}"
            for p in unexpected
        ]
    if problems or blocked:
        error = StateMismatchError if problems else ReshardStateError
        problems += blocked
        raise error(
            f"The dry run found {len(problems)} problem(s) with the given state; nothing was "
            "overwritten:\n  "
            + "\n  ".join(problems)
            + "\nLoad a state made for this model and input size, or drop the offending "
            "entries to re-initialize them (strict=False ignores unexpected ones)."
            + (
                " Pass reshard=True to move loaded arrays to the planned layout (listed in "
                "report.resharded), or load them with the planned shardings."
                if blocked
                else ""
            ),
            tuple(problems),
        )

    if planned and not abstract and _sharding.spans_processes(mesh):
        rows = _sharding.fingerprint_rows(root, mesh, todo, kept)
        _sharding.agree_across_processes(rows)
    for path, sharding in moves.items():
        out[path] = jax.device_put(out[path], sharding)
    if todo:
        if jit or planned:
            for group in _sharding.by_devices(todo):
                out.update(_materialize.draw_all(root, group))
        else:
            for path, (param, want, sharding) in todo.items():
                out[path] = _materialize.draw(root, path, param, want, sharding)
    params = _paths.unflatten({p: out[p] for p in t.params}, t.layers)
    if strict:
        return params
    kept_set = set(kept)
    initialized = [p for p in t.params if p not in kept_set]
    return params, _report(
        kept=kept, initialized=initialized, unexpected=unexpected, resharded=resharded
    )
