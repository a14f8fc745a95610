"""Files written by hand: version 1 checkpoints, and edited headers resealed with valid digests.

The digests are no secret, so a crafted file can carry valid ones: the structural checks must
hold on their own. ``save_v1`` writes what ``li.save`` wrote before format version 2 (one
checksum over the tree, the tensor table and every byte), to test that such files still load.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import safetensors

from lazyinit import _paths
from lazyinit._spec import Uninitialized
from lazyinit.checkpoint import _format, _write


def header_of(raw: bytes) -> tuple[int, dict]:
    n = struct.unpack("<Q", raw[:8])[0]
    return n, json.loads(raw[8 : 8 + n])


def with_header(raw: bytes, header: dict, data: bytes | None = None) -> bytes:
    n = struct.unpack("<Q", raw[:8])[0]
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + (raw[8 + n :] if data is None else data)


def seal(header: dict, data: bytes) -> None:
    """Recomputes ``header``'s digests in place to match ``data``, as its version has them."""
    meta = header.get("__metadata__", {})
    tensors = {k: e for k, e in header.items() if k != "__metadata__"}
    if meta.get("format_version") == "1":
        layout = json.dumps(json.loads(meta["tree"]), separators=(",", ":"))
        table = [
            (k, e["dtype"], e["shape"], data[e["data_offsets"][0] : e["data_offsets"][1]])
            for k, e in tensors.items()
        ]
        meta["checksum"] = _format.digest_v1(layout, table)
        return
    chunk = int(meta.get("chunk", _format.CHUNK))
    meta["digests"] = "".join(
        _format.chunk_digest(data[i : i + chunk]).hex() for i in range(0, len(data), chunk)
    )
    spans = {k: (e["dtype"], tuple(e["shape"]), *e["data_offsets"]) for k, e in tensors.items()}
    meta["checksum"] = _format.header_checksum(meta, spans)


def resealed(raw: bytes, edit=lambda header: None, data: bytes | None = None) -> bytes:
    """``raw`` with its header edited by ``edit(header)`` (and its data replaced by ``data``),
    the digests recomputed when the edit leaves them computable."""
    n, header = header_of(raw)
    data = raw[8 + n :] if data is None else data
    edit(header)
    try:
        seal(header, data)
    except Exception:  # whatever made the header unsealable is what the loader must report
        pass
    return with_header(raw, header, data)


def save_v1(path, tree) -> None:
    """Writes ``tree`` as li.save did before format version 2."""
    flat = _paths.flatten_state(tree, "tree")
    arrays = {
        "/".join(p): np.asarray(leaf, order="C")  # not ascontiguousarray: it makes scalars 1-d
        for p, leaf in flat.items()
        if not isinstance(leaf, Uninitialized)
    }
    layout = json.dumps(_write._layout(tree), separators=(",", ":"))
    specs, table = {}, []
    for name, a in arrays.items():
        specs[name] = safetensors.TensorSpec(
            dtype=a.dtype.name, shape=list(a.shape), data_ptr=a.ctypes.data, data_len=a.nbytes
        )
        table.append(
            (name, _format.NAMES[a.dtype.name], list(a.shape), a.reshape(-1).view(np.uint8))
        )
    metadata = {
        "format": _format.FORMAT,
        "format_version": "1",
        "tree": layout,
        "checksum": _format.digest_v1(layout, table),
    }
    with open(path, "wb") as f:
        f.write(bytes(safetensors.serialize(specs, metadata=metadata)))
