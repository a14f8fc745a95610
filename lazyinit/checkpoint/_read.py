"""A checkpoint's tensor bytes, every byte checked against its digest before it is used.

A load asks for byte ranges (a tensor, a process's rows of it, a batch of small
tensors) and gets them in buffers it owns, read straight from the file with
``preadv``: nothing is mapped and no whole copy of the file is made.

* **Version 2** files carry a digest per 1 MiB chunk (``_format.py``). A range
  is read chunk by chunk: the chunks it covers whole go straight into the
  caller's buffer and are hashed there; a chunk it covers in part (its first and
  last) is read whole into a scratch buffer, checked and kept, so that the next
  range, which usually starts in it, does not read it again. A process thus
  reads the chunks that hold its shards and no others.
* **Version 1** files have one digest over everything, so they are read whole
  and checked once, as before version 2; ranges are then copied from memory.

Either way a mismatch is a :class:`~lazyinit.errors.ReadCheckpointError` and the load returns
nothing.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict

import numpy as np

from . import _format
from ._format import Header

__all__ = ["Data", "pread_into", "check_bools"]

_KEEP = 2  # partly read chunks kept: the one a range ends in is the one the next starts in


def pread_into(fd: int, offset: int, out: memoryview) -> None:
    """Fills ``out`` from the file at ``offset``; a short file raises :class:`_format.Bad`."""
    done = 0
    while done < len(out):
        n = os.preadv(fd, [out[done:]], offset + done)
        if n == 0:
            raise _format.Bad(
                f"it ended {offset + done} bytes in, inside the tensor data its header describes "
                "(truncated?)"
            )
        done += n


class Data:
    """Checked reads of the tensor bytes of one open checkpoint (offsets from the data's start)."""

    def __init__(self, path: str, fd: int, header: Header):
        self.path, self.fd, self.header = path, fd, header
        self._kept: OrderedDict[int, memoryview] = OrderedDict()
        self._whole: memoryview | None = None
        if header.version < 2:
            self._whole = self._read_v1()

    def read_into(self, start: int, buffer: np.ndarray) -> None:
        """Fills ``buffer`` (contiguous ``uint8``) with the data bytes from ``start`` on, each
        checked first."""
        out = buffer.data
        if self._whole is not None:
            out[:] = self._whole[start : start + len(out)]
            return
        stop, chunk = start + len(out), self.header.chunk
        for i in range(start // chunk, -(-stop // chunk)):
            c0, c1 = i * chunk, min((i + 1) * chunk, self.header.data_size)
            if start <= c0 and c1 <= stop:  # whole: read in place, hashed in place
                self._fill(c0, out[c0 - start : c1 - start], i)
            else:
                a, b = max(c0, start), min(c1, stop)
                out[a - start : b - start] = self._chunk(i, c0, c1)[a - c0 : b - c0]

    def _chunk(self, i: int, c0: int, c1: int) -> memoryview:
        if i in self._kept:
            return self._kept[i]
        buf = memoryview(bytearray(c1 - c0))
        self._fill(c0, buf, i)
        self._kept[i] = buf
        if len(self._kept) > _KEEP:
            self._kept.popitem(last=False)
        return buf

    def _fill(self, c0: int, out: memoryview, i: int) -> None:
        try:
            pread_into(self.fd, self.header.data_offset + c0, out)
        except _format.Bad as e:
            raise _format.corrupt(self.path, str(e)) from None
        want = self.header.digests[16 * i : 16 * (i + 1)]
        if _format.chunk_digest(out) != want:
            raise _format.corrupt(
                self.path, f"{_format.CORRUPT}: bytes {c0} to {c0 + len(out)} of its tensor data"
            )

    def _read_v1(self) -> memoryview:
        """The whole of a version 1 file's data, checked against its one checksum."""
        h = self.header
        data = memoryview(bytearray(h.data_size))
        try:
            pread_into(self.fd, h.data_offset, data)
        except _format.Bad as e:
            raise _format.corrupt(self.path, str(e)) from None
        table = [
            (name, code, list(shape), data[start:stop])
            for name, (code, shape, start, stop) in h.spans.items()
        ]
        layout = json.dumps(h.layout, separators=(",", ":"))
        if h.checksum != _format.digest_v1(layout, table):
            raise _format.corrupt(self.path, _format.CORRUPT)
        return data


def check_bools(path: str, named: dict[str, np.ndarray]) -> None:
    """Boolean tensors must hold only the bytes 0 and 1, as li.save writes them."""
    bad = [name for name, a in named.items() if a.size and a.view(np.uint8).max() > 1]
    if bad:
        raise _format.bad_bools(path, bad)
