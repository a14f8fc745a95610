"""li.check_checkpoint: the report a load would give, from the file's header alone (issue 12)."""

import dataclasses

import jax.numpy as jnp
import pytest

import lazyinit as li
from lazyinit.__main__ import main
from lazyinit.checkpoint import _format as _checkpoint_format

X = jnp.ones((2, 3))


def mlp(features=4):
    return li.Sequential([li.Linear(features), li.nn.relu, li.Linear(2)])


@pytest.fixture
def path(tmp_path, key):
    path = tmp_path / "mlp.safetensors"
    li.save(path, li.dry_run(mlp(), key, X))
    return path


def load_report(path, like, **kw):
    return li.load(path, like=like, **kw)[1]


def same_as_load(check, loaded):
    return all(
        getattr(check, f.name) == getattr(loaded, f.name) for f in dataclasses.fields(li.Report)
    )


def test_a_fitting_checkpoint_reports_what_load_reports(path):
    report = li.check_checkpoint(path, mlp(), X)
    assert isinstance(report, li.Report) and report.ok and report.mismatched == ()
    assert report.loaded == ("0/bias", "0/kernel", "2/bias", "2/kernel")
    assert same_as_load(report, load_report(path, li.lazy_state(mlp(), X)))


def test_surgery_reports_initialized_missing_and_unexpected_as_a_non_strict_load(tmp_path, key):
    old = {"0": li.dry_run(mlp(), key, X)["0"], "extra": jnp.ones(1)}
    li.save(tmp_path / "old.safetensors", old)
    like = li.lazy_state(mlp(), X)
    report = li.check_checkpoint(tmp_path / "old.safetensors", mlp(), X, strict=False)
    assert report.ok
    assert report.initialized == report.missing == ("2/bias", "2/kernel")
    assert report.unexpected == ("extra",)
    assert same_as_load(report, load_report(tmp_path / "old.safetensors", like, strict=False))
    strict = li.check_checkpoint(tmp_path / "old.safetensors", mlp(), X)
    assert not strict.ok and strict.mismatched == ()
    with pytest.raises(li.errors.StateMismatchError, match="missing key '2/bias'"):
        li.load(tmp_path / "old.safetensors", like=like)


def test_missing_paths_with_arrays_in_the_template_are_kept(tmp_path, key):
    params = li.dry_run(mlp(), key, X)
    li.save(tmp_path / "head.safetensors", {"2": params["2"]})
    report = li.check_checkpoint(tmp_path / "head.safetensors", params, strict=False)
    assert report.kept == ("0/bias", "0/kernel") and report.loaded == ("2/bias", "2/kernel")
    assert same_as_load(report, load_report(tmp_path / "head.safetensors", params, strict=False))


def test_size_and_dtype_mismatches_are_listed_by_path_as_load_words_them(path):
    report = li.check_checkpoint(path, mlp(5), X)
    assert not report.ok
    assert report.mismatched == (
        "size mismatch for '0/kernel': found shape (3, 4), expected (3, 5)",
        "size mismatch for '0/bias': found shape (4,), expected (5,)",
        "size mismatch for '2/kernel': found shape (4, 2), expected (5, 2)",
    )
    with pytest.raises(li.errors.StateMismatchError) as e:
        li.load(path, like=li.lazy_state(mlp(5), X))
    assert e.value.problems == report.mismatched
    bf16 = li.lazy_state(mlp(), X, dtype=jnp.bfloat16)
    dtypes = li.check_checkpoint(path, bf16)
    assert dtypes.mismatched[0] == (
        "dtype mismatch for '0/kernel': found float32, expected bfloat16 (pass cast=True to "
        "convert it)"
    )
    cast = li.check_checkpoint(path, bf16, cast=True)
    assert cast.ok and same_as_load(cast, load_report(path, bf16, cast=True))


def test_only_the_header_is_read(path, monkeypatch):
    reads = []
    real_read = _checkpoint_format._read_exactly
    monkeypatch.setattr(
        _checkpoint_format,
        "_read_exactly",
        lambda f, n, what: reads.append(what) or real_read(f, n, what),
    )
    assert li.check_checkpoint(path, mlp(), X).ok
    assert reads == ["header"]


def test_corrupt_tensor_bytes_pass_the_header_check_but_not_the_load(path):
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert li.check_checkpoint(path, mlp(), X).ok
    with pytest.raises(li.errors.ReadCheckpointError, match="checksum does not match"):
        li.load(path)


def test_a_template_with_samples_is_refused(path):
    with pytest.raises(li.errors.InvalidArgumentError, match="a template tree and sample inputs"):
        li.check_checkpoint(path, li.lazy_state(mlp(), X), X)


def test_a_bad_header_is_a_format_error(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"{}")
    with pytest.raises(li.errors.ReadCheckpointError, match="bad.safetensors"):
        li.check_checkpoint(tmp_path / "bad.safetensors", mlp(), X)


MODELS = """
import lazyinit as li

def make(features=4):
    return li.Sequential([li.Linear(features), li.nn.relu, li.Linear(2)])
"""


def test_cli_inspect_checkpoint_prints_the_report_and_exits_1_when_it_does_not_load(
    path, tmp_path, capsys
):
    (tmp_path / "models.py").write_text(MODELS)
    target = str(tmp_path / "models.py") + ":make"
    assert main(["inspect", target, "-i", "2x3", "--checkpoint", str(path)]) == 0
    out = capsys.readouterr().out
    assert "loads into this model (header checked)" in out
    assert "loaded (4): 0/bias, 0/kernel, 2/bias, 2/kernel" in out
    assert "memory the load needs:\n    per device (its arrays): cpu:0 104 B\n" in out
    assert "    per process (host, at its peak): 0 416 B\n" in out  # arrays, batch, 2 chunks
    assert main(["inspect", target, "-i", "2x5", "--checkpoint", str(path)]) == 1
    out = capsys.readouterr().out
    assert "does not load" in out
    assert "size mismatch for '0/kernel': found shape (3, 4), expected (5, 4)" in out


def test_cli_inspect_checkpoint_of_a_bad_file_is_one_line(tmp_path, capsys):
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "x.safetensors").write_bytes(b"nonsense")
    target = str(tmp_path / "models.py") + ":make"
    assert (
        main(["inspect", target, "-i", "2x3", "--checkpoint", str(tmp_path / "x.safetensors")]) == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("lazyinit inspect: error: --checkpoint") and "\n" not in err
    assert "is not a valid lazyinit checkpoint" in err


def test_the_benchmark_runs_in_quick_mode(capsys):
    from benchmarks import check_checkpoint

    check_checkpoint.main(["--quick"])
    out = capsys.readouterr().out
    assert "check_checkpoint" in out and out.count("MB ") == 2
    assert "check time, largest / smallest file:" in out
