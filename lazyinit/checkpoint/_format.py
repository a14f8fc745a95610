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
* ``checksum``: a BLAKE2b digest of the tree, the tensor table and every
  tensor's bytes, so a flipped bit or a torn write never loads as a valid but
  wrong checkpoint.

Reading validates the framing, the header and the metadata in Python before
safetensors decodes anything, and turns every problem into a
:class:`ReadCheckpointError` naming the file. Nothing is ever unpickled;
pickle-based files are recognized and refused (:class:`ReadPickleError`).

Reading opens only regular files (a FIFO, a device or ``/dev/zero`` behind a
symlink is refused without reading), reads the header first, refuses a file
whose size disagrees with it, and then reads exactly the tensor bytes it
describes: memory is bounded by the tensors, not by the file. The header
alone (:func:`read_header`) is enough to check a checkpoint against a model.

Writing is atomic: the bytes go to a unique temporary file
``.<name>.<random>.tmp`` in the target's directory, created with the
process's umask (which is never changed) and held under an exclusive
``flock`` while it is written; it is fsynced, renamed over the target
(``os.replace``) and the directory fsynced. A process killed at any point
leaves either the previous file or the new one, never a mix. Its temporary
file, whose lock died with it, is deleted by the next save of that name; a
live writer's temporary is locked and never touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import hashlib
import json
import math
import os
import secrets
import stat
from collections.abc import Mapping
from typing import Any, BinaryIO

import jax
import numpy as np
import safetensors

from .. import _paths
from .._spec import Uninitialized
from .._typing import Path
from ..errors import (
    OverwriteCheckpointError,
    ReadCheckpointError,
    ReadPickleError,
    ReadVersionError,
    WriteCheckpointError,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, no stale-file cleanup
    fcntl = None  # type: ignore[assignment]

__all__ = ["FORMAT", "FORMAT_VERSION", "encode", "write_atomic", "read", "read_header"]

FORMAT = "lazyinit.checkpoint"
FORMAT_VERSION = 1
"""The version this library writes and the newest it reads."""

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib")
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
_MAX_DIM = 2**62  # larger dimensions (or products) cannot be numpy arrays
_RESERVED = "__metadata__"  # the safetensors header's metadata key: not a tensor name
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
_NAMES = {v: k for k, v in _CODES.items()}
_DTYPES = {code: np.dtype(name) for code, name in _CODES.items()}


# ---------------------------------------------------------------------------
# Writing.


def _host(path: Path, leaf: Any, problems: list[str]) -> np.ndarray | None:
    """A leaf's values as a contiguous little-endian numpy array, or None with a problem noted."""
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
    if dtype.name not in _NAMES:
        problems.append(
            f"{where!r} has dtype {dtype.name}, which safetensors cannot store. Supported: "
            f"{', '.join(sorted(_NAMES))}; cast it first."
        )
        return None
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        problems.append(
            f"{where!r} is sharded over several processes: li.save writes one host's file. "
            "Use li.TrainingCheckpoints (orbax) for multi-process state."
        )
        return None
    arr = np.asarray(leaf, order="C")  # not ascontiguousarray: it makes scalars 1-d
    return arr.astype(arr.dtype.newbyteorder("<")) if arr.dtype.byteorder == ">" else arr


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


def _digest(layout: str, table: list[tuple[str, str, list[int], Any]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(layout.encode())
    for name, code, shape, data in sorted(table, key=lambda t: t[0]):
        h.update(_entry_json(name, code, shape).encode())
        h.update(data)
    return "blake2b-128:" + h.hexdigest()


def _entry_json(name: str, code: str, shape: list[int]) -> str:
    """``json.dumps([name, code, shape])``, formatted directly when no character needs escaping
    (the common case, and three times faster over 100,000 tensors)."""
    if name.isascii() and name.isprintable() and '"' not in name and "\\" not in name:
        return f'["{name}", "{code}", [{", ".join(map(str, shape))}]]'
    return json.dumps([name, code, shape])


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
        if not prefix and key == _RESERVED and not isinstance(value, Mapping):
            problems.append(
                f"{_RESERVED!r} is the name safetensors reserves for its header's metadata; "
                "rename this leaf or nest it one level deeper"
            )
        problems += _name_problems(value, (*prefix, key))
    return problems


def encode(path: str, flat: dict[Path, Any], tree: Mapping[str, Any] | Uninitialized) -> bytes:
    """The checkpoint's bytes for ``tree`` (already flattened to ``flat``), or WriteCheckpointError."""
    problems = _name_problems(tree) + [
        f"{_paths.join(p)!r} is a placeholder of dtype {leaf.dtype.name}, which safetensors "
        "cannot store; choose another dtype"
        for p, leaf in flat.items()
        if isinstance(leaf, Uninitialized)
        and leaf.dtype is not None
        and leaf.dtype.name not in _NAMES
    ]
    arrays = {
        p: a
        for p, leaf in flat.items()
        if not isinstance(leaf, Uninitialized) and (a := _host(p, leaf, problems)) is not None
    }
    if problems:
        raise WriteCheckpointError(
            f"Cannot save {path!r} ({len(problems)} problem(s)); nothing was written:\n  "
            + "\n  ".join(problems)
        )
    layout = json.dumps(_layout(tree), separators=(",", ":"))
    specs, table = {}, []
    for p, a in arrays.items():
        name, code = "/".join(p), _NAMES[a.dtype.name]
        specs[name] = safetensors.TensorSpec(
            dtype=a.dtype.name, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes
        )
        table.append((name, code, list(a.shape), a.reshape(-1).view(np.uint8)))
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "tree": layout,
        "checksum": _digest(layout, table),
    }
    return bytes(safetensors.serialize(specs, metadata=metadata))


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _lock(fd: int, *, wait: bool) -> bool:
    """Takes the exclusive lock that marks a temporary file as a live writer's."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _temporaries(path: str) -> list[str]:
    directory, name = os.path.split(os.path.abspath(path))
    return glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(name)}.*.tmp"))


def remove_stale(path: str) -> list[str]:
    """Deletes the temporaries of saves of ``path`` that were killed; returns them.

    A writer holds its temporary under an exclusive lock until it is renamed,
    and the lock dies with the process, so a temporary that can be locked has
    no live writer. Unless advisory locks are unavailable (then nothing is
    deleted), a live writer's file is never touched.
    """
    if fcntl is None:
        return []
    removed = []
    for tmp in _temporaries(path):
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # gone meanwhile, a symlink, unreadable: not ours to judge
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _lock(fd, wait=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)  # under the lock: no writer can hold this file now
                    removed.append(tmp)
        finally:
            os.close(fd)
    return removed


def _create_temporary(path: str) -> tuple[int, str]:
    """A new, locked temporary file beside ``path``, with the usual mode for the umask."""
    directory, name = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
        # Mode 0o666 and the process's umask apply, as for open(): the umask is never changed.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        _lock(fd, wait=True)
        if os.fstat(fd).st_nlink > 0:
            return fd, tmp
        os.close(fd)  # a cleaner judged it stale between creation and lock: take another name


def write_atomic(path: str, data: bytes, overwrite: bool) -> None:
    """Writes ``data`` to a locked temporary file beside ``path``, fsyncs it, renames it, fsyncs
    the directory; first deletes temporaries left by killed saves of ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale(path)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            if overwrite:
                os.replace(tmp, path)
            else:
                _link(tmp, path)  # fails rather than replace a file created meanwhile
    finally:  # the lock is released with the file, after the rename
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(directory)


def exists_error(path: str) -> OverwriteCheckpointError:
    return OverwriteCheckpointError(
        f"{path!r} already exists; li.save does not replace files unless asked. Pass "
        "overwrite=True to replace it (atomically), or choose another name."
    )


def _link(tmp: str, path: str) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise exists_error(path) from None
    except OSError:  # a filesystem without hard links: check, then rename
        if os.path.exists(path):
            raise exists_error(path) from None
        os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Reading.


class _Bad(Exception):
    """Internal: what is wrong with a file, before it becomes a ReadCheckpointError."""


_MAX_VERSION_DIGITS = 9
_MAX_DEPTH = _paths.MAX_DEPTH


@dataclasses.dataclass(frozen=True)
class Header:
    """What a checkpoint's header says, read without its tensor bytes.

    Attributes:
      entries: ``{path: Uninitialized or (dtype name, shape)}`` for every leaf.
      layout: the ``tree`` metadata (the nesting, in order).
      checksum: the digest the tensor bytes must match.
      spans: ``{tensor name: (safetensors dtype code, shape, start, stop)}``.
      data_offset, data_size: where the tensor bytes lie in the file.
    """

    entries: dict[Path, Any]
    layout: Any
    checksum: str
    spans: dict[str, tuple[str, tuple[int, ...], int, int]]
    data_offset: int
    data_size: int


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
        raise _Bad(f"it ended after {len(data)} of the {n} bytes of its {what} (truncated?)")
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
        raise _Bad(f"its header is not valid JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise _Bad("its header is not a JSON object")
    meta = header.pop(_RESERVED, None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _Bad("its metadata is not a mapping of strings")
    end, tensors, spans = 0, {}, {}
    for name, entry in header.items():
        try:
            code, shape, (start, stop) = entry["dtype"], entry["shape"], entry["data_offsets"]
            dtype = _DTYPES[code]
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
            raise _Bad(f"its entry for tensor {name!r} is malformed: {str(entry)[:100]}")
        spans[name] = (code, tuple(shape), start, stop)
        tensors[name] = (_CODES[code], tuple(shape))
    for start, stop, name in sorted((v[2], v[3], k) for k, v in spans.items()):
        if start != end:
            raise _Bad(f"tensor {name!r} does not start where the previous one ends")
        end = stop
    if end != size:
        raise _Bad(
            f"its header describes {end} bytes of tensor data but the file holds {size} after "
            "the header (truncated, or padded?)"
        )
    return meta, tensors, spans


def _entries(meta: dict[str, str], tensors: dict) -> tuple[Any, dict[Path, Any]]:
    """Checks lazyinit's metadata; returns (layout, {path: Uninitialized or (dtype, shape)})."""
    version = meta.get("format_version", "")
    if not (version.isascii() and version.isdigit() and len(version) <= _MAX_VERSION_DIGITS):
        raise _Bad(f"its format_version {version[:20]!r} is not a plausible integer")
    if int(version) > FORMAT_VERSION:
        raise ReadVersionError(
            f"format version {int(version)}: this lazyinit reads versions up to {FORMAT_VERSION}. "
            "Upgrade lazyinit to load it."
        )
    try:
        layout = json.loads(meta["tree"])
    except (KeyError, ValueError, RecursionError):
        raise _Bad("its 'tree' metadata is missing or not valid JSON") from None
    out: dict[Path, Any] = {}

    def walk(node: Any, prefix: Path) -> None:
        if not isinstance(node, dict):
            raise _Bad(f"its 'tree' metadata at {_paths.join(prefix)!r} is not an object")
        if len(prefix) >= _MAX_DEPTH:
            raise _Bad(
                f"its 'tree' metadata is nested deeper than {_MAX_DEPTH} levels, more than "
                "li.save writes"
            )
        for key, value in node.items():
            if not key or "/" in key:
                raise _Bad(f"its 'tree' metadata holds an illegal key {key!r}")
            path = (*prefix, key)
            if isinstance(value, dict):
                walk(value, path)
            elif value == ["array"]:
                if "/".join(path) not in tensors:
                    raise _Bad(f"{_paths.join(path)!r} is listed in 'tree' but has no tensor")
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
        raise _Bad(f"it holds tensors that its 'tree' metadata does not list: {extra}")
    return layout, out


def _placeholder(path: Path, value: Any) -> Uninitialized:
    try:
        kind, shape, dtype = value
        assert kind == "uninitialized"
        assert shape is None or (
            len(shape) <= 64
            and all(d is None or (type(d) is int and 0 < d < _MAX_DIM) for d in shape)
        )
        assert dtype is None or dtype in _NAMES
        return Uninitialized(shape, None if dtype is None else np.dtype(dtype))
    except (AssertionError, TypeError, ValueError, RecursionError):
        raise _Bad(f"its 'tree' metadata entry for {_paths.join(path)!r} is malformed") from None


def _sniff(path: str, first: bytes, why: str) -> ReadCheckpointError:
    if first[:1] == b"\x80" and first[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        what = "a Python pickle"
    elif first[:4] == b"PK\x03\x04":
        what = "a zip archive (torch.save's format, or .npz), which holds pickles"
    elif path.lower().endswith(PICKLE_SUFFIXES):
        what = "named like a pickle-based checkpoint"
    else:
        return ReadCheckpointError(
            f"{path!r} is not a valid lazyinit checkpoint: {why}. Nothing was loaded. If the "
            "save was interrupted, load the previous checkpoint; if the file is corrupt, "
            "restore it from a copy."
        )
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
            raise _Bad(f"it is {size} bytes long, shorter than a safetensors header")
        n = int.from_bytes(first, "little")
        if n < 2 or n > _MAX_HEADER or 8 + n > size:
            raise _Bad(
                f"its header length field says {n} bytes but the file has {size} (truncated?)"
            )
        meta, tensors, spans = _header(_read_exactly(f, n, "header"), size - 8 - n)
        if meta.get("format") != FORMAT:
            found = meta.get("format")
            raise _Bad(
                "it is a safetensors file without lazyinit metadata (read it with "
                "safetensors.numpy.load_file and pass the arrays to li.load_state)"
                if found is None
                else f"its format is {found[:40]!r}, not {FORMAT!r}"
            )
        layout, entries = _entries(meta, tensors)
    except RecursionError:
        raise _sniff(path, first, "its metadata is nested too deeply") from None
    except _Bad as e:
        raise _sniff(path, first, str(e)) from None
    except ReadVersionError as e:
        raise ReadVersionError(f"{path!r} has {e}") from None
    return Header(entries, layout, meta.get("checksum", ""), spans, 8 + n, size - 8 - n)


def read_header(path: str) -> Header:
    """Reads and validates only the header: the time does not grow with the tensors' size.

    The tensor bytes and their checksum are not read; :func:`read` checks them.

    Raises:
      ReadCheckpointError: the header is malformed, or the file is not a regular
        file or not a lazyinit checkpoint (and its subclasses).
      OSError: the file cannot be opened.
    """
    f, size = _open(path)
    with f:
        return _read_header(path, f, size)


def read(path: str) -> tuple[dict[Path, Any], Any, dict[str, np.ndarray]]:
    """Reads and verifies a checkpoint: ``({path: placeholder or (dtype, shape)}, layout, arrays)``.

    The header is read first; then exactly the tensor bytes it describes.

    Raises:
      ReadCheckpointError: anything wrong with the bytes (and its subclasses).
      OSError: the file cannot be opened.
    """
    f, size = _open(path)
    with f:
        header = _read_header(path, f, size)
        try:
            data = _read_exactly(f, header.data_size, "tensor data")
        except _Bad as e:
            raise _sniff(path, b"", str(e)) from None
    return header.entries, header.layout, _decode(path, data, header)


def _decode(path: str, data: bytes, header: Header) -> dict[str, np.ndarray]:
    """The arrays, by name, as read-only views of ``data``, checked against the checksum."""
    table, arrays, bad = [], {}, []
    view = memoryview(data)
    for name, (code, shape, start, stop) in header.spans.items():
        dtype = _DTYPES[code]
        table.append((name, code, list(shape), view[start:stop]))
        if stop == start:
            arrays[name] = np.zeros(shape, dtype)
            continue
        arrays[name] = np.ndarray(shape, dtype, buffer=data, offset=start)  # read-only view
        if code == "BOOL" and arrays[name].view(np.uint8).max() > 1:
            bad.append(name)
    if header.checksum != _digest(json.dumps(header.layout, separators=(",", ":")), table):
        raise ReadCheckpointError(
            f"{path!r} is not a valid lazyinit checkpoint: its checksum does not match its "
            "contents (the file is corrupt). Nothing was loaded; restore it from a copy."
        )
    if bad:
        raise ReadCheckpointError(
            f"{path!r} is not a valid lazyinit checkpoint: boolean tensor(s) {bad[:3]} hold "
            "bytes other than 0 and 1, which li.save never writes (a crafted file?). Nothing "
            "was loaded."
        )
    return arrays
