"""li.save and li.load of sharded arrays on 8 simulated CPU devices.

Run by ``test_checkpoint_devices.py`` in a child pytest with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (its name does not match
``test_*.py`` so that the main run does not collect it). Every layout of a 2 x 4
mesh is saved (shard by shard, rows assembled where shards split them) and
loaded against every other layout (one piece per shard index, rows read in
windows where a piece is not one run of bytes); the pieces path and its windows
are made small so that small arrays take them.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import lazyinit as li
from lazyinit.checkpoint import _pieces, _read, _write

pytestmark = pytest.mark.skipif(
    jax.device_count() != 8,
    reason="needs 8 devices: test_checkpoint_devices.py runs this file with XLA_FLAGS set",
)

SPECS = [P(), P("a"), P("b"), P(None, "b"), P("a", "b"), P("b", "a"), P(("a", "b")), P(None, "a")]


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch):
    monkeypatch.setattr(_pieces, "SMALL", 64)  # every array below takes the pieces path
    monkeypatch.setattr(_pieces, "WINDOW", 3 * 16 * 4)  # windows of 3 rows of 16 float32
    monkeypatch.setattr(_write, "WINDOW", 3 * 16 * 4)


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((2, 4), ("a", "b"))


def values(shape, dtype=np.float32):
    return (np.arange(np.prod(shape)) % 251).astype(dtype).reshape(shape)


@pytest.mark.parametrize("saved", SPECS, ids=str)
def test_a_sharded_save_writes_the_global_array(tmp_path, mesh, saved):
    x = values((16, 16))
    arr = jax.device_put(x, NamedSharding(mesh, saved))
    li.save(
        tmp_path / "s.safetensors", {"w": arr, "v": jax.device_put(x[0], NamedSharding(mesh, P()))}
    )
    got, _ = li.load(tmp_path / "s.safetensors")
    np.testing.assert_array_equal(np.asarray(got["w"]), x)
    np.testing.assert_array_equal(np.asarray(got["v"]), x[0])


@pytest.mark.parametrize(("saved", "loaded"), list(itertools.product(SPECS[::2], SPECS)), ids=str)
def test_a_load_onto_any_layout_gives_each_device_its_slice(tmp_path, mesh, saved, loaded):
    x = values((16, 16))
    li.save(tmp_path / "s.safetensors", {"w": jax.device_put(x, NamedSharding(mesh, saved))})
    sharding = NamedSharding(mesh, loaded)
    like = {"w": jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)}
    got, report = li.load(tmp_path / "s.safetensors", like=like)
    assert got["w"].sharding == sharding and report.loaded == ("w",)
    for shard in got["w"].addressable_shards:
        np.testing.assert_array_equal(np.asarray(shard.data), x[shard.index])


def test_each_byte_a_load_needs_is_read_once(tmp_path, mesh, monkeypatch):
    x = values((16, 16))
    li.save(tmp_path / "s.safetensors", {"w": x})
    reads = []
    real = _read.pread_into
    monkeypatch.setattr(
        _read, "pread_into", lambda fd, o, out: reads.append(len(out)) or real(fd, o, out)
    )
    like = {"w": jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P("a", "b")))}
    li.load(tmp_path / "s.safetensors", like=like)
    assert sum(reads) == x.nbytes  # one chunk holds it; four pieces share each row window


def test_a_cast_load_onto_a_sharded_template(tmp_path, mesh):
    x = values((16, 16))
    li.save(tmp_path / "s.safetensors", {"w": x})
    sharding = NamedSharding(mesh, P("a", "b"))
    like = {"w": jax.ShapeDtypeStruct(x.shape, jnp.bfloat16, sharding=sharding)}
    got, report = li.load(tmp_path / "s.safetensors", like=like, cast=True)
    assert got["w"].dtype == jnp.bfloat16 and report.cast == ("w",)
    np.testing.assert_array_equal(np.asarray(got["w"]), x.astype(jnp.bfloat16))


def test_check_checkpoint_gives_each_device_its_shards_bytes(tmp_path, mesh):
    x = values((16, 16))
    li.save(tmp_path / "s.safetensors", {"w": x, "b": x[0]})
    like = {
        "w": jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(mesh, P("a", "b"))),
        "b": jax.ShapeDtypeStruct((16,), x.dtype, sharding=NamedSharding(mesh, P("a"))),
    }
    report = li.check_checkpoint(tmp_path / "s.safetensors", like)
    # a (8, 4) block of the kernel, and half the bias (replicated over 'b')
    assert report.device_bytes == {f"cpu:{d}": 8 * 4 * 4 + 8 * 4 for d in range(8)}
    assert list(report.process_bytes) == [0]
    assert report.process_bytes[0] >= sum(report.device_bytes.values())  # CPU devices: the host's
