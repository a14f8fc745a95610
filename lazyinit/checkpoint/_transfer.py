"""Carrying out a load plan (``_pieces.py``): checked bytes from the file onto the devices.

Each buffer a tensor is read into is allocated for it, aligned to 64 bytes,
and handed to ``jax.device_put(..., may_alias=True)``: on a CPU device the
array then uses that buffer (no copy, so a load holds its arrays once); on
another device it is copied over and the buffer freed before the next tensor
is read. Batches of small tensors are copied (``_host_to_device.put_many``)
and their buffer freed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .._typing import Path
from . import _pieces, _read
from ._host_to_device import put_many
from ._pieces import Move, Piece

__all__ = ["transfer"]


def _aligned(nbytes: int) -> np.ndarray:
    """``nbytes`` of uninitialized memory, 64-byte aligned (what XLA's CPU client can adopt)."""
    raw = np.empty(nbytes + 64, np.uint8)
    skip = -raw.ctypes.data % 64
    return raw[skip : skip + nbytes]


def _as(data: _read.Data, raw: np.ndarray, move: Move, shape: tuple[int, ...]) -> np.ndarray:
    """Bytes read for ``move`` as its values in the dtype it loads in (checked if boolean)."""
    host = raw.view(move.saved).reshape(shape)
    if move.saved == np.bool_:
        _read.check_bools(data.path, {"/".join(move.path): host})
    if move.dtype == move.saved:
        return host
    cast = _aligned(math.prod(shape) * move.dtype.itemsize).view(move.dtype).reshape(shape)
    np.copyto(cast, host, casting="unsafe")
    return cast


def transfer(
    data: _read.Data, moves: list[Move], advance: Callable[[int], Any]
) -> dict[Path, jax.Array]:
    """Every move's array, read in the order of the file."""
    out: dict[Path, jax.Array] = {}
    batch: list[Move] = []
    held = 0  # the bytes of the batch
    for move in sorted(moves, key=lambda m: m.start):
        if move.batched:
            if batch and held + move.nbytes > _pieces.BATCH:
                out.update(_batch(data, batch))
                batch, held = [], 0
            batch.append(move)
            held += move.nbytes
        elif move.pieces is None:
            raw = _aligned(move.nbytes)
            data.read_into(move.start, raw)
            host = _as(data, raw, move, move.shape)
            out[move.path] = jax.device_put(host, move.where, may_alias=True)
        else:
            out[move.path] = _sharded(data, move)
        advance(move.nbytes)
    out.update(_batch(data, batch))
    return out


def _batch(data: _read.Data, moves: list[Move]) -> dict[Path, jax.Array]:
    """Small tensors: one read per run of neighbours in the file, one transfer per placement."""
    hosts: list[tuple[Move, np.ndarray]] = []
    run: list[Move] = []
    for move in [*moves, None]:
        if run and (move is None or move.start != run[-1].stop):
            raw = np.empty(run[-1].stop - run[0].start, np.uint8)
            data.read_into(run[0].start, raw)
            for m in run:
                piece = raw[m.start - run[0].start : m.stop - run[0].start]
                hosts.append((m, _as(data, piece, m, m.shape)))
            run = []
        if move is not None:
            run.append(move)
    out: dict[Path, jax.Array] = {}
    groups: dict[Any, list[tuple[Move, np.ndarray]]] = {}
    for m, host in hosts:
        try:
            groups.setdefault(m.where, []).append((m, host))
        except TypeError:  # an unhashable sharding moves alone
            out[m.path] = jax.device_put(host, m.where)
    for where, items in groups.items():
        moved = put_many([h for _, h in items], where)
        out.update((m.path, a) for (m, _), a in zip(items, moved))
    return out


def _sharded(data: _read.Data, move: Move) -> jax.Array:
    """A tensor sharded over several devices, from this process's pieces only."""
    assert move.pieces is not None
    hosts = _read_pieces(data, move)
    arrays = []
    for piece in move.pieces:
        host = _as(data, hosts.pop(piece), move, piece.shape)
        arrays += [jax.device_put(host, d, may_alias=True) for d in piece.devices]
    return jax.make_array_from_single_device_arrays(move.shape, move.where, arrays)


def _read_pieces(data: _read.Data, move: Move) -> dict[Piece, np.ndarray]:
    """The bytes of each piece, reading each byte of the file that they need once: a piece that
    is one run of bytes straight into its buffer, others from windows of whole rows."""
    assert move.pieces is not None
    item, shape = move.saved.itemsize, move.shape
    hosts = {p: _aligned(math.prod(p.shape) * item) for p in move.pieces}
    if all(_pieces.contiguous(p.bounds, shape) for p in move.pieces):
        for p in move.pieces:
            data.read_into(move.start + _pieces.offset(p.bounds, shape) * item, hosts[p])
        return hosts
    row = math.prod(shape[1:]) * item
    step = max(1, _pieces.WINDOW // max(row, 1))
    views = {p: hosts[p].view(move.saved).reshape(p.shape) for p in move.pieces}
    for r0, r1 in _merged(p.bounds[0] for p in move.pieces):
        for a in range(r0, r1, step):
            b = min(a + step, r1)
            scratch = np.empty((b - a) * row, np.uint8)
            data.read_into(move.start + a * row, scratch)
            block = scratch.view(move.saved).reshape((b - a, *shape[1:]))
            for p in move.pieces:
                (lo, hi), rest = p.bounds[0], p.bounds[1:]
                i0, i1 = max(a, lo), min(b, hi)
                if i0 < i1:
                    views[p][i0 - lo : i1 - lo] = block[
                        (slice(i0 - a, i1 - a), *(slice(x, y) for x, y in rest))
                    ]
    return hosts


def _merged(ranges: Any) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges merged where they touch or overlap, in order."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out
