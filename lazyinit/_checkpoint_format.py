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

Writing is atomic: the bytes go to a unique temporary file in the target's
directory, which is fsynced, then renamed over the target (``os.replace``)
and the directory fsynced. A process killed at any point leaves either the
previous file or the new one, never a mix; a leftover ``.<name>.*.tmp`` is
simply never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import safetensors

from . import _paths
from ._errors import (
    OverwriteCheckpointError,
    ReadCheckpointError,
    ReadPickleError,
    ReadVersionError,
    WriteCheckpointError,
)
from ._spec import Uninitialized
from ._typing import Path

__all__ = ["FORMAT", "FORMAT_VERSION", "encode", "write_atomic", "read"]

FORMAT = "lazyinit.checkpoint"
FORMAT_VERSION = 1
"""The version this library writes and the newest it reads."""

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib")
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header
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


# ---------------------------------------------------------------------------
# Writing.


def _host(path: Path, leaf: Any, problems: list[str]) -> np.ndarray | None:
    """A leaf's values as a contiguous little-endian numpy array, or None with a problem noted."""
    where = _paths.join(path)
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
        h.update(json.dumps([name, code, shape]).encode())
        h.update(data)
    return "blake2b-128:" + h.hexdigest()


def encode(path: str, flat: dict[Path, Any], tree: Mapping[str, Any] | Uninitialized) -> bytes:
    """The checkpoint's bytes for ``tree`` (already flattened to ``flat``), or WriteCheckpointError."""
    problems = [
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


def write_atomic(path: str, data: bytes, overwrite: bool) -> None:
    """Writes ``data`` to a temporary file beside ``path``, fsyncs it, renames it, fsyncs the dir."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            mask = os.umask(0o022)  # mkstemp makes the file private; give it the usual mode
            os.umask(mask)
            os.fchmod(f.fileno(), 0o666 & ~mask)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link(tmp, path)  # fails rather than replace a file created meanwhile
    finally:
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


def _header(raw: bytes) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...]]]]:
    """Validates the safetensors framing; returns (metadata, {name: (dtype, shape)})."""
    if len(raw) < 8:
        raise _Bad(f"it is {len(raw)} bytes long, shorter than a safetensors header")
    n = int.from_bytes(raw[:8], "little")
    if n < 2 or n > _MAX_HEADER or 8 + n > len(raw):
        raise _Bad(
            f"its header length field says {n} bytes but the file has {len(raw)} (truncated?)"
        )
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _Bad(f"its header is not valid JSON ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise _Bad("its header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _Bad("its metadata is not a mapping of strings")
    size, end, tensors = len(raw) - 8 - n, 0, {}
    spans = []
    for name, entry in header.items():
        try:
            code, shape, (start, stop) = entry["dtype"], entry["shape"], entry["data_offsets"]
            dtype = np.dtype(_CODES[code])
            ok = all(type(d) is int and d >= 0 for d in shape) and type(start) is type(stop) is int
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok or len(shape) > 64 or stop - start != math.prod(shape) * dtype.itemsize:
            raise _Bad(f"its entry for tensor {name!r} is malformed: {str(entry)[:100]}")
        spans.append((start, stop, name))
        tensors[name] = (dtype.name, tuple(shape))
    for start, stop, name in sorted(spans):
        if start != end:
            raise _Bad(f"tensor {name!r} does not start where the previous one ends")
        end = stop
    if end != size:
        raise _Bad(
            f"the header describes {end} bytes of data but the file holds {size} (truncated?)"
        )
    return meta, tensors


def _entries(meta: dict[str, str], tensors: dict) -> tuple[Any, dict[Path, Any]]:
    """Checks lazyinit's metadata; returns (layout, {path: Uninitialized or (dtype, shape)})."""
    version = meta.get("format_version", "")
    if not (version.isascii() and version.isdigit()):
        raise _Bad(f"its format_version {version[:20]!r} is not an integer")
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
        assert shape is None or all(d is None or (type(d) is int and d > 0) for d in shape)
        assert dtype is None or dtype in _NAMES
        return Uninitialized(shape, None if dtype is None else np.dtype(dtype))
    except (AssertionError, TypeError, ValueError, RecursionError):
        raise _Bad(f"its 'tree' metadata entry for {_paths.join(path)!r} is malformed") from None


def _sniff(path: str, raw: bytes, why: str) -> ReadCheckpointError:
    if raw[:1] == b"\x80" and raw[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        what = "a Python pickle"
    elif raw[:4] == b"PK\x03\x04":
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


def read(path: str) -> tuple[dict[Path, Any], dict[str, Any], dict[str, np.ndarray]]:
    """Reads and verifies a checkpoint: ``({path: placeholder or (dtype, shape)}, layout, arrays)``.

    Raises:
      ReadCheckpointError: anything wrong with the bytes (and its subclasses).
      OSError: the file cannot be opened.
    """
    entries, layout, checksum, raw = _read(path)
    return entries, layout, _decode(path, raw, layout, checksum)


def _read(path: str) -> tuple[dict[Path, Any], Any, str, bytes]:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        meta, tensors = _header(raw)
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
        raise _sniff(path, raw, "its metadata is nested too deeply") from None
    except _Bad as e:
        raise _sniff(path, raw, str(e)) from None
    except ReadVersionError as e:
        raise ReadVersionError(f"{path!r} has {e}") from None
    return entries, layout, meta.get("checksum", ""), raw


def _decode(path: str, raw: bytes, layout: Any, checksum: str) -> dict[str, np.ndarray]:
    """The arrays, by name, decoded by safetensors and checked against the file's checksum."""
    try:
        views = safetensors.deserialize(raw)
    except BaseException as e:  # the Rust decoder may panic (PanicException is a BaseException)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise ReadCheckpointError(f"{path!r} could not be decoded by safetensors: {e}") from None
    table, arrays = [], {}
    for name, view in views:
        table.append((name, view["dtype"], list(view["shape"]), view["data"]))
        dtype = np.dtype(_CODES.get(view["dtype"], "uint8"))
        arrays[name] = np.frombuffer(view["data"], dtype).reshape(view["shape"])
    if checksum != _digest(json.dumps(layout, separators=(",", ":")), table):
        raise ReadCheckpointError(
            f"{path!r} is not a valid lazyinit checkpoint: its checksum does not match its "
            "contents (the file is corrupt). Nothing was loaded; restore it from a copy."
        )
    return arrays
