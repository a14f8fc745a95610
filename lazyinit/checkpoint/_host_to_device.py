"""Many small host arrays onto a device, at a few microseconds each.

``jnp.asarray`` and ``jax.device_put`` cost 13 to 30 microseconds per array on
CPU, nearly all of it Python dispatch around one copy; a checkpoint of
100,000 small leaves spends seconds there. jaxlib's ``batched_device_put``
(what ``jax.make_array_from_callback`` ends in) makes the same ``jax.Array``
from a numpy array in about 2 microseconds. It is not public API: it is
called as jaxlib 0.10 defines it (``pyproject.toml`` keeps jax to that
series), only for single-device placements, and where it is missing
everything takes the public path. ``tests/test_host_to_device.py`` checks
that both paths give the same arrays (values, dtype, device, committedness).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["put_many"]

try:
    from jax._src.lib import xla_client as _xc

    _batched_device_put: Any = _xc.batched_device_put
except (ImportError, AttributeError):  # pragma: no cover - another jaxlib: the public path
    _batched_device_put = None


def put_many(hosts: Sequence[np.ndarray], where: jax.sharding.Sharding | None) -> list[jax.Array]:
    """Copies of ``hosts`` on ``where``, as ``jax.device_put(host, where)`` gives them.

    ``where=None`` is the default device, uncommitted (as ``jnp.asarray``); a
    ``SingleDeviceSharding`` is committed to its device. The host arrays are
    always copied, never aliased, so the caller may reuse their memory.
    """
    if not hosts:
        return []
    if where is None:
        first = jnp.asarray(hosts[0])  # the public path says where the default device is
        sharding, committed = first.sharding, False
        rest = _fast(hosts[1:], sharding, committed)
        return [first, *(rest if rest is not None else map(jnp.asarray, hosts[1:]))]
    if isinstance(where, jax.sharding.SingleDeviceSharding):
        fast = _fast(hosts, where, True)
        if fast is not None:
            return fast
    return list(jax.device_put(list(hosts), where))


def _fast(
    hosts: Sequence[np.ndarray], sharding: jax.sharding.Sharding, committed: bool
) -> list[jax.Array] | None:
    """jaxlib's batched_device_put per array (forced copy), or None where it cannot serve."""
    if _batched_device_put is None or not isinstance(sharding, jax.sharding.SingleDeviceSharding):
        return None
    devices = list(sharding.device_set)
    avals: dict[tuple[tuple[int, ...], np.dtype], Any] = {}
    out = []
    for host in hosts:
        key = (host.shape, host.dtype)
        aval = avals.get(key)
        if aval is None:
            aval = avals[key] = jax.core.ShapedArray(host.shape, host.dtype)
        out.append(_batched_device_put(aval, sharding, [host], devices, committed, True))
    return out
