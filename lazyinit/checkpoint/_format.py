"""The bytes of a lazyinit checkpoint: a safetensors file with lazyinit's metadata.

A checkpoint is a `safetensors <https://github.com/huggingface/safetensors>`_
file: an 8-byte header length, a JSON header, then raw little-endian tensor
bytes. Any safetensors reader in any language opens it and sees each array
under its ``/``-joined path (``fc1/kernel``). lazyinit adds, in the header's
text metadata:

* ``format`` = ``lazyinit.checkpoint`` and ``format_version`` (an integer; a
  newer one than this library reads is a :class:`ReadVersionError`);
* ``tree``: the nesting, in order, empty sub-dicts included, and every
  :class:`~lazyinit.Uninitialized` placeholder with its known dimensions and
  dtype (placeholders have no bytes, so they live only here). A tree that is
  a single root placeholder is stored as that placeholder's entry;
* the digests that make a flipped bit or a torn write fail rather than load as
  a valid but wrong checkpoint. They differ by version:

  - **version 2** (what :func:`lazyinit.save` writes): the tensor bytes, taken
    as one run from the end of the header, are cut into chunks of ``chunk``
    bytes (1 MiB; the last one shorter), and ``digests`` holds each chunk's
    BLAKE2b-128 digest in hex, in order. ``checksum`` is a BLAKE2b-128 digest of
    the header: every other metadata entry and every tensor's name, dtype,
    shape and offsets. A reader checks the checksum from the header alone, and
    each chunk it reads against its digest, so it can read part of a file (the
    shards one process keeps) and still trust every byte it uses. The header
    comes first in the file but the digests are known only once the data is
    written: a writer reserves their space (hex digests have a fixed length, so
    the header's length does not depend on them), streams the tensors while
    hashing them, then writes the digests into the reserved space. Hashing in a
    first pass would read every array twice; a digest at the end of the file
    would not be safetensors.
  - **version 1**: ``checksum`` is one BLAKE2b-128 digest of the tree, the
    tensor table and every tensor's bytes, so only a reader of the whole file
    can check it. Such files still load, read whole and fully verified.

Reading validates the framing, the header and the metadata in Python before
any tensor byte is read, and turns every problem into a
:class:`ReadCheckpointError` naming the file. Nothing is ever unpickled;
pickle-based files are recognized and refused (:class:`ReadPickleError`).

Reading opens only regular files (a FIFO, a device or ``/dev/zero`` behind a
symlink is refused without reading), reads the header first, refuses a file
whose size disagrees with it, and then reads only the tensor bytes it
describes (``_read.py``): memory is bounded by the tensors, not by the file.
The header alone (:func:`read_header`) is enough to check a checkpoint against
a model. Writing is in ``_write.py`` (atomic: ``_atomic.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import stat
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np

from .. import _paths
from .._spec import Uninitialized
from .._typing import Path
from ..errors import ReadCheckpointError, ReadPickleError, ReadVersionError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CHUNK",
    "Header",
    "read_header",
    "opened",
    "header_checksum",
    "chunk_digest",
]

FORMAT = "lazyinit.checkpoint"
FORMAT_VERSION = 2
"""The version this library writes and the newest it reads."""
CHUNK = 1 << 20
"""The bytes each digest of a version 2 file covers."""
DIGEST_HEX = 32  # a BLAKE2b-128 digest in hex
PLACEHOLDER_CHECKSUM = "blake2b-128:" + "0" * DIGEST_HEX  # what a writer reserves

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib")
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
_MAX_DIM = 2**62  # larger dimensions (or products) cannot be numpy arrays
_MIN_CHUNK, _MAX_CHUNK = 1 << 10, 1 << 30
RESERVED = "__metadata__"  # the safetensors header's metadata key: not a tensor name
# safetensors' dtype codes and the numpy dtype each one reads back as.
_CODES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "U32": "uint32",
    "I32": "int32",
    "U64": "uint64",
    "I64": "int64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}
NAMES = {v: k for k, v in _CODES.items()}
DTYPES = {code: np.dtype(name) for code, name in _CODES.items()}


# ---------------------------------------------------------------------------
# Digests.


def chunk_digest(data: Any) -> bytes:
    """A chunk's BLAKE2b-128 digest (version 2)."""
    return hashlib.blake2b(data, digest_size=16).digest()


def header_checksum(meta: Mapping[str, str], spans: Mapping[str, tuple]) -> str:
    """The version 2 ``checksum``: every metadata entry but itself, then every tensor's name,
    dtype code, shape and offsets in the order of its bytes."""
    h = hashlib.blake2b(digest_size=16)
    for key in sorted(meta):
        if key != "checksum":
            h.update(json.dumps([key, meta[key]]).encode())
    for name in sorted(spans, key=lambda n: spans[n][2]):
        code, shape, start, stop = spans[name]
        h.update(entry_json(name, code, [*shape, start, stop]).encode())
    return "blake2b-128:" + h.hexdigest()


def digest_v1(layout: str, table: list[tuple[str, str, list[int], Any]]) -> str:
    """The version 1 ``checksum``: the tree, then every tensor's entry and bytes, by name."""
    h = hashlib.blake2b(digest_size=16)
    h.update(layout.encode())
    for name, code, shape, data in sorted(table, key=lambda t: t[0]):
        h.update(entry_json(name, code, shape).encode())
        h.update(data)
    return "blake2b-128:" + h.hexdigest()


def entry_json(name: str, code: str, numbers: list[int]) -> str:
    """``json.dumps([name, code, numbers])``, formatted directly when no character needs escaping
    (the common case, and three times faster over 100,000 tensors)."""
    if name.isascii() and name.isprintable() and '"' not in name and "\\" not in name:
        return f'["{name}", "{code}", [{", ".join(map(str, numbers))}]]'
    return json.dumps([name, code, numbers])


# ---------------------------------------------------------------------------
# Reading the header.


class Bad(Exception):
    """Internal: what is wrong with a file, before it becomes a ReadCheckpointError."""


_MAX_VERSION_DIGITS = 9
_MAX_DEPTH = _paths.MAX_DEPTH


@dataclasses.dataclass(frozen=True)
class Header:
    """What a checkpoint's header says, read without its tensor bytes.

    Attributes:
      entries: ``{path: Uninitialized or (dtype name, shape)}`` for every leaf.
      layout: the ``tree`` metadata (the nesting, in order).
      version: the format version (1 or 2).
      checksum: version 1: the digest the whole file must match; version 2: the
        header's own, already checked.
      spans: ``{tensor name: (safetensors dtype code, shape, start, stop)}``, the
        offsets counted from the start of the tensor bytes.
      data_offset, data_size: where the tensor bytes lie in the file.
      chunk, digests: version 2: the bytes each digest covers, and the digests,
        16 bytes each, in order.
    """

    entries: dict[Path, Any]
    layout: Any
    version: int
    checksum: str
    spans: dict[str, tuple[str, tuple[int, ...], int, int]]
    data_offset: int
    data_size: int
    chunk: int = CHUNK
    digests: bytes = b""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _open(path: str) -> tuple[BinaryIO, int]:
    """The file opened for reading and its size; anything but a regular file is refused.

    ``O_NONBLOCK`` keeps ``open`` from waiting on a FIFO that has no writer.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ReadCheckpointError(
                f"{path!r} is {_kind(st.st_mode)}, not a regular file (through a symlink, if it "
                "is one): nothing was read. Pass the path of a file written by li.save."
            )
        return os.fdopen(fd, "rb"), st.st_size
    except BaseException:
        os.close(fd)
        raise


def _read_exactly(f: BinaryIO, n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise Bad(f"it ended after {len(data)} of the {n} bytes of its {what} (truncated?)")
    return data


def _header(
    text: bytes, size: int
) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...]]], dict[str, tuple]]:
    """Validates the JSON header against the ``size`` bytes of data that follow it.

    Returns ``(metadata, {name: (dtype, shape)}, {name: (code, shape, start, stop)})``.
    """
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise Bad(f"its header is not valid JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise Bad("its header is not a JSON object")
    meta = header.pop(RESERVED, None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise Bad("its metadata is not a mapping of strings")
    end, tensors, spans = 0, {}, {}
    for name, entry in header.items():
        try:
            code, shape, (start, stop) = entry["dtype"], entry["shape"], entry["data_offsets"]
            dtype = DTYPES[code]
            ok = (
                isinstance(shape, list)
                and len(shape) <= 64
                and all(type(d) is int and 0 <= d < _MAX_DIM for d in shape)
                and math.prod(max(d, 1) for d in shape) < _MAX_DIM
                and type(start) is type(stop) is int
                and stop - start == math.prod(shape) * dtype.itemsize
            )
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise Bad(f"its entry for tensor {name!r} is malformed: {str(entry)[:100]}")
        spans[name] = (code, tuple(shape), start, stop)
        tensors[name] = (_CODES[code], tuple(shape))
    for start, stop, name in sorted((v[2], v[3], k) for k, v in spans.items()):
        if start != end:
            raise Bad(f"tensor {name!r} does not start where the previous one ends")
        end = stop
    if end != size:
        raise Bad(
            f"its header describes {end} bytes of tensor data but the file holds {size} after "
            "the header (truncated, or padded?)"
        )
    return meta, tensors, spans


def _version(meta: dict[str, str]) -> int:
    version = meta.get("format_version", "")
    if not (version.isascii() and version.isdigit() and len(version) <= _MAX_VERSION_DIGITS):
        raise Bad(f"its format_version {version[:20]!r} is not a plausible integer")
    if int(version) > FORMAT_VERSION:
        raise ReadVersionError(
            f"format version {int(version)}: this lazyinit reads versions up to {FORMAT_VERSION}. "
            "Upgrade lazyinit to load it."
        )
    return max(int(version), 1)


def _entries(meta: dict[str, str], tensors: dict) -> tuple[Any, dict[Path, Any]]:
    """Checks lazyinit's tree metadata; returns (layout, {path: Uninitialized or (dtype, shape)})."""
    try:
        layout = json.loads(meta["tree"])
    except (KeyError, ValueError, RecursionError):
        raise Bad("its 'tree' metadata is missing or not valid JSON") from None
    out: dict[Path, Any] = {}

    def walk(node: Any, prefix: Path) -> None:
        if not isinstance(node, dict):
            raise Bad(f"its 'tree' metadata at {_paths.join(prefix)!r} is not an object")
        if len(prefix) >= _MAX_DEPTH:
            raise Bad(
                f"its 'tree' metadata is nested deeper than {_MAX_DEPTH} levels, more than "
                "li.save writes"
            )
        for key, value in node.items():
            if not key or "/" in key:
                raise Bad(f"its 'tree' metadata holds an illegal key {key!r}")
            path = (*prefix, key)
            if isinstance(value, dict):
                walk(value, path)
            elif value == ["array"]:
                if "/".join(path) not in tensors:
                    raise Bad(f"{_paths.join(path)!r} is listed in 'tree' but has no tensor")
                out[path] = tensors["/".join(path)]
            else:
                out[path] = _placeholder(path, value)

    if isinstance(layout, list):  # a root placeholder: the whole tree is one entry
        out[()] = _placeholder((), layout)
    else:
        walk(layout, ())
    arrays = {"/".join(p) for p, v in out.items() if not isinstance(v, Uninitialized)}
    if set(tensors) != arrays:
        extra = sorted(set(tensors) - arrays)[:3]
        raise Bad(f"it holds tensors that its 'tree' metadata does not list: {extra}")
    return layout, out


def _placeholder(path: Path, value: Any) -> Uninitialized:
    try:
        kind, shape, dtype = value
        assert kind == "uninitialized"
        assert shape is None or (
            len(shape) <= 64
            and all(d is None or (type(d) is int and 0 < d < _MAX_DIM) for d in shape)
        )
        assert dtype is None or dtype in NAMES
        return Uninitialized(shape, None if dtype is None else np.dtype(dtype))
    except (AssertionError, TypeError, ValueError, RecursionError):
        raise Bad(f"its 'tree' metadata entry for {_paths.join(path)!r} is malformed") from None


def _chunks(meta: dict[str, str], spans: dict[str, tuple], size: int) -> tuple[int, bytes]:
    """Version 2: the chunk size and the digests, checked against the header's checksum."""
    chunk = meta.get("chunk", "")
    if not (chunk.isascii() and chunk.isdigit() and _MIN_CHUNK <= int(chunk) <= _MAX_CHUNK):
        raise Bad(f"its chunk size {chunk[:20]!r} is not one li.save writes")
    digests, count = meta.get("digests", ""), -(-size // int(chunk))
    if len(digests) != count * DIGEST_HEX:
        raise Bad(f"its 'digests' metadata does not hold {count} digests")
    try:
        raw = bytes.fromhex(digests)
    except ValueError:
        raise Bad("its 'digests' metadata is not hexadecimal") from None
    if meta.get("checksum") != header_checksum(meta, spans):
        raise Bad(CORRUPT + " (its header)")
    return int(chunk), raw


CORRUPT = "its checksum does not match its contents (the file is corrupt)"


def corrupt(path: str, why: str) -> ReadCheckpointError:
    """The error for a file whose bytes are wrong: ``why`` says what is wrong."""
    return _sniff(path, b"", why)


def bad_bools(path: str, names: list[str]) -> ReadCheckpointError:
    return ReadCheckpointError(
        f"{path!r} is not a valid lazyinit checkpoint: boolean tensor(s) {names[:3]} hold "
        "bytes other than 0 and 1, which li.save never writes (a crafted file?). Nothing "
        "was loaded."
    )


def _sniff(path: str, first: bytes, why: str) -> ReadCheckpointError:
    if first[:1] == b"\x80" and first[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        what = "a Python pickle"
    elif first[:4] == b"PK\x03\x04":
        what = "a zip archive (torch.save's format, or .npz), which holds pickles"
    elif path.lower().endswith(PICKLE_SUFFIXES):
        what = "named like a pickle-based checkpoint"
    else:
        advice = (
            "Nothing was loaded; restore it from a copy."
            if why.startswith(CORRUPT)
            else "Nothing was loaded. If the save was interrupted, load the previous checkpoint; "
            "if the file is corrupt, restore it from a copy."
        )
        return ReadCheckpointError(f"{path!r} is not a valid lazyinit checkpoint: {why}. {advice}")
    return ReadPickleError(
        f"{path!r} is {what}. lazyinit never unpickles: loading a pickle can run arbitrary "
        "code. Convert it once, in a trusted environment: for PyTorch weights, params = "
        "lazyinit.interop.torch.from_torch_state_dict(model, path, sample) (which reads it "
        "with torch.load(..., weights_only=True)), then li.save('model.safetensors', params)."
    )


def _read_header(path: str, f: BinaryIO, size: int) -> Header:
    first = b""
    try:
        first = f.read(8)
        if len(first) < 8:
            raise Bad(f"it is {size} bytes long, shorter than a safetensors header")
        n = int.from_bytes(first, "little")
        if n < 2 or n > _MAX_HEADER or 8 + n > size:
            raise Bad(
                f"its header length field says {n} bytes but the file has {size} (truncated?)"
            )
        meta, tensors, spans = _header(_read_exactly(f, n, "header"), size - 8 - n)
        if meta.get("format") != FORMAT:
            found = meta.get("format")
            raise Bad(
                "it is a safetensors file without lazyinit metadata (read it with "
                "safetensors.numpy.load_file and pass the arrays to li.load_state)"
                if found is None
                else f"its format is {found[:40]!r}, not {FORMAT!r}"
            )
        version = _version(meta)
        layout, entries = _entries(meta, tensors)
        chunk, digests = _chunks(meta, spans, size - 8 - n) if version >= 2 else (CHUNK, b"")
    except RecursionError:
        raise _sniff(path, first, "its metadata is nested too deeply") from None
    except Bad as e:
        raise _sniff(path, first, str(e)) from None
    except ReadVersionError as e:
        raise ReadVersionError(f"{path!r} has {e}") from None
    checksum = meta.get("checksum", "")
    return Header(entries, layout, version, checksum, spans, 8 + n, size - 8 - n, chunk, digests)


def read_header(path: str) -> Header:
    """Reads and validates only the header: the time does not grow with the tensors' size.

    The tensor bytes are not read (``_read.py`` checks them as it reads them); a
    version 2 header's own checksum is checked.

    Raises:
      ReadCheckpointError: the header is malformed, or the file is not a regular
        file or not a lazyinit checkpoint (and its subclasses).
      OSError: the file cannot be opened.
    """
    with opened(path) as (_, header):
        return header


@contextlib.contextmanager
def opened(path: str) -> Iterator[tuple[int, Header]]:
    """The file's descriptor, open for reading its tensor bytes, and its checked header."""
    f, size = _open(path)
    with f:
        yield f.fileno(), _read_header(path, f, size)
