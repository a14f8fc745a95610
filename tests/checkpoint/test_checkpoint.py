"""li.save / li.load: the safetensors checkpoint format, restoring against a template, atomic saves."""

import json
import os
import pickle
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors
import safetensors.numpy

import lazyinit as li


def mlp():
    return li.Sequential([li.Linear(4), li.nn.relu, li.Linear(2)])


@pytest.fixture
def params(key):
    return li.dry_run(mlp(), key, jnp.ones((2, 3)))


def same(a, b):
    """Same structure, and every leaf bitwise equal with the same shape and dtype."""
    fa, fb = jax.tree.leaves_with_path(a), jax.tree.leaves_with_path(b)
    assert [p for p, _ in fa] == [p for p, _ in fb]
    for (p, x), (_, y) in zip(fa, fb):
        assert x.shape == y.shape and x.dtype == y.dtype, p
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), p
    return True


def rewrite(path, *, metadata=None, tensors=None):
    """Writes a safetensors file by hand: the tensors and metadata of ``path`` with changes."""
    with safetensors.safe_open(path, framework="np") as f:
        meta = dict(f.metadata())
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(metadata or {})
    arrays.update(tensors or {})
    data = safetensors.numpy.save(arrays, metadata=meta)
    with open(path, "wb") as f:
        f.write(data)


def test_round_trip_without_template(tmp_path, params):
    li.save(tmp_path / "p.safetensors", params)
    assert same(li.load(tmp_path / "p.safetensors")[0], params)


def test_round_trip_keeps_order_and_empty_subtrees(tmp_path):
    tree = {"z": {"b": jnp.ones(2), "a": jnp.zeros(1)}, "empty": {}, "a": jnp.ones(())}
    li.save(tmp_path / "t.safetensors", tree)
    loaded, _ = li.load(tmp_path / "t.safetensors")
    assert list(loaded) == ["z", "empty", "a"] and list(loaded["z"]) == ["b", "a"]
    assert loaded["empty"] == {}


def test_dtypes_scalars_and_zero_size_leaves_survive(tmp_path):
    tree = {
        "bf16": jnp.arange(6, dtype=jnp.bfloat16).reshape(2, 3),
        "f16": jnp.float16(1.5) * jnp.ones(()),
        "empty": jnp.zeros((0, 4), jnp.float32),
        "mask": jnp.array([True, False]),
        "count": jnp.asarray(7, jnp.int32),
        "u8": np.arange(3, dtype=np.uint8),
        "f8": jnp.ones((2,), jnp.float8_e4m3fn),
    }
    li.save(tmp_path / "t.safetensors", tree)
    assert same(li.load(tmp_path / "t.safetensors")[0], tree)


def test_placeholders_keep_known_dims_and_dtype(tmp_path):
    lazy = li.lazy_state(mlp(), dtype={"0": "bfloat16"})
    li.save(tmp_path / "lazy.safetensors", lazy)
    loaded, _ = li.load(tmp_path / "lazy.safetensors")
    assert loaded == lazy
    assert repr(loaded["0"]["kernel"]) == "Uninitialized(shape=(?, 4), dtype=bfloat16)"


def test_the_header_is_plain_safetensors_with_format_metadata(tmp_path, params):
    li.save(tmp_path / "p.safetensors", params)
    arrays = safetensors.numpy.load_file(tmp_path / "p.safetensors")
    assert sorted(arrays) == ["0/bias", "0/kernel", "2/bias", "2/kernel"]
    np.testing.assert_array_equal(arrays["0/kernel"], params["0"]["kernel"])
    with safetensors.safe_open(tmp_path / "p.safetensors", framework="np") as f:
        meta = f.metadata()
    assert meta["format"] == "lazyinit.checkpoint" and meta["format_version"] == "2"
    assert json.loads(meta["tree"])["0"] == {"kernel": ["array"], "bias": ["array"]}


def test_load_against_a_lazy_state_then_dry_run_keeps_it(tmp_path, params, key):
    li.save(tmp_path / "p.safetensors", params)
    loaded, _ = li.load(tmp_path / "p.safetensors", like=li.lazy_state(mlp()))
    again = li.dry_run(mlp(), jax.random.key(9), jnp.ones((5, 3)), state=loaded)
    assert same(again, params)


def test_partly_lazy_file_plugs_into_dry_run(tmp_path, params):
    partial = {"0": params["0"], "2": li.lazy_state(mlp())["2"]}
    li.save(tmp_path / "p.safetensors", partial)
    state, _ = li.load(tmp_path / "p.safetensors", like=li.lazy_state(mlp()))
    assert isinstance(state["2"]["kernel"], li.Uninitialized)
    out, report = li.dry_run_with_report(
        mlp(), jax.random.key(1), jnp.ones((1, 3)), state=state, strict=False
    )
    assert same(out["0"], params["0"])
    assert report.kept == ("0/bias", "0/kernel")
    assert report.initialized == ("2/bias", "2/kernel")


def test_placeholder_of_unknown_structure_takes_the_saved_subtree(tmp_path, key):
    model = li.Sequential([li.Conv(4, 3), li.nn.relu, li.Flatten(), li.Linear(2)])
    x = jnp.ones((2, 6, 6, 3))
    params = li.dry_run(model, key, x)
    lazy = li.lazy_state(model)
    assert lazy["0"] == li.Uninitialized()  # Conv needs the input's rank to name its params
    li.save(tmp_path / "cnn.safetensors", params)
    state, _ = li.load(tmp_path / "cnn.safetensors", like=lazy)
    assert same(state, params)
    assert same(li.dry_run(model, jax.random.key(3), x, state=state), params)
    lazy["0"] = li.Uninitialized(None, "bfloat16")
    with pytest.raises(
        li.errors.StateMismatchError, match=r"dtype mismatch for '0/bias': found float32"
    ):
        li.load(tmp_path / "cnn.safetensors", like=lazy)


def test_load_against_abstract_and_concrete_templates(tmp_path, params, key):
    li.save(tmp_path / "p.safetensors", params)
    abstract = li.dry_run(mlp(), key, jax.ShapeDtypeStruct((2, 3), jnp.float32))
    assert same(li.load(tmp_path / "p.safetensors", like=abstract)[0], params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    assert same(li.load(tmp_path / "p.safetensors", like=zeros)[0], params)
    assert float(zeros["0"]["kernel"].sum()) == 0.0  # the template is not touched


def test_loaded_arrays_land_on_the_template_sharding(tmp_path, params):
    device = jax.devices()[0]
    sharding = jax.sharding.SingleDeviceSharding(device)
    li.save(tmp_path / "p.safetensors", params)
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), params)
    loaded, _ = li.load(tmp_path / "p.safetensors", like=like)
    assert all(a.sharding == sharding for a in jax.tree.leaves(loaded))
    lazy = jax.tree.map(
        lambda u: u.to(device),
        li.lazy_state(mlp()),
        is_leaf=lambda x: isinstance(x, li.Uninitialized),
    )
    loaded, _ = li.load(tmp_path / "p.safetensors", like=lazy)
    assert all(a.devices() == {device} for a in jax.tree.leaves(loaded))


def test_every_problem_is_listed_and_nothing_is_built(tmp_path, params):
    li.save(tmp_path / "p.safetensors", params)
    like = {
        "0": {"kernel": jnp.zeros((4, 3)), "bias": jnp.zeros(4, jnp.bfloat16)},
        "2": {"kernel": jnp.zeros((4, 2)), "weight": jnp.zeros(2)},
    }
    with pytest.raises(li.errors.StateMismatchError, match=r"p\.safetensors' \(4 problem") as e:
        li.load(tmp_path / "p.safetensors", like=like)
    text = "\n".join(e.value.problems)
    assert (
        "size mismatch for '0/kernel': found shape (3, 4), expected (4, 3) (the transpose" in text
    )
    assert "dtype mismatch for '0/bias': found float32, expected bfloat16 (pass cast=True" in text
    assert "missing key '2/weight'" in text
    assert "unexpected key '2/bias'" in text


def test_cast_converts_and_reports(tmp_path, params):
    li.save(tmp_path / "p.safetensors", params)
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.bfloat16), params)
    tree, report = li.load(tmp_path / "p.safetensors", like=like, cast=True)
    assert {a.dtype for a in jax.tree.leaves(tree)} == {jnp.dtype(jnp.bfloat16)}
    assert report.cast == ("0/bias", "0/kernel", "2/bias", "2/kernel")


def test_non_strict_reports_missing_and_unexpected(tmp_path, params):
    li.save(tmp_path / "p.safetensors", {"0": params["0"], "extra": jnp.ones(1)})
    tree, report = li.load(tmp_path / "p.safetensors", like=li.lazy_state(mlp()), strict=False)
    assert same(tree["0"], params["0"])
    assert isinstance(tree["2"]["kernel"], li.Uninitialized)
    assert report.loaded == ("0/bias", "0/kernel")
    assert report.missing == ("2/bias", "2/kernel")
    assert report.unexpected == ("extra",)


def test_placeholder_in_file_cannot_fill_a_concrete_template(tmp_path, params):
    li.save(tmp_path / "lazy.safetensors", li.lazy_state(mlp()))
    with pytest.raises(
        li.errors.StateMismatchError, match="placeholder for '0/bias', where an array is needed"
    ):
        li.load(tmp_path / "lazy.safetensors", like=params)


def test_save_refuses_to_overwrite_unless_asked(tmp_path, params):
    path = tmp_path / "p.safetensors"
    li.save(path, params)
    with pytest.raises(li.errors.OverwriteCheckpointError, match="already exists.*overwrite=True"):
        li.save(path, {"x": jnp.ones(1)})
    assert same(li.load(path)[0], params)
    li.save(path, {"x": jnp.ones(1)}, overwrite=True)
    assert list(li.load(path)[0]) == ["x"]
    assert os.listdir(tmp_path) == ["p.safetensors"]  # no temporary file left behind


def test_a_leftover_temporary_file_is_ignored(tmp_path, params):
    li.save(tmp_path / "p.safetensors", params)
    (tmp_path / ".p.safetensors.abc123.tmp").write_bytes(b"half a checkpoint")
    assert same(li.load(tmp_path / "p.safetensors")[0], params)


def test_save_refuses_abstract_and_unstorable_leaves(tmp_path):
    tree = {
        "abstract": jax.ShapeDtypeStruct((2,), jnp.float32),
        "nibbles": jnp.ones(4, jnp.int4),
        "lazy": li.Uninitialized((2,), jnp.int4),
        "rng": jax.random.key(0),
    }
    with pytest.raises(
        li.errors.WriteCheckpointError, match=r"\(4 problem\(s\)\); nothing was written"
    ) as e:
        li.save(tmp_path / "t.safetensors", tree)
    assert "'abstract' is abstract ((2,), float32): it has no values to save" in str(e.value)
    assert "'nibbles' has dtype int4, which safetensors cannot store" in str(e.value)
    assert "'lazy' is a placeholder of dtype int4" in str(e.value)
    assert "'rng' is an array of PRNG keys: save jax.random.key_data(key)" in str(e.value)
    assert not os.listdir(tmp_path)


def test_save_refuses_deleted_arrays_by_path(tmp_path):
    gone = jnp.ones(3)
    gone.delete()
    with pytest.raises(
        li.errors.DeletedParamError, match=r"The tree to save holds deleted arrays: 'gone'"
    ):
        li.save(tmp_path / "t.safetensors", {"gone": gone, "ok": jnp.ones(1)})
    assert not os.listdir(tmp_path)


def test_save_refuses_pickle_suffixes(tmp_path, params):
    with pytest.raises(
        li.errors.WriteCheckpointError, match=r"its suffix says pickle.*\*\.safetensors"
    ):
        li.save(tmp_path / "model.pt", params)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickles_are_refused_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.safetensors").write_bytes(pickle.dumps(_Exploit(), protocol=4))
    with pytest.raises(
        li.errors.ReadPickleError, match="is a Python pickle. lazyinit never unpickles"
    ):
        li.load(tmp_path / "weights.safetensors")
    assert not (tmp_path / "pwned").exists()


def test_torch_zip_checkpoints_are_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "model.pt", "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(
        li.errors.ReadPickleError,
        match=r"zip archive.*lazyinit\.interop\.torch\.from_torch_state_dict\(model, path, sample\)",
    ):
        li.load(tmp_path / "model.pt")


def test_pickle_suffix_with_unknown_content_is_refused(tmp_path):
    (tmp_path / "model.ckpt").write_bytes(b"(dp0\nS'a'\np1\nI1\ns.")  # protocol 0
    with pytest.raises(li.errors.ReadPickleError, match="named like a pickle-based checkpoint"):
        li.load(tmp_path / "model.ckpt")


def test_newer_format_version_is_a_version_error(tmp_path, params):
    li.save(tmp_path / "p.safetensors", params)
    rewrite(tmp_path / "p.safetensors", metadata={"format_version": "3"})
    with pytest.raises(
        li.errors.ReadVersionError,
        match="has format version 3: this lazyinit reads versions up to 2",
    ):
        li.load(tmp_path / "p.safetensors")


def test_foreign_safetensors_file_is_a_format_error(tmp_path):
    safetensors.numpy.save_file({"weight": np.ones(2, np.float32)}, tmp_path / "hf.safetensors")
    with pytest.raises(li.errors.ReadCheckpointError, match="without lazyinit metadata"):
        li.load(tmp_path / "hf.safetensors")


def test_truncated_file_is_a_format_error_naming_it(tmp_path, params):
    path = tmp_path / "p.safetensors"
    li.save(path, params)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(
        li.errors.ReadCheckpointError, match=r"p\.safetensors' is not a valid.*truncated"
    ):
        li.load(path)


def test_flipped_bit_in_the_data_fails_the_checksum(tmp_path, params):
    path = tmp_path / "p.safetensors"
    li.save(path, params)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(li.errors.ReadCheckpointError, match="checksum does not match"):
        li.load(path)


def test_tensor_missing_from_the_tree_metadata_is_a_format_error(tmp_path, params):
    path = tmp_path / "p.safetensors"
    li.save(path, params)
    rewrite(path, tensors={"smuggled": np.ones(1, np.float32)})
    with pytest.raises(li.errors.ReadCheckpointError, match="does not list: \\['smuggled'\\]"):
        li.load(path)


def test_float64_without_x64_is_reported(tmp_path):
    li.save(tmp_path / "d.safetensors", {"w": np.ones(2, np.float64)})
    with pytest.raises(
        li.errors.StateMismatchError, match="'w' is float64 but 64-bit types are off"
    ):
        li.load(tmp_path / "d.safetensors")
    tree, report = li.load(
        tmp_path / "d.safetensors", like={"w": jax.ShapeDtypeStruct((2,), jnp.float32)}, cast=True
    )
    assert tree["w"].dtype == jnp.float32 and report.cast == ("w",)


def test_bad_template_is_an_invalid_tree_error(tmp_path, params):
    li.save(tmp_path / "p.safetensors", params)
    with pytest.raises(li.errors.InvalidTreeError, match="'0/kernel': expected an array, got str"):
        li.load(tmp_path / "p.safetensors", like={"0": {"kernel": "x"}})


def test_a_root_placeholder_of_unknown_structure_saves_and_loads_as_itself(tmp_path, key):
    conv = li.Conv(8, 3)  # an int kernel_size: the rank, so the param names, come from the input
    lazy = li.lazy_state(conv).astype("bfloat16")
    assert lazy == li.Uninitialized(None, "bfloat16")
    li.save(tmp_path / "lazy.safetensors", lazy)
    assert li.load(tmp_path / "lazy.safetensors")[0] == lazy
    assert li.load(tmp_path / "lazy.safetensors", like=li.lazy_state(conv))[0] == lazy
    x = jnp.ones((1, 5, 5, 2))
    state, _ = li.load(tmp_path / "lazy.safetensors")
    assert li.dry_run(conv, key, x, state=state)["kernel"].dtype == jnp.bfloat16
    # the saved placeholder stands for every path below it, as in load_state and dry_run
    with pytest.raises(
        li.errors.StateMismatchError, match=r"placeholder for 'kernel', where an array is needed"
    ):
        li.load(tmp_path / "lazy.safetensors", like=li.dry_run(conv, key, x))


def test_a_root_placeholder_template_takes_the_whole_saved_tree(tmp_path, key):
    conv = li.Conv(8, 3)
    x = jnp.ones((1, 5, 5, 2))
    params = li.dry_run(conv, key, x)
    li.save(tmp_path / "conv.safetensors", params)
    state, _ = li.load(tmp_path / "conv.safetensors", like=li.lazy_state(conv))
    assert same(state, params)
    assert same(li.dry_run(conv, jax.random.key(9), x, state=state), params)
    bf16 = li.lazy_state(conv).astype("bfloat16")
    with pytest.raises(
        li.errors.StateMismatchError, match=r"dtype mismatch for 'bias': found float32"
    ):
        li.load(tmp_path / "conv.safetensors", like=bf16)
    tree, report = li.load(tmp_path / "conv.safetensors", like=bf16, cast=True)
    assert tree["kernel"].dtype == jnp.bfloat16 and report.cast == ("bias", "kernel")


def test_a_root_placeholder_template_keeps_the_files_nesting(tmp_path, key):
    flax = pytest.importorskip("flax.linen", reason="the flax interop needs flax")
    from lazyinit.interop.flax import FlaxModule

    model = FlaxModule(flax.Dense(4))
    assert li.lazy_state(model) == li.Uninitialized()  # flax names its params only when run
    params = li.dry_run(model, key, jnp.ones((2, 3)))
    li.save(tmp_path / "dense.safetensors", {**params, "empty": {}})
    state, _ = li.load(tmp_path / "dense.safetensors", like=li.lazy_state(model))
    assert state["empty"] == {} and same(state["params"], params["params"])


def test_scalar_leaves_of_one_shape_load_against_a_template(tmp_path):
    # the load plan shares one ShapeDtypeStruct per saved (dtype, shape); a scalar one has no len()
    tree = {"a": np.float32(1.5), "b": {"c": np.float32(2.5), "d": np.zeros((), np.float32)}}
    li.save(tmp_path / "s.safetensors", tree)
    like = jax.tree.map(lambda a: jax.ShapeDtypeStruct((), np.float32), tree)
    loaded, report = li.load(tmp_path / "s.safetensors", like=like)
    assert report.loaded == ("a", "b/c", "b/d")
    assert jax.tree.map(float, loaded) == {"a": 1.5, "b": {"c": 2.5, "d": 0.0}}
