"""Fuzzing li.load: random bytes, every truncation and every bit flip of a valid file.

Whatever the bytes, li.load either returns exactly what was saved or raises
li.ReadCheckpointError (ReadPickleError and ReadVersionError are subclasses):
never another exception, a crash, a hang or a wrong tree.
"""

import json
import os
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lazyinit as li

TREE = {
    "layer": {"kernel": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "bias": jnp.ones(3)},
    "lazy": li.Uninitialized((None, 3), "bfloat16"),
    "step": jnp.asarray(4, jnp.int32),
}


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "valid.safetensors"
    li.save(path, TREE)
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
    except li.ReadCheckpointError as e:
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
        st.sampled_from(["format", "format_version", "tree", "checksum"]), st.text(max_size=30)
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
    except li.ReadCheckpointError:
        return
    assert (
        np.asarray(tree["layer"]["kernel"]).tobytes()
        == np.asarray(TREE["layer"]["kernel"]).tobytes()
    )
