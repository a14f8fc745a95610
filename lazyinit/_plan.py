"""``plan``: a model's parameters laid out on a mesh, from a sample signature, allocating nothing."""

from __future__ import annotations

from typing import Any

from ._dry_run import dry_run
from ._sharding import Plan, Rules
from ._trace_cache import abstractify
from ._typing import PerPath

__all__ = ["plan"]


def plan(
    model: Any,
    /,
    *args: Any,
    mesh: Any = None,
    rules: Rules | None = None,
    axes: PerPath = None,
    dtype: PerPath = None,
    **kwargs: Any,
) -> Plan:
    """Plans ``model``'s parameters on ``mesh`` from a sample signature, allocating nothing.

    The sample may be arrays or ``jax.ShapeDtypeStruct``s; only shapes count.
    ``mesh`` may be an ``AbstractMesh``, to plan for devices this machine lacks.
    A repeated plan of the same model and signature reuses the cached trace.

    Examples:
        >>> import jax, lazyinit as li
        >>> mesh = jax.sharding.AbstractMesh((4, 2), ("fsdp", "tensor"))
        >>> p = li.plan(li.Linear(1024), jax.ShapeDtypeStruct((8, 4096), "float32"),
        ...             mesh=mesh, rules={"embed": "fsdp", "mlp": "tensor"})
        >>> p.params["kernel"].sharding.spec, p.total_bytes, p.bytes_per_device
        (P('fsdp', 'tensor'), 16781312, 2099200)
    """
    args, kwargs = abstractify((args, kwargs))
    params = dry_run(model, 0, *args, mesh=mesh, rules=rules, axes=axes, dtype=dtype, **kwargs)
    return Plan.of(params)
