"""``save`` and ``load``: one portable, safe file per parameter tree, built on safetensors.

A checkpoint is a `safetensors <https://github.com/huggingface/safetensors>`_
file: an 8-byte header length, a JSON header, then raw little-endian tensor
bytes. Any safetensors reader in any language opens it and sees each array
under its ``/``-joined path (``fc1/kernel``). lazyinit adds, in the header's
text metadata:

* ``format`` = ``lazyinit.checkpoint`` and ``format_version`` (an integer; a
  newer one than this library reads is a :class:`ReadVersionError`);
* ``tree``: the nesting, in order, empty sub-dicts included, and every
  :class:`~lazyinit.Uninitialized` placeholder with its known dimensions and
  dtype (placeholders have no bytes, so they live only here);
* ``checksum``: a BLAKE2b digest of the tree, the tensor table and every
  tensor's bytes, so a flipped bit or a torn write never loads as a valid but
  wrong checkpoint.

Loading never unpickles and never runs code from the file: the header is
JSON and the data are raw bytes. Pickle-based files (PyTorch's ``.pt``,
``.pkl``, ``.ckpt``) are refused with :class:`ReadPickleError`.

Saving is atomic: the bytes go to a unique temporary file in the target's
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
    StateMismatchError,
    WriteCheckpointError,
)
from ._spec import Uninitialized
from ._state import Report, _report, describe_mismatch, is_leaf
from ._typing import Params, Path

__all__ = ["save", "load", "FORMAT", "FORMAT_VERSION"]

FORMAT = "lazyinit.checkpoint"
FORMAT_VERSION = 1
"""The version this library writes and the newest it reads."""

_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib")
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
# Saving.


def _host(path: Path, leaf: Any, problems: list[str]) -> np.ndarray | None:
    """A leaf's values as a contiguous little-endian numpy array, or None with a problem noted."""
    where = _paths.join(path)
    if isinstance(leaf, jax.ShapeDtypeStruct):
        problems.append(
            f"{where!r} is abstract ({leaf.shape}, {leaf.dtype}): it has no values to save. "
            "Materialize it with li.dry_run(model, key, concrete_sample) first."
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


def _layout(tree: Mapping[str, Any]) -> dict[str, Any]:
    """The ``tree`` metadata: nesting in order; ``["array"]`` or ``["uninitialized", shape, dtype]``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out[key] = _layout(value)
        elif isinstance(value, Uninitialized):
            dtype = None if value.dtype is None else value.dtype.name
            out[key] = ["uninitialized", None if value.shape is None else list(value.shape), dtype]
        else:
            out[key] = ["array"]
    return out


def _digest(layout: str, table: list[tuple[str, str, list[int], Any]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(layout.encode())
    for name, code, shape, data in sorted(table, key=lambda t: t[0]):
        h.update(json.dumps([name, code, shape]).encode())
        h.update(data)
    return "blake2b-128:" + h.hexdigest()


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


def save(path: str | os.PathLike[str], tree: Params, *, overwrite: bool = False) -> None:
    """Saves a parameter tree, a lazy state or any nested dict of arrays to one file, atomically.

    Leaves may be arrays (``jax.Array``, numpy) of any dtype safetensors
    stores (floats incl. bfloat16 and float8, ints, bool, complex64), of any
    shape including scalars and zero-size ones, and
    :class:`~lazyinit.Uninitialized` placeholders, whose known dimensions
    and dtype are kept (their device is not: it belongs to the machine).

    Args:
      path: the file to write, conventionally ``*.safetensors``.
      tree: a nested dict with string keys.
      overwrite: replace ``path`` if it exists. Either way, the replacement is
        atomic: readers see the old file or the new one, never a mix.

    Raises:
      OverwriteCheckpointError: ``path`` exists and ``overwrite`` is false.
      WriteCheckpointError: a leaf cannot be saved (abstract, unsupported
        dtype), listing every one; nothing is written.
      DeletedParamError: a leaf was deleted or donated to a jit-compiled call.
      InvalidTreeError: a leaf is not an array or a key is not a plain string.

    >>> import jax, jax.numpy as jnp, lazyinit as li, tempfile, os
    >>> model = li.Linear(4)
    >>> params = li.dry_run(model, jax.random.key(0), jnp.ones((2, 3)))
    >>> path = os.path.join(tempfile.mkdtemp(), "linear.safetensors")
    >>> li.save(path, params)
    >>> jax.tree.map(jnp.shape, li.load(path, like=li.lazy_state(model)))
    {'bias': (4,), 'kernel': (3, 4)}
    """
    path = os.fspath(path)
    if path.lower().endswith(_PICKLE_SUFFIXES):
        raise WriteCheckpointError(
            f"Refusing to write {path!r}: its suffix says pickle, which li.save does not write. "
            "Name it *.safetensors."
        )
    flat = _paths.flatten(tree, is_leaf, what="tree to save")
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
    data = safetensors.serialize(specs, metadata=metadata)
    del arrays, table  # the serialized bytes hold everything now
    if os.path.exists(path) and not overwrite:
        raise _exists(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        mask = os.umask(0o022)  # mkstemp makes the file private; give it the usual mode
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)
        with os.fdopen(fd, "wb") as f:
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


def _exists(path: str) -> OverwriteCheckpointError:
    return OverwriteCheckpointError(
        f"{path!r} already exists; li.save does not replace files unless asked. Pass "
        "overwrite=True to replace it (atomically), or choose another name."
    )


def _link(tmp: str, path: str) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError:  # a filesystem without hard links: check, then rename
        if os.path.exists(path):
            raise _exists(path) from None
        os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Reading and checking a file.


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
    elif path.lower().endswith(_PICKLE_SUFFIXES):
        what = "named like a pickle-based checkpoint"
    else:
        return ReadCheckpointError(
            f"{path!r} is not a valid lazyinit checkpoint: {why}. Nothing was loaded. If the "
            "save was interrupted, load the previous checkpoint; if the file is corrupt, "
            "restore it from a copy."
        )
    return ReadPickleError(
        f"{path!r} is {what}. lazyinit never unpickles: loading a pickle can run arbitrary "
        "code. Convert it once, in a trusted environment, to a safetensors file (for PyTorch "
        "weights: lazyinit.interop.torch, or torch.load(..., weights_only=True) then "
        "safetensors.torch.save_file), and load that with li.load."
    )


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


# ---------------------------------------------------------------------------
# Loading against a template.


def _found(entry: Any) -> Any:
    return entry if isinstance(entry, Uninitialized) else jax.ShapeDtypeStruct(entry[1], entry[0])


def _merge_placeholders(path: Path, want: Uninitialized, got: Uninitialized) -> Any:
    """Two placeholders for one path: the union of what each knows, or None if they disagree."""
    if want.shape is None or got.shape is None:
        shape = want.shape if got.shape is None else got.shape
    elif len(want.shape) != len(got.shape) or any(
        a is not None and b is not None and a != b for a, b in zip(want.shape, got.shape)
    ):
        return None
    else:
        shape = tuple(a if a is not None else b for a, b in zip(want.shape, got.shape))
    return Uninitialized(shape, want.dtype or got.dtype, want.device)


def _check(
    path: Path, want: Any, got: Any, cast: bool, problems: list[str], casts: list[Path]
) -> Any:
    """What ``path`` becomes: the placeholder to return, the dtype to read in, or None (a problem)."""
    where = _paths.join(path)
    if isinstance(got, Uninitialized):
        if isinstance(want, Uninitialized):
            merged = _merge_placeholders(path, want, got)
            if merged is None:
                problems.append(describe_mismatch(path, got, want, "saved placeholder", "expected"))
            return merged
        problems.append(
            f"{where!r} was saved as a placeholder {got!r} with no value, but the template "
            "wants an array. Dry-run the model with this state to initialize it, or load it "
            "into a lazy state."
        )
        return None
    dtype, shape = got
    if isinstance(want, Uninitialized):
        if not want.matches(shape):
            problems.append(describe_mismatch(path, _found(got), want, "saved", "expected"))
            return None
        want_dtype = want.dtype
    else:
        if tuple(want.shape) != shape:
            problems.append(describe_mismatch(path, _found(got), want, "saved", "expected"))
            return None
        want_dtype = np.dtype(want.dtype)
    if want_dtype is not None and np.dtype(want_dtype) != np.dtype(dtype):
        if not cast:
            problems.append(
                f"dtype mismatch for {where!r}: saved {dtype}, expected {np.dtype(want_dtype).name} "
                "(pass cast=True to convert it)"
            )
            return None
        casts.append(path)
        dtype = np.dtype(want_dtype).name
    if np.dtype(dtype).itemsize == 8 and np.dtype(dtype).kind in "fiuc":
        if not jax.config.jax_enable_x64:
            problems.append(
                f"{where!r} is {dtype} but 64-bit types are off: run "
                "jax.config.update('jax_enable_x64', True), or load with a 32-bit template "
                "and cast=True"
            )
            return None
    return np.dtype(dtype)


def _placement(want: Any) -> Any:
    if isinstance(want, Uninitialized):
        from ._materialize import placement

        return placement(want.device)
    if isinstance(want, (jax.Array, jax.ShapeDtypeStruct)):
        return getattr(want, "sharding", None)
    return None


def load(
    path: str | os.PathLike[str],
    like: Params | None = None,
    *,
    strict: bool = True,
    cast: bool = False,
) -> Params | tuple[Params, Report]:
    """Loads a file written by :func:`save`, checked against ``like``, all or nothing.

    Args:
      path: the file. It is read as data only: never unpickled, never executed.
      like: the tree to restore against: arrays, ``jax.ShapeDtypeStruct``s
        (e.g. from an abstract ``li.dry_run``) or a lazy state from
        :func:`lazyinit.lazy_state` (placeholders match any size in their
        unknown dimensions). Every path, shape and dtype of the file is checked
        against it before any array is built, and every problem is reported at
        once. Arrays land on the template's sharding or device. Without
        ``like``, the tree comes back as it was saved.
      strict: paths of ``like`` missing from the file, and paths of the file
        missing from ``like``, are errors. With ``strict=False`` the template's
        leaf stays where the file has none, extra entries are ignored, and a
        report says so.
      cast: convert saved dtypes to the template's instead of refusing.

    Returns:
      A new nested dict shaped like ``like`` (or as saved): ``jax.Array``
      leaves, and :class:`~lazyinit.Uninitialized` for placeholders, which
      ``li.dry_run(model, key, x, state=tree)`` initializes while keeping every
      loaded array bit for bit. With ``strict=False`` or ``cast=True``,
      ``(tree, report)``: a :class:`~lazyinit.Report` of what was loaded,
      missing, unexpected and cast.

    Raises:
      ReadCheckpointError: the file is truncated, corrupt or not a lazyinit
        checkpoint (:class:`ReadPickleError` for pickle-based files,
        :class:`ReadVersionError` for a newer format version).
      StateMismatchError: the file does not fit ``like``; lists every path.
      InvalidTreeError: ``like`` holds something other than arrays,
        ``ShapeDtypeStruct``s and placeholders.
      OSError: the file cannot be opened.
    """
    path = os.fspath(path)
    want = _paths.flatten(like, is_leaf, what="like tree") if like is not None else None
    entries, layout, checksum, raw = _read(path)
    arrays = _decode(path, raw, layout, checksum)  # a corrupt file is reported as such first
    del raw
    problems: list[str] = []
    plan: dict[Path, Any] = {}
    missing, unexpected, casts = [], [], []
    if want is None:
        for p, e in entries.items():
            as_saved = e if isinstance(e, Uninitialized) else Uninitialized(e[1], e[0])
            plan[p] = _check(p, as_saved, e, False, problems, casts)
    else:
        for p, w in want.items():
            if p not in entries:
                missing.append(p)
                continue
            plan[p] = _check(p, w, entries[p], cast, problems, casts)
        unexpected = [p for p in entries if p not in want]
        if strict:
            problems += [
                f"missing key {_paths.join(p)!r}{_paths.near_miss(p, list(entries))}"
                for p in missing
            ]
            problems += [
                f"unexpected key {_paths.join(p)!r}{_paths.near_miss(p, list(want))}"
                for p in unexpected
            ]
    if problems:
        raise StateMismatchError(
            f"Cannot load {path!r} ({len(problems)} problem(s)); nothing was loaded:\n  "
            + "\n  ".join(problems)
            + "\nLoad a checkpoint made for this model and input size"
            + ("." if not strict else ", or pass strict=False to load what fits and get a report."),
            tuple(problems),
        )
    out: dict[Path, Any] = {}
    for p, how in plan.items():
        if isinstance(how, Uninitialized):
            out[p] = how
            continue
        host = arrays["/".join(p)].astype(how, copy=False)
        out[p] = jax.device_put(host, _placement(want[p]) if want is not None else None)
    if want is None:
        tree = _unflatten_layout(layout, out)
    else:
        tree = _paths.unflatten({p: out.get(p, w) for p, w in want.items()}, _paths.subtrees(like))
    if strict and not cast:
        return tree
    return tree, _report(
        loaded=[p for p in plan if not isinstance(plan[p], Uninitialized)],
        missing=missing,
        unexpected=unexpected,
        cast=casts,
    )


def _unflatten_layout(layout: dict[str, Any], flat: dict[Path, Any], prefix: Path = ()) -> Params:
    return {
        k: _unflatten_layout(v, flat, (*prefix, k)) if isinstance(v, dict) else flat[(*prefix, k)]
        for k, v in layout.items()
    }
