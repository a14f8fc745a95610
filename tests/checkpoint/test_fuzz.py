"""Fuzzing li.load: random bytes, every truncation and every bit flip of a valid file.

Whatever the bytes, li.load either returns exactly what was saved or raises
li.errors.ReadCheckpointError (ReadPickleError and ReadVersionError are subclasses):
never another exception, a crash, a hang or a wrong tree. Every test that starts from a
valid file runs on one of each format version (1: one checksum over the file; 2: digests
per chunk, what li.save writes).
"""

import json
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from crafted import resealed, save_v1
from hypothesis import given
from hypothesis import strategies as st

import lazyinit as li
from lazyinit.checkpoint import _format

TREE = {
    "layer": {"kernel": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "bias": jnp.ones(3)},
    "lazy": li.Uninitialized((None, 3), "bfloat16"),
    "step": jnp.asarray(4, jnp.int32),
}


@pytest.fixture(scope="module", params=[1, 2], ids=["version1", "version2"])
def valid(tmp_path_factory, request):
    """A valid file of each format version: version 1 files must keep every guarantee too."""
    path = tmp_path_factory.mktemp("fuzz") / "valid.safetensors"
    (save_v1 if request.param == 1 else li.save)(path, TREE)
    return path.read_bytes()


class Target:
    """One file rewritten in place for each mutant (truncating-opens are slow on some disks)."""

    def __init__(self, path):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def write_bytes(self, data):
        os.pwrite(self.fd, data, 0)
        os.ftruncate(self.fd, len(data))

    def __str__(self):
        return str(self.path)

    def __fspath__(self):
        return os.fspath(self.path)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    t = Target(tmp_path_factory.mktemp("fuzz") / "mutant.safetensors")
    yield t
    os.close(t.fd)


def outcome(target, data, like=None):
    """'ok' if the bytes load as exactly TREE, 'format' for ReadCheckpointError; anything else raises."""
    target.write_bytes(data)
    try:
        tree, _ = li.load(target, like=like)
    except li.errors.ReadCheckpointError as e:
        assert str(target) in str(e)
        return "format"
    assert isinstance(tree["lazy"], li.Uninitialized) and tree["lazy"] == TREE["lazy"]
    for a, b in ((tree["layer"]["kernel"], TREE["layer"]["kernel"]), (tree["step"], TREE["step"])):
        assert a.dtype == b.dtype and np.asarray(a).tobytes() == np.asarray(b).tobytes()
    return "ok"


@given(st.binary(max_size=512))
def test_random_bytes_are_only_ever_a_format_error(target, data):
    assert outcome(target, data) == "format"


@given(st.binary(max_size=256))
def test_random_bytes_behind_a_plausible_header_length(target, data):
    assert outcome(target, struct.pack("<Q", len(data)) + data) == "format"


@given(st.text(max_size=200))
def test_random_json_headers_are_only_ever_a_format_error(target, text):
    header = text.encode()
    assert outcome(target, struct.pack("<Q", len(header)) + header) == "format"


@given(
    metadata=st.dictionaries(
        st.sampled_from(["format", "format_version", "tree", "checksum", "chunk", "digests"]),
        st.text(max_size=30),
    )
)
def test_random_metadata_is_only_ever_a_format_error(target, valid, metadata):
    n = struct.unpack("<Q", valid[:8])[0]
    header = json.loads(valid[8 : 8 + n])
    header["__metadata__"] = {**header["__metadata__"], **metadata}
    raw = json.dumps(header).encode()
    assert outcome(target, struct.pack("<Q", len(raw)) + raw + valid[8 + n :]) in ("ok", "format")


def test_every_truncation_is_a_format_error(target, valid):
    results = {n: outcome(target, valid[:n]) for n in range(len(valid))}
    assert set(results.values()) == {"format"}
    assert outcome(target, valid) == "ok"


def test_every_single_bit_flip_is_a_format_error_or_harmless(target, valid):
    results = []
    for i in range(len(valid)):
        for bit in range(8):
            mutant = bytearray(valid)
            mutant[i] ^= 1 << bit
            results.append(outcome(target, bytes(mutant)))
    assert results.count("format") > 0.95 * len(results)


@given(st.data())
def test_random_byte_overwrites_with_a_template(target, valid, data):
    mutant = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4))):
        mutant[data.draw(st.integers(0, len(valid) - 1))] = data.draw(st.integers(0, 255))
    like = li.lazy_state(li.Linear(3))
    like = {"layer": like, "lazy": li.Uninitialized((2, 3)), "step": jnp.zeros((), jnp.int32)}
    target.write_bytes(bytes(mutant))
    try:
        tree, _ = li.load(target, like=like)
    except li.errors.ReadCheckpointError:
        return
    assert (
        np.asarray(tree["layer"]["kernel"]).tobytes()
        == np.asarray(TREE["layer"]["kernel"]).tobytes()
    )


# -- crafted files (issue 13): the checksum is no secret, so the structural checks must hold ---


def _craft(valid, edit):
    """``valid`` with its header edited by ``edit(header)`` and its digests recomputed to match."""
    return resealed(valid, edit)


def crafted_outcome(target, data):
    """'ok' (any tree) or 'format'; any other exception fails the test."""
    target.write_bytes(data)
    try:
        li.load(target)
        li.check_checkpoint(target, li.Uninitialized())
    except li.errors.ReadCheckpointError as e:
        assert str(target) in str(e)
        return "format"
    return "ok"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(node=JSON, where=st.sampled_from(["layer", "lazy", "step", "root", "deep"]))
def test_crafted_tree_metadata_is_only_ever_a_format_error(target, valid, node, where):
    def edit(header):
        tree = json.loads(header["__metadata__"]["tree"])
        if where == "root":
            tree = node
        elif where == "deep":
            for _ in range(150):
                tree = {"a": tree}
        else:
            tree[where] = node
        header["__metadata__"]["tree"] = json.dumps(tree)

    assert crafted_outcome(target, _craft(valid, edit)) in ("ok", "format")


NUMBERS = (
    st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, -1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64])
    | st.floats(allow_nan=False)
    | st.just(None)
)


@given(
    name=st.sampled_from(["layer/kernel", "layer/bias", "step"]),
    field=st.sampled_from(["shape", "data_offsets"]),
    index=st.integers(0, 2),
    value=NUMBERS,
)
def test_crafted_numeric_header_fields_are_only_ever_a_format_error(
    target, valid, name, field, index, value
):
    def edit(header):
        numbers = header[name][field]
        if index < len(numbers):
            numbers[index] = value
        else:
            numbers.append(value)

    assert crafted_outcome(target, _craft(valid, edit)) in ("ok", "format")


@given(length=NUMBERS.filter(lambda v: isinstance(v, int) and 0 <= v < 2**64))
def test_any_header_length_field_is_a_format_error_or_the_real_one(target, valid, length):
    n = struct.unpack("<Q", valid[:8])[0]
    expected = "ok" if length == n else "format"
    assert crafted_outcome(target, struct.pack("<Q", length) + valid[8:]) == expected


@given(
    chunk=st.integers(-5, 2**31).map(str) | st.text(max_size=8),
    digests=st.none() | st.text(alphabet="0123456789abcdefABCDEF", max_size=70),
)
def test_crafted_chunk_sizes_and_digests_are_only_ever_a_format_error(
    target, valid, chunk, digests
):
    def edit(header):
        header["__metadata__"]["chunk"] = chunk
        header["__metadata__"]["format_version"] = "2"

    data = _craft(valid, edit)
    if digests is not None:  # and then digests of any length, the checksum sealed over them
        data = resealed(data, lambda h: h["__metadata__"].update(digests=digests))
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8 : 8 + n])
        header["__metadata__"]["digests"] = digests
        spans = {
            k: (e["dtype"], tuple(e["shape"]), *e["data_offsets"])
            for k, e in header.items()
            if k != "__metadata__"
        }
        header["__metadata__"]["checksum"] = _format.header_checksum(header["__metadata__"], spans)
        raw = json.dumps(header).encode()
        data = struct.pack("<Q", len(raw)) + raw + data[8 + n :]
    assert crafted_outcome(target, data) in ("ok", "format")
