"""What a load moves where: each tensor, the piece of it each device takes, and what that costs.

One plan serves two callers: :func:`lazyinit.load` carries it out
(:mod:`._transfer`) and :func:`lazyinit.check_checkpoint` reports, from the header
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


def _on_devices(move: Move) -> dict[Any, int]:
    """The bytes of ``move``'s array on every device, of every process."""
    item = move.dtype.itemsize
    if move.where is None:
        return {_default_device(): math.prod(move.shape) * item}
    return {
        d: math.prod(hi - lo for lo, hi in _bounds(index, move.shape)) * item
        for d, index in move.where.devices_indices_map(move.shape).items()
    }


def _staging(move: Move, process: int) -> int:
    """The host bytes ``move`` holds in ``process`` beyond the arrays it leaves on the CPU."""
    cast = move.dtype != move.saved
    if move.pieces is None:
        devices = [_default_device()] if move.where is None else list(move.where.device_set)
        if devices[0].process_index != process and len(devices) == 1:
            return 0
        on_cpu = all(d.platform == "cpu" for d in devices)
        saved = move.nbytes
        target = math.prod(move.shape) * move.dtype.itemsize
        if move.batched:  # the batch's buffer is freed; the transfer copies
            return saved + (target if cast else 0)
        return (saved if cast else 0) if on_cpu else saved + (target if cast else 0)
    assert move.where is not None
    local: dict[Bounds, list[Any]] = {}
    for d, index in move.where.devices_indices_map(move.shape).items():
        if d.process_index == process:
            local.setdefault(_bounds(index, move.shape), []).append(d)
    saved = sum(math.prod(hi - lo for lo, hi in b) for b in local) * move.saved.itemsize
    target = saved // move.saved.itemsize * move.dtype.itemsize
    row = math.prod(move.shape[1:]) * move.saved.itemsize
    rows = max((hi - lo for (lo, hi), *_ in local), default=0)
    window = min(rows, max(1, WINDOW // max(row, 1))) * row  # as _transfer reads them
    scratch = 0 if all(contiguous(b, move.shape) for b in local) else window
    on_cpu = all(d.platform == "cpu" for ds in local.values() for d in ds)
    host = (saved if cast else 0) if on_cpu else saved + (target if cast else 0)
    return host + scratch


def memory(moves: Iterable[Move], chunk: int) -> Memory:
    """The per-device and per-process peak memory of carrying out ``moves``.

    A device holds its arrays. A process's host holds the arrays of its CPU
    devices (a CPU device's memory is the host's), plus, at the peak, the
    largest staging of one step (a batch of small tensors, or one larger
    tensor's pieces and scratch) and two chunks the reader keeps.
    """
    moves = list(moves)
    devices: dict[Any, int] = {}
    for m in moves:
        for d, n in _on_devices(m).items():
            devices[d] = devices.get(d, 0) + n
    processes = sorted({d.process_index for d in devices} | {jax.process_index()})
    out: dict[int, int] = {}
    for p in processes:
        resident = sum(
            n for d, n in devices.items() if d.process_index == p and d.platform == "cpu"
        )
        batch = min(BATCH, sum(_staging(m, p) for m in moves if m.batched))
        largest = max((_staging(m, p) for m in moves if not m.batched), default=0)
        out[p] = resident + max(batch, largest) + (2 * chunk if moves else 0)
    return Memory({str(d): n for d, n in sorted(devices.items(), key=lambda i: i[0].id)}, out)
