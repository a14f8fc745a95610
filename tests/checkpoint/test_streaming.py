"""Format version 2 (issue 20): saves write the arrays as they are, loads read only the chunks
they need and check each one, version 1 files still load, check_checkpoint tells the memory."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from crafted import save_v1

import lazyinit as li
from lazyinit.checkpoint import _format, _read, _write

MiB = 1 << 20
BIG = {  # 3 MiB of float32, then a small tensor: several chunks, boundaries inside tensors
    "a": np.arange(3 * MiB // 4, dtype=np.float32).reshape(768, 1024),
    "b": np.arange(10, dtype=np.float32),
}


@pytest.fixture
def big(tmp_path):
    path = tmp_path / "big.safetensors"
    li.save(path, BIG)
    return path


def reads_of(monkeypatch):
    reads = []
    real = _read.pread_into
    monkeypatch.setattr(
        _read, "pread_into", lambda fd, o, out: reads.append((o, len(out))) or real(fd, o, out)
    )
    return reads


def test_a_range_reads_only_the_chunks_that_hold_it(big, monkeypatch):
    reads = reads_of(monkeypatch)
    with _format.opened(str(big)) as (fd, header):
        data = _read.Data(str(big), fd, header)
        out = np.empty(1000, np.uint8)
        data.read_into(MiB + 10, out)  # inside the second chunk
        assert reads == [(header.data_offset + MiB, MiB)]  # that chunk, whole, and no other
        assert out.tobytes() == BIG["a"].tobytes()[MiB + 10 : MiB + 1010]
        data.read_into(MiB + 2000, np.empty(10, np.uint8))
        assert len(reads) == 1  # a chunk read in part is kept for the next range in it


def test_a_corrupt_chunk_fails_only_the_reads_that_need_it(big):
    with open(big, "r+b") as f:  # flip a byte in the third chunk of the data
        with _format.opened(str(big)) as (_, header):
            f.seek(header.data_offset + 2 * MiB + 5)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 1]))
    with _format.opened(str(big)) as (fd, header):
        data = _read.Data(str(big), fd, header)
        data.read_into(0, np.empty(2 * MiB, np.uint8))  # the first two chunks are sound
        with pytest.raises(
            li.errors.ReadCheckpointError,
            match=r"checksum does not match its contents \(the file is corrupt\): bytes 2097152 "
            r"to 3145728 of its tensor data\. Nothing was loaded; restore it from a copy",
        ):
            data.read_into(2 * MiB, np.empty(100, np.uint8))
    with pytest.raises(li.errors.ReadCheckpointError, match="checksum does not match"):
        li.load(big)


def test_a_changed_header_fails_its_own_checksum_before_any_tensor_is_read(big, monkeypatch):
    raw = bytearray(big.read_bytes())
    at = raw.index(b'"digests":"') + len(b'"digests":"')
    raw[at] = ord("0") if raw[at] != ord("0") else ord("1")  # one digest, one hex digit
    big.write_bytes(bytes(raw))
    reads = reads_of(monkeypatch)
    with pytest.raises(
        li.errors.ReadCheckpointError, match=r"checksum does not match its contents.*\(its header\)"
    ):
        li.check_checkpoint(big, li.Uninitialized())  # from the header alone
    assert reads == []


def test_a_version_1_file_loads_read_whole_and_checked(tmp_path, monkeypatch):
    path = tmp_path / "v1.safetensors"
    tree = {"a": BIG["b"], "lazy": li.Uninitialized((None, 2)), "m": np.array([True, False])}
    save_v1(path, tree)
    reads = reads_of(monkeypatch)
    loaded, report = li.load(
        path, like={"a": li.Uninitialized(), "lazy": li.Uninitialized(), "m": li.Uninitialized()}
    )
    assert report.loaded == ("a", "m") and report.initialized == ("lazy",)
    np.testing.assert_array_equal(loaded["a"], BIG["b"])
    assert len(reads) == 1  # the whole data, once, to check its one checksum
    assert li.check_checkpoint(path, li.Uninitialized()).ok
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1  # the last byte of the data
    path.write_bytes(bytes(raw))
    with pytest.raises(li.errors.ReadCheckpointError, match="checksum does not match"):
        li.load(path)


def test_a_cpu_array_is_written_from_its_own_memory():
    x = jnp.arange(1000.0).reshape(10, 100)
    pieces = list(_write._pieces(x, x.nbytes))
    assert len(pieces) == 1 and np.shares_memory(pieces[0], np.asarray(x))
    n = np.arange(12.0)[::2]  # not contiguous: copied a window at a time
    assert np.array_equal(np.concatenate(list(_write._pieces(n, n.nbytes))), n)


def test_an_array_off_the_cpu_is_copied_a_window_of_rows_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(_write, "_on_cpu", lambda x: False)  # as on a GPU
    monkeypatch.setattr(_write, "WINDOW", 3 * 100 * 4)
    x = jnp.arange(1000.0, dtype=jnp.float32).reshape(10, 100)
    pieces = list(_write._pieces(x, x.nbytes))
    assert [p.shape for p in pieces] == [(3, 100), (3, 100), (3, 100), (1, 100)]
    li.save(tmp_path / "g.safetensors", {"x": x})
    np.testing.assert_array_equal(li.load(tmp_path / "g.safetensors")[0]["x"], x)


def test_check_checkpoint_tells_the_memory_the_load_needs(big):
    report = li.check_checkpoint(big, li.Uninitialized())
    device = str(jax.devices()[0])
    assert report.device_bytes == {device: 3 * MiB + 40}
    # the arrays (the CPU device's memory is the host's), the small tensor's batch, two chunks
    assert report.process_bytes == {0: 3 * MiB + 40 + 40 + 2 * MiB}
    like = {k: jax.ShapeDtypeStruct(v.shape, jnp.bfloat16) for k, v in BIG.items()}
    cast = li.check_checkpoint(big, like, cast=True)
    assert cast.device_bytes == {device: (3 * MiB + 40) // 2}  # half, in bfloat16
    # the bfloat16 arrays, plus the float32 buffer the kernel is read into before its cast
    assert cast.process_bytes == {0: (3 * MiB + 40) // 2 + 3 * MiB + 2 * MiB}


def test_a_check_report_prints(big):
    text = str(li.check_checkpoint(big, {"a": li.Uninitialized()}, strict=False))
    assert text.splitlines()[:2] == ["kept: -", "loaded: a"]
    assert "unexpected: b" in text and "ok: True" in text
    assert "memory per device: cpu:0: 3.0 MiB" in text
