"""What a load moves where: each tensor, the piece of it each device takes, and what that costs.

One plan serves two callers: :func:`lazyinit.load` carries it out
(``_transfer.py``) and :func:`lazyinit.check_checkpoint` reports, from the header
alone, the memory carrying it out will take. They cannot disagree.

A tensor is moved in one of three ways:

* **whole, in a batch**: a tensor of at most :data:`SMALL` bytes is read with its
  neighbours in the file (up to :data:`BATCH` bytes at once) and moved with one
  transfer per placement: a checkpoint of 100,000 small leaves is read in a few
  reads, not 100,000;
* **whole, alone**: a larger tensor bound for one device is read into a buffer
  of its own, which on a CPU device becomes the array itself (no copy);
* **in pieces**: a larger tensor sharded over several devices is read one
  distinct piece per index (replicas once), only the pieces of this process's
  devices, and assembled with ``jax.make_array_from_single_device_arrays``: no
  process ever holds a whole tensor it keeps only part of.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

from .._typing import Path
from . import _format

__all__ = ["Piece", "Move", "plan", "Memory", "memory", "SMALL", "BATCH", "WINDOW"]

SMALL = 1 << 20
"""Tensors up to this size are read whole and moved in batches."""
BATCH = 16 << 20
"""The most bytes of small tensors read at once."""
WINDOW = 4 << 20
"""The most bytes of rows read at once for pieces that are not contiguous in the file."""

Bounds = tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True)
class Piece:
    """One block of a saved tensor (``[lo, hi)`` per axis) and the devices that take it."""

    bounds: Bounds
    devices: tuple[Any, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(hi - lo for lo, hi in self.bounds)


@dataclasses.dataclass(frozen=True)
class Move:
    """One loaded tensor: where its bytes are, what it becomes, and how it gets there.

    ``where`` is the placement (None: the default device, uncommitted, as
    ``jnp.asarray``); ``pieces`` is None for a tensor moved whole, else the pieces
    this process's devices take.
    """

    path: Path
    saved: np.dtype
    dtype: np.dtype
    shape: tuple[int, ...]
    start: int
    stop: int
    where: Any
    pieces: tuple[Piece, ...] | None

    @property
    def nbytes(self) -> int:
        return self.stop - self.start

    @property
    def batched(self) -> bool:
        return self.pieces is None and self.nbytes <= SMALL


def _bounds(index: tuple[slice, ...], shape: tuple[int, ...]) -> Bounds:
    return tuple(s.indices(n)[:2] for s, n in zip(index, shape))


def _devices(where: Any) -> int:
    return 1 if where is None else len(where.device_set)


def plan(path: Path, name: str, dtype: np.dtype, where: Any, header: _format.Header) -> Move:
    """How the saved tensor ``name`` reaches ``where`` as ``dtype``."""
    code, shape, start, stop = header.spans[name]
    pieces = None
    if _devices(where) > 1 and stop - start > SMALL:
        local: dict[Bounds, list[Any]] = {}
        for device, index in where.addressable_devices_indices_map(shape).items():
            local.setdefault(_bounds(index, shape), []).append(device)
        pieces = tuple(Piece(b, tuple(d)) for b, d in local.items())
    return Move(path, _format.DTYPES[code], np.dtype(dtype), shape, start, stop, where, pieces)


def contiguous(bounds: Bounds, shape: tuple[int, ...]) -> bool:
    """Whether a block of a C-order array is one run of bytes: full on every axis after some
    axis, and one wide on every axis before it."""
    partial = [i for i, ((lo, hi), n) in enumerate(zip(bounds, shape)) if (lo, hi) != (0, n)]
    return not partial or all(hi - lo == 1 for lo, hi in bounds[: partial[-1]])


def offset(bounds: Bounds, shape: tuple[int, ...]) -> int:
    """The index, in C order, of a block's first element."""
    flat = 0
    for (lo, _), n in zip(bounds, shape):
        flat = flat * n + lo
    return flat


# ---------------------------------------------------------------------------
# What it costs.


@dataclasses.dataclass(frozen=True)
class Memory:
    """The bytes a load's arrays take on each device, and each process's peak host memory."""

    device_bytes: dict[str, int]
    process_bytes: dict[int, int]


def _default_device() -> Any:
    chosen = getattr(jax.config, "jax_default_device", None)
    return chosen if isinstance(chosen, jax.Device) else jax.local_devices()[0]


class _Layouts:
    """Each (placement, shape)'s block per device, asked of JAX once: a checkpoint of 100,000
    leaves has a few dozen layouts."""

    def __init__(self) -> None:
        self.default = _default_device()
        self._seen: dict[Any, dict[Any, Bounds]] = {}

    def blocks(self, where: Any, shape: tuple[int, ...]) -> dict[Any, Bounds]:
        if where is None:
            return {self.default: tuple((0, n) for n in shape)}
        try:
            return self._seen[where, shape]
        except KeyError:
            pass
        except TypeError:  # an unhashable sharding
            return _blocks(where, shape)
        found = self._seen[where, shape] = _blocks(where, shape)
        return found


def _blocks(where: Any, shape: tuple[int, ...]) -> dict[Any, Bounds]:
    return {d: _bounds(i, shape) for d, i in where.devices_indices_map(shape).items()}


def _staging(move: Move, blocks: dict[Any, Bounds], process: int) -> int:
    """The host bytes ``move`` holds at once in ``process``, beyond the arrays it leaves on that
    process's CPU devices: the buffers a tensor or its pieces are read into where they do not
    become the arrays (another device, a cast), and the window of rows for scattered pieces."""
    cast = move.dtype != move.saved
    if move.batched:  # read into the batch's buffer, then copied: all of it is staging
        return move.nbytes + (math.prod(move.shape) * move.dtype.itemsize if cast else 0)
    local = {b: d for d, b in blocks.items() if d.process_index == process}
    if move.pieces is None:  # whole to one device: this process's, or the load fails anyway
        local = {b: d for d, b in blocks.items()}
    elements = sum(math.prod(hi - lo for lo, hi in b) for b in local)
    saved, target = elements * move.saved.itemsize, elements * move.dtype.itemsize
    on_cpu = all(d.platform == "cpu" for d in local.values())
    host = (saved if cast else 0) if on_cpu else saved + (target if cast else 0)
    if move.pieces is None or all(contiguous(b, move.shape) for b in local):
        return host
    row = math.prod(move.shape[1:]) * move.saved.itemsize
    rows = max(hi - lo for (lo, hi), *_ in local)
    return host + min(rows, max(1, WINDOW // max(row, 1))) * row  # as _transfer reads them


def memory(moves: Iterable[Move], chunk: int) -> Memory:
    """The per-device and per-process peak memory of carrying out ``moves``.

    A device holds its arrays. A process's host holds the arrays of its CPU
    devices (a CPU device's memory is the host's), plus, at the peak, the
    largest staging of one step (a batch of small tensors, or one larger
    tensor's buffers and window) and the ``chunk`` bytes of two chunks the
    reader keeps.
    """
    layouts, steps = _Layouts(), []
    devices: dict[Any, int] = {}
    for m in moves:
        blocks = layouts.blocks(m.where, m.shape)
        for d, b in blocks.items():
            devices[d] = devices.get(d, 0) + math.prod(hi - lo for lo, hi in b) * m.dtype.itemsize
        steps.append((m, blocks))
    out: dict[int, int] = {}
    for p in sorted({d.process_index for d in devices} | {jax.process_index()}):
        resident = sum(
            n for d, n in devices.items() if d.process_index == p and d.platform == "cpu"
        )
        batch = min(BATCH, sum(_staging(m, b, p) for m, b in steps if m.batched))
        largest = max((_staging(m, b, p) for m, b in steps if not m.batched), default=0)
        out[p] = resident + max(batch, largest) + (2 * chunk if steps else 0)
    return Memory({str(d): n for d, n in sorted(devices.items(), key=lambda i: i[0].id)}, out)
