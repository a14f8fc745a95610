"""li.load's host-to-device copy: jaxlib's fast path gives what the public path gives."""

import gc

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import lazyinit as li
from lazyinit.checkpoint import _gc, _host_to_device
from lazyinit.checkpoint._host_to_device import put_many

HOSTS = [
    np.arange(6, dtype=np.float32).reshape(2, 3),
    np.array(7, np.int32),  # a scalar
    np.zeros((0, 4), np.float32),  # zero-size
    np.array([True, False]),
    np.array([1.5, -2.0], ml_dtypes.bfloat16),
    np.array([1 + 2j], np.complex64),
    np.arange(4, dtype=np.int8),
]


def _public(hosts, where):
    if where is None:
        return [jnp.asarray(h) for h in hosts]
    return [jax.device_put(h, where) for h in hosts]


def _describe(a):
    return (a.shape, a.dtype, a.sharding, a.committed, a.weak_type, np.asarray(a).tobytes())


@pytest.mark.parametrize("fast", [True, False], ids=["jaxlib-fast-path", "public-path"])
@pytest.mark.parametrize("where", ["default", "single-device"])
def test_put_many_gives_what_device_put_gives(monkeypatch, fast, where):
    if not fast:
        monkeypatch.setattr(_host_to_device, "_batched_device_put", None)
    assert fast == (_host_to_device._batched_device_put is not None)
    sharding = None if where == "default" else jax.sharding.SingleDeviceSharding(jax.devices()[0])
    got = put_many(HOSTS, sharding)
    assert [_describe(a) for a in got] == [_describe(a) for a in _public(HOSTS, sharding)]
    assert all(isinstance(a, jax.Array) for a in got)


def test_put_many_copies_even_an_aligned_host_buffer():
    # jaxlib aliases a 64-byte-aligned numpy buffer unless told to copy; li.load reuses none of
    # its read buffer, but put_many promises a copy whatever the caller does with the host.
    raw = np.zeros(4096 + 64, np.uint8)
    offset = (-raw.ctypes.data) % 64
    host = raw[offset : offset + 4096].view(np.float32)
    [device] = put_many([host], None)
    host[:] = 5.0
    assert float(device.max()) == 0.0
    assert device.unsafe_buffer_pointer() != host.ctypes.data


def test_put_many_of_nothing_is_nothing():
    assert put_many([], None) == []


def test_put_many_under_a_default_device_follows_it():
    device = jax.devices()[-1]
    with jax.default_device(device):
        got = put_many(HOSTS[:2], None)
    assert all(a.devices() == {device} and not a.committed for a in got)


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_paused_restores_the_collectors_state_even_on_error(enabled):
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with pytest.raises(RuntimeError), _gc.paused():
            assert not gc.isenabled()
            raise RuntimeError("boom")
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_load_and_save_leave_a_disabled_collector_disabled(tmp_path):
    was = gc.isenabled()
    gc.disable()
    try:
        li.save(tmp_path / "x.safetensors", {"w": np.ones(3, np.float32)})
        li.load(tmp_path / "x.safetensors")
        li.check_checkpoint(
            tmp_path / "x.safetensors", {"w": jax.ShapeDtypeStruct((3,), np.float32)}
        )
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()
    li.save(tmp_path / "y.safetensors", {"w": np.ones(3, np.float32)})
    li.load(tmp_path / "y.safetensors")
    assert gc.isenabled() == was
