"""Sharding: logical axes on specs, a rules table, and the plan they give a mesh.

A layer names each dimension of a parameter with a *logical* axis
(``Linear``'s kernel is ``('embed', 'mlp')``), as flax's ``with_partitioning``
does. A *rules table* maps logical names to the axes of a
``jax.sharding.Mesh`` (t5x's and flax's logical axis rules)::

    rules = {"embed": "fsdp", "mlp": "tensor", "vocab": "tensor", "heads": "tensor", "kv": None}

A value is a mesh axis, a tuple of mesh axes (the dimension is split over
their product) or ``None`` (replicated). Given as a sequence of pairs, a name
may appear more than once: the first entry whose mesh axes the parameter does
not already use wins, so ``[("embed", "fsdp"), ("mlp", "fsdp"), ("mlp", None)]``
shards a square ``('mlp', 'mlp')`` kernel once. A dimension with axis ``None``
is replicated; a logical name without a rule is an error, never a silent
replication. ``axes=`` overrides the logical axes per path, or gives a
``PartitionSpec`` of mesh axes directly.

:func:`plan_shardings` resolves every parameter to a ``NamedSharding`` at once
and reports every problem together, before anything is compiled. The dry run
(``li.dry_run(..., mesh=mesh, rules=rules)``) then draws all parameters in one
jit-compiled call whose ``out_shardings`` are these: each device computes only
its own shards, and, the PRNG being partitionable, the values are those of the
unsharded run. With ``jax.ShapeDtypeStruct`` samples and a mesh (an
``AbstractMesh`` needs no devices), :func:`plan` returns the shardings and a
per-device memory estimate without allocating.

Loaded arrays in ``state=`` keep their values: host and single-device arrays
are placed in the planned layout; one already spread over several devices in
another layout is an error unless ``reshard=True`` (then it is moved and listed
in ``report.resharded``), since it usually means the checkpoint was restored
with other rules.

When the mesh spans several processes, each one first compares a fingerprint
of what it is about to materialize (paths, shapes, dtypes, layouts, key, mesh)
with the others', so that processes that disagree fail naming the differing
paths instead of hanging in a collective that only some of them join.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeAlias

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from . import _paths
from ._match import Hole
from ._spec import Param
from ._typing import Params, Path, PerPath
from .errors import InvalidArgumentError, ProcessMismatchError, ShardParamError

__all__ = ["Rules", "Plan", "plan_shardings", "reshard_problem"]

MeshAxes: TypeAlias = str | tuple[str, ...] | None
Rules: TypeAlias = Mapping[str, MeshAxes] | Iterable[tuple[str, MeshAxes]]
"""Logical axis name -> mesh axis, tuple of mesh axes, or None (replicated)."""

_MAX_LINES = 12


def _targets(rules: Rules | None) -> dict[str, list[tuple[str, ...] | None]]:
    """``{logical name: [candidate mesh axes, in order]}`` from a rules table."""
    if rules is None:
        return {}
    pairs = rules.items() if isinstance(rules, Mapping) else rules
    out: dict[str, list[tuple[str, ...] | None]] = {}
    for entry in pairs:
        ok = isinstance(entry, tuple | list) and len(entry) == 2 and isinstance(entry[0], str)
        target = entry[1] if ok else None
        if isinstance(target, str):
            target = (target,)
        elif target is not None:
            ok = ok and isinstance(target, tuple | list) and all(isinstance(a, str) for a in target)
            target = tuple(target) if ok else None
        if not ok:
            raise ShardParamError(
                f"Rules entry {entry!r} must be (logical_name, mesh_axis), where mesh_axis is a "
                "mesh axis name, a tuple of them, or None to replicate."
            )
        out.setdefault(entry[0], []).append(target)
    return out


def _entry(axes: tuple[str, ...] | None) -> Any:
    return None if not axes else axes[0] if len(axes) == 1 else axes


def _show(axes: tuple[str, ...] | None) -> str:
    return "None" if not axes else repr(axes[0]) if len(axes) == 1 else repr(axes)


def _spec_axes(spec: PartitionSpec, ndim: int) -> list[tuple[str, ...] | None]:
    entries = list(spec) + [None] * (ndim - len(spec))
    return [None if e is None else (e,) if isinstance(e, str) else tuple(e) for e in entries]


def _resolve_one(
    path: Path, param: Param, sizes: Mapping[str, int], targets: dict, override: Any
) -> tuple[PartitionSpec, list[str]]:
    """The ``PartitionSpec`` of one parameter, and what is wrong with it."""
    where, shape, ndim = f"{_paths.join(path)!r} {param.shape}", param.shape, len(param.shape)
    problems: list[str] = []
    if isinstance(override, PartitionSpec):
        if len(override) > ndim:
            return PartitionSpec(), [
                f"{where}: axes override {override} has more entries than dimensions"
            ]
        chosen = _spec_axes(override, ndim)
        labels = [f"override {override}"] * ndim
    else:
        names = param.axes if override is None else tuple(override)
        names = names if names is not None else (None,) * ndim
        if len(names) != ndim:
            return PartitionSpec(), [
                f"{where}: axes override {names} names {len(names)} dimension(s), the parameter has "
                f"{ndim}. Give one logical name (or None) per dimension."
            ]
        chosen, labels = [], []
        used: set[str] = set()
        for dim, name in enumerate(names):
            labels.append(f"logical axis {name!r}")
            if name is None:
                chosen.append(None)
                continue
            if name not in targets:
                problems.append(
                    f"{where}: dimension {dim} has logical axis {name!r}, which no rule maps to "
                    f"an axis of mesh {dict(sizes)} (rules cover {sorted(targets)}). Add "
                    f"({name!r}, <mesh axis or None>) to rules; None replicates it."
                )
                chosen.append(None)
                continue
            free = [t for t in targets[name] if t is None or not used & set(t)]
            if not free:
                problems.append(
                    f"{where}: dimension {dim} ({name!r}) maps to mesh axes "
                    f"{', '.join(_show(t) for t in targets[name])}, all already used by an earlier "
                    f"dimension. Add a fallback rule ({name!r}, None) after the others."
                )
                chosen.append(None)
                continue
            chosen.append(free[0])
            used |= set(free[0] or ())
    for dim, axes in enumerate(chosen):
        if not axes:
            continue
        missing = [a for a in axes if a not in sizes]
        if missing:
            problems.append(
                f"{where}: dimension {dim} ({labels[dim]}) maps to mesh axis {missing[0]!r}, which "
                f"the mesh lacks; its axes are {dict(sizes)}. Fix the rule or the mesh."
            )
            continue
        n = math.prod(sizes[a] for a in axes)
        if shape[dim] % n:
            problems.append(
                f"{where}: dimension {dim} ({labels[dim]}) has size {shape[dim]}, not divisible by "
                f"mesh axis {_show(axes)} of size {n}. Use a size divisible by {n}, map the axis "
                f"elsewhere, or override this path: axes={{{_paths.join(path)!r}: ...}}."
            )
    spec = PartitionSpec(*(_entry(a) for a in chosen))
    flat = [a for axes in chosen for a in axes or ()]
    twice = sorted({a for a in flat if flat.count(a) > 1})
    if twice and not problems:
        problems.append(
            f"{where}: layout {spec} shards more than one dimension over mesh axis "
            f"{twice[0]!r}. Use each mesh axis at most once per parameter."
        )
    return spec, problems


def _raise(
    problems: list[str], what: str, cls: type[Exception] = ShardParamError, advice: str = ""
) -> None:
    shown = problems[:_MAX_LINES]
    more = f"\n  ... and {len(problems) - _MAX_LINES} more" if len(problems) > _MAX_LINES else ""
    raise cls(f"{what} ({len(problems)}):\n  " + "\n  ".join(shown) + more + advice)


def plan_shardings(
    params: Mapping[Path, Param],
    mesh: Any,
    rules: Rules | None,
    axes: PerPath = None,
    abstract: bool = True,
) -> dict[Path, NamedSharding]:
    """``{path: NamedSharding}`` for every parameter, or one error listing every problem.

    ``mesh`` is a ``jax.sharding.Mesh``, or an ``AbstractMesh`` when ``abstract``
    (nothing is materialized); ``axes`` overrides the logical axes (or gives a
    ``PartitionSpec``) per path pattern.

    Examples:
        >>> import jax, lazyinit as li
        >>> from lazyinit._sharding import plan_shardings
        >>> mesh = jax.sharding.AbstractMesh((2, 4), ("fsdp", "tensor"))
        >>> t = li.trace(li.Linear(8), jax.ShapeDtypeStruct((1, 4), "float32"))
        >>> {"/".join(p): s.spec for p, s in plan_shardings(
        ...     t.params, mesh, {"embed": "fsdp", "mlp": "tensor"}).items()}
        {'kernel': P('fsdp', 'tensor'), 'bias': P('tensor',)}
    """
    if not isinstance(mesh, jax.sharding.Mesh | jax.sharding.AbstractMesh):
        raise InvalidArgumentError(
            f"mesh must be a jax.sharding.Mesh or AbstractMesh, got {mesh!r}."
        )
    if isinstance(mesh, jax.sharding.AbstractMesh) and not abstract:
        raise InvalidArgumentError(
            "An AbstractMesh has no devices to materialize on: pass jax.ShapeDtypeStruct "
            "samples to plan with it, or a jax.sharding.Mesh to materialize."
        )
    sizes, targets = dict(mesh.shape), _targets(rules)
    out, problems = {}, []
    for path, param in params.items():
        spec, bad = _resolve_one(path, param, sizes, targets, _paths.resolve(axes, path))
        problems += bad
        if not bad:
            out[path] = NamedSharding(mesh, spec)
    if problems:
        _raise(problems, f"Cannot shard the parameters over mesh {sizes}")
    return out


def by_devices(holes: Mapping[Path, Hole]) -> list[dict[Path, Hole]]:
    """``holes`` split by the devices each one's sharding spans: one compiled draw each."""
    groups: dict[Any, dict[Path, Hole]] = {}
    for path, hole in holes.items():
        devices = None if hole.device is None else frozenset(d.id for d in hole.device.device_set)
        groups.setdefault(devices, {})[path] = hole
    return list(groups.values())


def reshard_problem(path: Path, leaf: Any, sharding: Any) -> str | None:
    """Why moving loaded ``leaf`` to ``sharding`` is a resharding, or None if it is mere placement.

    Host arrays and arrays on one device are placed without fuss; an array already
    spread over several devices in another layout is a resharding.
    """
    have = getattr(leaf, "sharding", None)
    if have is None or sharding is None or len(have.device_set) < 2:
        return None
    if have.is_equivalent_to(sharding, len(leaf.shape)):
        return None
    return (
        f"{_paths.join(path)!r} {tuple(leaf.shape)}: loaded as {_layout(have)}, the plan is "
        f"{_layout(sharding)}"
    )


def _layout(s: Any) -> str:
    if isinstance(s, NamedSharding):
        return f"{s.spec} over mesh {dict(s.mesh.shape)}"
    return f"{type(s).__name__} on {len(s.device_set)} device(s)"


# ---------------------------------------------------------------------------
# Memory plans.


def _group(path: str) -> str:
    return re.sub(r"(?<=/)\d+(?=/)|^\d+(?=/)", "*", path)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Shapes, dtypes and shardings of a model's parameters, and what each device holds.

    Attributes:
      params: the abstract params, a nested dict of ``jax.ShapeDtypeStruct`` with shardings.
      devices: how many devices the parameters are spread over.
      total_bytes: the parameters' size, each counted once.
      bytes_per_device: the most parameter bytes any one device holds (no optimizer state,
        activations or temporaries: Adam adds twice this in float32 moments).
      rows: ``(pattern, count, shape, dtype, spec, bytes per device each)``, numbered path
        components folded into ``*`` so that a 32-layer model prints a dozen rows.
    """

    params: Params
    devices: int
    total_bytes: int
    bytes_per_device: int
    rows: tuple[tuple[str, int, tuple[int, ...], str, str, int], ...]

    @classmethod
    def of(cls, params: Params) -> Plan:
        """The plan of a params tree (arrays or ``ShapeDtypeStruct``, sharded or not): what
        ``li.plan`` returns for a model, for a tree you already have.

        Examples:
            >>> import jax, lazyinit as li
            >>> li.Plan.of({"w": jax.ShapeDtypeStruct((4, 8), "float32")}).total_bytes
            128
        """
        flat = _paths.flatten(params, _paths.is_shaped)
        groups: dict[tuple, list] = {}
        total = per_device = 0
        devices = 1
        for path, leaf in flat.items():
            shape, dtype = tuple(leaf.shape), np.dtype(leaf.dtype)
            sharding = getattr(leaf, "sharding", None)
            shard = sharding.shard_shape(shape) if sharding is not None else shape
            if isinstance(sharding, NamedSharding):
                devices = max(devices, sharding.mesh.size)
            each = math.prod(shard) * dtype.itemsize
            total += math.prod(shape) * dtype.itemsize
            per_device += each
            spec = str(sharding.spec) if isinstance(sharding, NamedSharding) else "-"
            name = _paths.join(path)
            groups.setdefault((_group(name), shape, dtype.name, spec, each), []).append(name)
        rows = tuple(
            (p if len(names) > 1 else names[0], len(names), s, d, sp, b)
            for (p, s, d, sp, b), names in groups.items()
        )
        return cls(
            _paths.unflatten(flat, _paths.subtrees(params)), devices, total, per_device, rows
        )

    def __str__(self) -> str:
        n = sum(r[1] for r in self.rows)
        count = sum(r[1] * math.prod(r[2]) for r in self.rows)
        head = (
            f"{count:,} parameters in {n} arrays: {_bytes(self.total_bytes)} in all, "
            f"{_bytes(self.bytes_per_device)} per device on {self.devices} device(s)"
        )
        table = [("path", "count", "shape", "dtype", "sharding", "per device")] + [
            (p, f"x{c}", str(s), d, sp, _bytes(b * c)) for p, c, s, d, sp, b in self.rows
        ]
        widths = [max(len(r[i]) for r in table) for i in range(6)]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in table]
        return head + "\n" + "\n".join(lines)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError


# ---------------------------------------------------------------------------
# Agreement between processes.


def spans_processes(mesh: Any) -> bool:
    """Whether ``mesh`` has devices of more than one process (then they must all agree)."""
    devices = getattr(mesh, "devices", None)
    return devices is not None and len({d.process_index for d in devices.flat}) > 1


def fingerprint_rows(
    key: Any, mesh: Any, holes: Mapping[Path, Hole], kept: Iterable[Path]
) -> list[tuple[str, str]]:
    """What this process is about to materialize: ``(name, description)`` rows, sorted."""
    devices = sorted(d.id for d in mesh.devices.flat)
    rows = [
        ("<key>", f"key data {np.asarray(jax.random.key_data(key)).ravel().tolist()}"),
        ("<mesh>", f"mesh {dict(mesh.shape)} of devices {devices}"),
    ]
    for path, hole in holes.items():
        rows.append(
            (
                _paths.join(path),
                f"{np.dtype(hole.dtype).name}{hole.spec.shape} {_spec(hole.device)}",
            )
        )
    rows += [(_paths.join(p), "a loaded array") for p in kept]
    return sorted(rows)


def _spec(sharding: Any) -> str:
    return str(sharding.spec) if isinstance(sharding, NamedSharding) else repr(sharding)


def agree_across_processes(rows: list) -> None:
    """Raises :class:`ProcessMismatchError` naming what differs unless every process has ``rows``.

    Every process calls this with rows of any length: the first exchange has a fixed
    shape (a digest and a length), so a disagreement never leaves a process waiting
    in a collective the others skipped.
    """
    from jax.experimental import multihost_utils

    text = json.dumps(rows).encode()
    digest = np.frombuffer(hashlib.blake2b(text, digest_size=16).digest(), np.uint32)
    heads = np.asarray(
        multihost_utils.process_allgather(np.concatenate([[len(text)], digest]).astype(np.uint32))
    )
    if (heads[:, 1:] == heads[0, 1:]).all():
        return
    buf = np.zeros(int(heads[:, 0].max()), np.uint8)
    buf[: len(text)] = np.frombuffer(text, np.uint8)
    texts = np.asarray(multihost_utils.process_allgather(buf))
    me, mine = jax.process_index(), dict(rows)
    problems = []
    for other, (n, raw) in enumerate(zip(heads[:, 0], texts)):
        theirs = dict(json.loads(bytes(raw[:n]).decode()))
        for name in sorted(set(mine) | set(theirs)):
            a, b = mine.get(name, "nothing"), theirs.get(name, "nothing")
            if a != b:
                problems.append(f"{name!r}: process {me} has {a}, process {other} has {b}")
    _raise(
        problems,
        f"The {len(heads)} processes disagree on what to materialize; nothing was materialized",
        ProcessMismatchError,
        "\nEvery process must dry-run the same model with the same key, on samples of the "
        "same shapes, with the same state.",
    )
