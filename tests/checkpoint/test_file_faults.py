"""Issue 13, files: hostile files, silent data loss on save, the umask, leftovers, crafted headers.

Each test names the issue's item it pins. Every expected error is in the
LazyInitError family and names the file or the tree path.
"""

import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from crafted import header_of, resealed, save_v1, with_header
from hypothesis import given, settings
from hypothesis import strategies as st

import lazyinit as li
from lazyinit.checkpoint import _atomic, _read
from lazyinit.checkpoint import _format as _checkpoint_format

TREE = {"w": jnp.arange(4, dtype=jnp.float32), "b": {"c": jnp.ones((2, 2), jnp.int32)}}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "t.safetensors"
    li.save(path, TREE)
    return path


# -- item 1: what is not a regular file, and files whose size disagrees with the header ------


def test_item1_a_symlink_to_dev_zero_is_refused_without_reading(tmp_path, monkeypatch):
    link = tmp_path / "zero.safetensors"
    link.symlink_to("/dev/zero")

    def never(*args):  # a regression must fail here, not fill the machine's memory
        raise AssertionError("li.load read from /dev/zero")

    monkeypatch.setattr(_checkpoint_format, "_read_header", never)
    with pytest.raises(
        li.errors.ReadCheckpointError, match=r"zero\.safetensors' is a character device"
    ):
        li.load(link)


def test_item1_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    outcome = []
    reader = threading.Thread(target=lambda: outcome.append(_load_error(fifo)), daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():  # unblock the reader so the test process can exit, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("li.load blocked on a FIFO")
    assert outcome and isinstance(outcome[0], li.errors.ReadCheckpointError)
    assert "is a FIFO (named pipe), not a regular file" in str(outcome[0])


def _load_error(path):
    try:
        li.load(path)
    except Exception as e:
        return e
    return None


def test_item1_a_directory_is_refused(tmp_path):
    with pytest.raises(li.errors.ReadCheckpointError, match="is a directory, not a regular file"):
        li.load(tmp_path)


def test_item1_a_sparse_file_larger_than_its_header_says_is_refused_unread(saved, monkeypatch):
    raw = saved.read_bytes()
    with open(saved, "r+b") as f:  # 4 GiB of holes after a valid checkpoint
        f.truncate(4 << 30)
    reads = []
    real_read = _checkpoint_format._read_exactly

    def spy(f, n, what):
        reads.append((what, n))
        return real_read(f, n, what)

    monkeypatch.setattr(_checkpoint_format, "_read_exactly", spy)
    with pytest.raises(
        li.errors.ReadCheckpointError, match=r"describes \d+ bytes of tensor data but"
    ):
        li.load(saved)
    assert reads == [("header", header_of(raw)[0])]  # the tensors were never read


@pytest.mark.parametrize("version", [1, 2])
def test_item1_load_reads_exactly_the_bytes_the_header_describes(saved, monkeypatch, version):
    if version == 1:
        save_v1(saved, TREE)
    raw = saved.read_bytes()
    n, header = header_of(raw)
    reads, data_reads = [], []
    real_read, real_pread = _checkpoint_format._read_exactly, _read.pread_into
    monkeypatch.setattr(
        _checkpoint_format,
        "_read_exactly",
        lambda f, k, what: reads.append(k) or real_read(f, k, what),
    )
    monkeypatch.setattr(
        _read,
        "pread_into",
        lambda fd, offset, out: (
            data_reads.append((offset, len(out))) or real_pread(fd, offset, out)
        ),
    )
    tree, _ = li.load(saved)
    data = max(e["data_offsets"][1] for k, e in header.items() if k != "__metadata__")
    assert reads == [n] and 8 + n + data == len(raw)
    assert data_reads == [(8 + n, data)]  # every byte of the data once, nothing past it
    np.testing.assert_array_equal(tree["w"], TREE["w"])


# -- item 2: what li.save accepts, li.load reads back identically ---------------------------


def test_item2_the_reserved_metadata_key_is_refused_before_writing(tmp_path):
    path = tmp_path / "m.safetensors"
    with pytest.raises(
        li.errors.WriteCheckpointError, match="'__metadata__' is the name safetensors"
    ):
        li.save(path, {"__metadata__": jnp.ones(2), "w": jnp.ones(1)})
    assert not path.exists()
    li.save(path, {"__metadata__": {"w": jnp.ones(2)}})  # nested one level deeper it is a path
    assert li.load(path)[0]["__metadata__"]["w"].shape == (2,)


def test_item2_a_lone_surrogate_key_is_refused_naming_it(tmp_path):
    path = tmp_path / "s.safetensors"
    with pytest.raises(
        li.errors.WriteCheckpointError, match=r"key '\\udc80' under 'a' is not valid UTF-8"
    ):
        li.save(path, {"a": {"\udc80": jnp.ones(1)}})
    assert not path.exists()


KEYS = st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=6)
DTYPES = ["float32", "bfloat16", "float16", "int8", "uint8", "int32", "bool", "complex64"]
LEAVES = st.builds(
    lambda dtype, shape, seed: np.random.default_rng(seed).integers(0, 2, size=shape).astype(dtype),
    st.sampled_from(DTYPES),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.integers(0, 2**16),
) | st.builds(
    li.Uninitialized,
    st.none() | st.lists(st.none() | st.integers(1, 5), max_size=3).map(tuple),
    st.sampled_from([None, "float32", "bfloat16"]),
)
TREES = st.recursive(
    st.dictionaries(KEYS, LEAVES, max_size=3),
    lambda children: st.dictionaries(KEYS, children | LEAVES, max_size=3),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None)
@given(tree=TREES)
def test_item2_whatever_save_accepts_load_reads_back_identically(tmp_path_factory, tree):
    path = tmp_path_factory.mktemp("rt") / "t.safetensors"
    try:
        li.save(path, tree)
    except (li.errors.WriteCheckpointError, li.errors.InvalidTreeError) as e:
        assert "'" in str(e)  # names what it refused
        assert not path.exists()
        return
    loaded, report = li.load(path)
    assert _same(loaded, tree), (tree, loaded)
    assert safetensors.numpy.load_file(path).keys() == {
        "/".join(p) for p, v in _leaves(tree) if not isinstance(v, li.Uninitialized)
    }


def _leaves(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _leaves(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def _same(a, b):
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and list(a) == list(b)
            and all(_same(a[k], b[k]) for k in a)
        )
    if isinstance(a, li.Uninitialized) or isinstance(b, li.Uninitialized):
        return a == b
    return (
        a.shape == b.shape
        and np.dtype(a.dtype) == np.dtype(b.dtype)
        and np.asarray(a).tobytes() == np.asarray(b).tobytes()
    )


# -- item 3: complex64 with 64-bit types off ------------------------------------------------


def test_item3_complex64_round_trips_with_64_bit_types_off(tmp_path):
    assert not jax.config.jax_enable_x64
    z = jnp.asarray([1 + 2j, 3 - 4j], jnp.complex64)
    li.save(tmp_path / "z.safetensors", {"z": z})
    tree, _ = li.load(
        tmp_path / "z.safetensors", like={"z": jax.ShapeDtypeStruct((2,), "complex64")}
    )
    assert tree["z"].dtype == jnp.complex64
    np.testing.assert_array_equal(tree["z"], z)


def test_item3_a_complex64_parameter_is_drawn_with_64_bit_types_off(key):
    def init(k, shape, dtype):
        return jax.random.normal(k, shape, dtype)

    class Phase(li.Layer):
        def specs(self, x):
            return {"z": li.Param((x.shape[-1],), init, jnp.complex64)}

        def __call__(self, params, x):
            return x * params["z"][None]

    params = li.dry_run(Phase(), key, jnp.ones((2, 3), jnp.complex64))
    assert params["z"].dtype == jnp.complex64 and params["z"].shape == (3,)


# -- item 4: the umask is never changed -----------------------------------------------------


def test_item4_save_never_changes_the_umask_and_honours_it(tmp_path, monkeypatch):
    calls = []
    real_umask = os.umask
    monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real_umask(mask))
    old = real_umask(0o077)
    try:
        threads = [
            threading.Thread(target=li.save, args=(tmp_path / f"{i}.safetensors", TREE))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        real_umask(old)
    assert calls == []
    modes = {oct(os.stat(tmp_path / f"{i}.safetensors").st_mode & 0o777) for i in range(8)}
    assert modes == {"0o600"}


# -- item 5: temporaries of killed saves ----------------------------------------------------


def test_item5_the_next_save_deletes_a_dead_writers_temporary(saved):
    stale = saved.parent / f".{saved.name}.dead1234.tmp"  # what a SIGKILLed save leaves
    stale.write_bytes(b"\0" * 100)
    other = saved.parent / ".other.safetensors.dead.tmp"
    other.write_bytes(b"\0")
    li.save(saved, TREE, overwrite=True)
    assert not stale.exists()
    assert other.exists()  # another file's temporaries wait for that file's next save


def test_item5_a_live_writers_temporary_is_never_deleted(saved):
    fd, tmp = _atomic._create_temporary(str(saved))  # locked, as during a save
    try:
        li.save(saved, TREE, overwrite=True)
        assert os.path.exists(tmp)
    finally:
        os.close(fd)
    assert _atomic.remove_stale(str(saved)) == [tmp]  # its writer is gone now


# -- item 8: crafted files ------------------------------------------------------------------


def test_item8_tree_metadata_nested_500_deep_is_a_format_error(saved):
    raw = saved.read_bytes()
    _, header = header_of(raw)
    deep = "{" + '"a":{' * 499 + '"w":["array"]' + "}" * 500
    header["__metadata__"]["tree"] = deep
    saved.write_bytes(with_header(raw, header))
    with pytest.raises(
        li.errors.ReadCheckpointError, match="t.safetensors.*nested deeper than 100"
    ):
        li.load(saved)


def test_item8_a_5000_digit_format_version_is_a_format_error(saved):
    raw = saved.read_bytes()
    _, header = header_of(raw)
    header["__metadata__"]["format_version"] = "9" * 5000
    saved.write_bytes(with_header(raw, header))
    with pytest.raises(
        li.errors.ReadCheckpointError, match="format_version '9999.*not a plausible"
    ):
        li.load(saved)


@pytest.mark.parametrize("shape", [[0, 2**63], [2**40, 2**40, 0], [0, 2**31, 2**31, 2**31]])
def test_item8_zero_size_tensors_with_absurd_dims_are_format_errors(tmp_path, shape):
    path = tmp_path / "z.safetensors"
    li.save(path, {"z": np.zeros((0, 1), np.float32), "w": np.ones(2, np.float32)})
    raw = path.read_bytes()
    _, header = header_of(raw)
    header["z"]["shape"] = shape
    path.write_bytes(with_header(raw, header))
    with pytest.raises(li.errors.ReadCheckpointError, match="entry for tensor 'z' is malformed"):
        li.load(path)
    with pytest.raises(li.errors.ReadCheckpointError, match="entry for tensor 'z' is malformed"):
        li.check_checkpoint(path, {"z": li.Uninitialized(), "w": li.Uninitialized()})


@pytest.mark.parametrize("version", [1, 2])
def test_item8_a_boolean_tensor_holding_other_bytes_is_a_format_error(tmp_path, version):
    path = tmp_path / "b.safetensors"
    (save_v1 if version == 1 else li.save)(path, {"mask": np.array([True, False, True])})
    raw = bytearray(path.read_bytes())
    raw[-2] = 7
    path.write_bytes(resealed(bytes(raw)))  # a crafted file carries valid digests: no secret
    with pytest.raises(
        li.errors.ReadCheckpointError, match=r"boolean tensor\(s\) \['mask'\] hold bytes"
    ):
        li.load(path)


def test_item8_save_writes_a_bool_array_holding_other_bytes_as_0_and_1(tmp_path):
    mask = np.array([7, 0, 1, 255], np.uint8).view(np.bool_)  # numpy allows it: all but 0 is True
    path = tmp_path / "b.safetensors"
    li.save(path, {"mask": mask, "big": np.full(300_000, 2, np.uint8).view(np.bool_)})
    loaded, _ = li.load(path)  # what save writes, load reads
    assert loaded["mask"].tolist() == [True, False, True, True]
    assert bool(loaded["big"].all())
    on_disk = safetensors.numpy.load_file(path)
    assert on_disk["mask"].view(np.uint8).tolist() == [1, 0, 1, 1]
    assert set(on_disk["big"].view(np.uint8).tolist()) == {1}
    assert mask.view(np.uint8).tolist() == [7, 0, 1, 255]  # the caller's array is untouched


# -- item 10: save with a bytes path, inside jit ---------------------------------------------


def test_item10_save_accepts_a_bytes_path_as_load_does(tmp_path):
    path = os.fsencode(tmp_path / "b.safetensors")
    li.save(path, TREE)
    assert _same(li.load(path)[0], TREE)


def test_item10_save_inside_jit_says_it_needs_concrete_arrays(tmp_path):
    path = tmp_path / "j.safetensors"

    @jax.jit
    def step(w):
        li.save(path, {"w": w})
        return w

    with pytest.raises(
        li.errors.WriteCheckpointError, match="'w' is a traced value.*needs concrete"
    ):
        step(jnp.ones(3))
    assert not path.exists()


# -- item 11: one transfer per placement, not one per leaf ----------------------------------


def test_item11_load_moves_the_arrays_without_a_device_put_per_leaf(tmp_path, monkeypatch):
    tree = {f"b{i}": {"w": np.full(3, i, np.float32)} for i in range(50)}
    li.save(tmp_path / "many.safetensors", tree)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    like = {k: {"w": jax.ShapeDtypeStruct((3,), np.float32, sharding=device)} for k in tree}
    calls = []
    real_put = jax.device_put
    monkeypatch.setattr(
        jax, "device_put", lambda x, *a, **k: calls.append(1) or real_put(x, *a, **k)
    )
    placed, report = li.load(tmp_path / "many.safetensors", like=like)
    assert len(calls) <= 1 and len(report.loaded) == 50  # at most one batch per placement
    assert _same(placed, tree) and placed["b7"]["w"].sharding == device
    assert all(leaf["w"].committed for leaf in placed.values())  # as device_put(x, device)
    default, _ = li.load(tmp_path / "many.safetensors")
    assert len(calls) <= 1  # to the default device: no device_put per leaf
    assert _same(default, tree)
    assert not any(leaf["w"].committed for leaf in default.values())  # as jnp.asarray(x)
