"""Writing a checkpoint from the arrays as they are, a piece at a time, never a second copy.

Every leaf is checked before a byte is written (all problems at once). Then
the header goes out with its digests' space reserved (``_format.py`` says why),
and each tensor follows in pieces, hashed as they are written:

* a numpy array, or a ``jax.Array`` on the CPU, is written from its own memory
  (``np.asarray`` of a CPU array is a view);
* an array on another device (a GPU) is copied to the host :data:`WINDOW` bytes
  of rows at a time;
* an array sharded over several devices is written shard by shard, one
  distinct shard per index (replicas once): rows held whole by one shard come
  from that shard, rows split over several shards are assembled
  :data:`WINDOW` bytes at a time.

So the extra memory of a save is a window, whatever the tree's size. Booleans
are written as the bytes 0 and 1: numpy lets a bool array hold any byte (all
but 0 mean True), and the reader refuses other bytes as a crafted file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np

from .. import _paths, _progress
from .._spec import Uninitialized
from .._typing import Path
from ..errors import WriteCheckpointError
from . import _atomic, _format

__all__ = ["write", "WINDOW"]

WINDOW = 4 << 20
"""The most bytes a save assembles or copies to the host at once (at least one row)."""


@dataclasses.dataclass(frozen=True)
class _Tensor:
    """One array to write: its name in the file, dtype code, shape, size, and the leaf itself."""

    name: str
    code: str
    shape: tuple[int, ...]
    nbytes: int
    leaf: Any


def write(
    path: str,
    flat: dict[Path, Any],
    tree: Mapping[str, Any] | Uninitialized,
    *,
    overwrite: bool,
    progress: bool | None,
) -> None:
    """Writes ``tree`` (already flattened to ``flat``) to ``path`` atomically, or raises
    WriteCheckpointError listing every leaf it cannot write, before writing anything."""
    problems = _name_problems(tree) + [
        f"{_paths.join(p)!r} is a placeholder of dtype {leaf.dtype.name}, which safetensors "
        "cannot store; choose another dtype"
        for p, leaf in flat.items()
        if isinstance(leaf, Uninitialized)
        and leaf.dtype is not None
        and leaf.dtype.name not in _format.NAMES
    ]
    tensors = [
        t
        for p, leaf in flat.items()
        if not isinstance(leaf, Uninitialized) and (t := _tensor(p, leaf, problems)) is not None
    ]
    _progress.check(progress, "li.save")  # a bad progress= is refused before writing
    if problems:
        raise WriteCheckpointError(
            f"Cannot save {path!r} ({len(problems)} problem(s)); nothing was written:\n  "
            + "\n  ".join(problems)
        )
    # safetensors' own order: by alignment, then name, so every tensor is aligned to its items
    tensors.sort(key=lambda t: (-_format.DTYPES[t.code].itemsize, t.name))
    spans, end = {}, 0
    for t in tensors:
        spans[t.name] = (t.code, t.shape, end, end + t.nbytes)
        end += t.nbytes
    meta = {
        "chunk": str(_format.CHUNK),
        "format": _format.FORMAT,
        "format_version": str(_format.FORMAT_VERSION),
        "tree": json.dumps(_layout(tree), separators=(",", ":")),
    }
    header, at_checksum, at_digests = _header(meta, spans, -(-end // _format.CHUNK))
    with (
        _atomic.writing(path, overwrite) as f,
        _progress.bar("li.save", end, progress) as advance,
    ):
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        hashed = _Chunks(_format.CHUNK)
        for t in tensors:
            for piece in _pieces(t.leaf, t.nbytes):
                data = piece.reshape(-1).view(np.uint8)
                if t.code == "BOOL" and data.size and data.max() > 1:
                    data = (data != 0).view(np.uint8)
                hashed.update(data)
                f.write(data.data)
                advance(data.size)
        meta["digests"] = hashed.finish().hex()
        f.flush()
        os.pwrite(f.fileno(), meta["digests"].encode(), 8 + at_digests)
        checksum = _format.header_checksum(meta, spans)
        os.pwrite(f.fileno(), checksum.encode(), 8 + at_checksum)


def _header(meta: dict[str, str], spans: dict[str, tuple], chunks: int) -> tuple[bytes, int, int]:
    """The JSON header with the checksum's and the digests' space reserved (zeros), padded with
    spaces to 8 bytes as safetensors does; and where the two reserved strings start."""
    text = '{"__metadata__":{"checksum":"'
    at_checksum = len(text)
    text += _format.PLACEHOLDER_CHECKSUM + '","digests":"'
    at_digests = len(text)  # both are ASCII so far: character and byte positions agree
    text += "0" * (_format.DIGEST_HEX * chunks) + '",' + json.dumps(meta, separators=(",", ":"))[1:]
    text += "".join(
        f',{json.dumps(name)}:{{"dtype":"{code}","shape":[{",".join(map(str, shape))}],'
        f'"data_offsets":[{start},{stop}]}}'
        for name, (code, shape, start, stop) in spans.items()
    )
    raw = (text + "}").encode()
    return raw + b" " * (-len(raw) % 8), at_checksum, at_digests


class _Chunks:
    """The digest of every ``size`` bytes of a stream, the last chunk shorter."""

    def __init__(self, size: int):
        self.size, self.filled, self.digests = size, 0, bytearray()
        self.h = hashlib.blake2b(digest_size=16)

    def update(self, data: np.ndarray) -> None:
        view = data.data
        while len(view):
            take = min(len(view), self.size - self.filled)
            self.h.update(view[:take])
            self.filled, view = self.filled + take, view[take:]
            if self.filled == self.size:
                self._close()

    def _close(self) -> None:
        self.digests += self.h.digest()
        self.h, self.filled = hashlib.blake2b(digest_size=16), 0

    def finish(self) -> bytes:
        if self.filled:
            self._close()
        return bytes(self.digests)


# ---------------------------------------------------------------------------
# What can be written, and its pieces.


def _tensor(path: Path, leaf: Any, problems: list[str]) -> _Tensor | None:
    """The tensor a leaf is written as, or None with a problem noted."""
    where = _paths.join(path)
    if isinstance(leaf, jax.core.Tracer):
        problems.append(
            f"{where!r} is a traced value ({leaf.aval.str_short()}): li.save needs concrete "
            "arrays and cannot run inside jax.jit, vmap or grad. Return the tree from the "
            "transformed function and save it outside."
        )
        return None
    if isinstance(leaf, jax.ShapeDtypeStruct):
        problems.append(
            f"{where!r} is abstract ({leaf.shape}, {leaf.dtype}): it has no values to save. "
            "Materialize it with li.dry_run(model, key, concrete_sample) first."
        )
        return None
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        problems.append(
            f"{where!r} is an array of PRNG keys: save jax.random.key_data(key) instead and "
            "rebuild it with jax.random.wrap_key_data after loading."
        )
        return None
    dtype = np.dtype(leaf.dtype)
    if dtype.name not in _format.NAMES:
        problems.append(
            f"{where!r} has dtype {dtype.name}, which safetensors cannot store. Supported: "
            f"{', '.join(sorted(_format.NAMES))}; cast it first."
        )
        return None
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        problems.append(
            f"{where!r} is sharded over several processes: li.save writes one host's file. "
            "Use li.TrainingCheckpoints (orbax) for multi-process state."
        )
        return None
    shape = tuple(int(d) for d in np.shape(leaf))
    nbytes = math.prod(shape) * dtype.itemsize
    return _Tensor("/".join(path), _format.NAMES[dtype.name], shape, nbytes, leaf)


def _pieces(leaf: Any, nbytes: int) -> Iterator[np.ndarray]:
    """The leaf's values in C order, as contiguous little-endian host arrays."""
    if nbytes == 0:
        return
    if not isinstance(leaf, jax.Array):
        yield from _host_pieces(np.asarray(leaf))
    elif leaf.ndim == 0:
        yield np.asarray(leaf)
    else:
        yield from _device_pieces(leaf)


def _little(a: np.ndarray) -> np.ndarray:
    return a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a


def _windows(shape: tuple[int, ...], itemsize: int, a: int, b: int) -> Iterator[tuple[int, int]]:
    """Rows ``a`` to ``b`` in runs of about :data:`WINDOW` bytes (at least one row each)."""
    step = max(1, WINDOW // max(1, math.prod(shape[1:]) * itemsize))
    for r in range(a, b, step):
        yield r, min(r + step, b)


def _host_pieces(arr: np.ndarray) -> Iterator[np.ndarray]:
    if arr.ndim == 0 or (arr.flags.c_contiguous and arr.dtype.byteorder != ">"):
        yield _little(arr)  # its own memory
        return
    for a, b in _windows(arr.shape, arr.dtype.itemsize, 0, arr.shape[0]):
        yield _little(np.ascontiguousarray(arr[a:b]))


def _on_cpu(x: jax.Array) -> bool:
    return all(d.platform == "cpu" for d in x.devices())


def _rows(x: jax.Array, a: int, b: int) -> Iterator[np.ndarray]:
    """Rows ``a`` to ``b`` of a one-device array on the host: a view on the CPU, else copied a
    window at a time."""
    if _on_cpu(x):
        yield np.asarray(x)[a:b]
        return
    for w0, w1 in _windows(x.shape, x.dtype.itemsize, a, b):
        yield np.asarray(x[w0:w1])


def _bounds(index: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    return tuple(s.indices(n)[:2] for s, n in zip(index, shape))


def _device_pieces(x: jax.Array) -> Iterator[np.ndarray]:
    shards: dict[tuple[tuple[int, int], ...], Any] = {}
    for s in x.addressable_shards:  # one per distinct index: replicas are written once
        shards.setdefault(_bounds(s.index, x.shape), s.data)
    breaks = sorted({r for bounds in shards for r in bounds[0]})
    for r0, r1 in zip(breaks, breaks[1:]):
        covering = [(b, data) for b, data in shards.items() if b[0][0] <= r0 and r1 <= b[0][1]]
        (bounds, data), *others = covering
        if not others and all(hi - lo == n for (lo, hi), n in zip(bounds[1:], x.shape[1:])):
            yield from _rows(data, r0 - bounds[0][0], r1 - bounds[0][0])  # one shard, full rows
            continue
        for a, b in _windows(x.shape, x.dtype.itemsize, r0, r1):
            window = np.empty((b - a, *x.shape[1:]), x.dtype)
            for bounds, data in covering:
                top = bounds[0][0]
                block = (
                    np.asarray(data)[a - top : b - top]
                    if _on_cpu(data)
                    else data[a - top : b - top]
                )
                window[(slice(None), *(slice(lo, hi) for lo, hi in bounds[1:]))] = block
            yield window


# ---------------------------------------------------------------------------
# The tree metadata and the names a file can hold.


def _layout(tree: Any) -> Any:
    """The ``tree`` metadata: nesting in order; ``["array"]`` or ``["uninitialized", shape, dtype]``.

    A root placeholder (the lazy state of a layer that names its parameters
    only from its input) is stored as the root's entry itself.
    """
    if isinstance(tree, Uninitialized):
        dtype = None if tree.dtype is None else tree.dtype.name
        return ["uninitialized", None if tree.shape is None else list(tree.shape), dtype]
    if not isinstance(tree, Mapping):
        return ["array"]
    return {key: _layout(value) for key, value in tree.items()}


def _name_problems(tree: Any, prefix: Path = ()) -> list[str]:
    """Keys a file cannot hold: the header's reserved name, text that is not valid UTF-8."""
    if not isinstance(tree, Mapping):
        return []
    problems = []
    for key, value in tree.items():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(
                f"key {key!r} under {_paths.join(prefix)!r} is not valid UTF-8 text (it holds a "
                "lone surrogate character); rename it"
            )
            continue
        if not prefix and key == _format.RESERVED and not isinstance(value, Mapping):
            problems.append(
                f"{_format.RESERVED!r} is the name safetensors reserves for its header's "
                "metadata; rename this leaf or nest it one level deeper"
            )
        problems += _name_problems(value, (*prefix, key))
    return problems
