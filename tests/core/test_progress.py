"""Progress bars on long work (issue 20): shown on a terminal or in Jupyter for about a gigabyte
or more, never in logs or CI, forced either way with ``progress=``."""

import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tqdm

import lazyinit as li
from lazyinit import _progress

TREE = {"layer": {"kernel": np.ones((64, 64), np.float32), "bias": np.zeros(64, np.float32)}}


@pytest.fixture
def watched(monkeypatch):
    """Standard error is a terminal, and a gigabyte is 1 KiB: li.save and li.load of a small
    tree count as long work someone is watching."""
    monkeypatch.setattr(_progress, "_on_terminal", lambda: True)
    monkeypatch.setattr(_progress, "THRESHOLD", 1024)


def test_progress_true_shows_a_bar_for_save_load_and_dry_run(tmp_path, capsys):
    li.save(tmp_path / "t.safetensors", TREE, progress=True)
    assert "li.save:" in capsys.readouterr().err
    li.load(tmp_path / "t.safetensors", progress=True)
    assert "li.load: 100%" in capsys.readouterr().err
    li.dry_run(li.Linear(3), jax.random.key(0), jnp.ones((2, 4)), progress=True)
    assert "li.dry_run: 100%" in capsys.readouterr().err


def test_no_bar_when_output_is_not_a_terminal_whatever_the_size(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(_progress, "THRESHOLD", 1024)  # the tree is "long" work
    assert not _progress.interactive()  # pytest captures standard error
    li.save(tmp_path / "t.safetensors", TREE)
    li.load(tmp_path / "t.safetensors")
    li.dry_run(li.Linear(64), jax.random.key(0), jnp.ones((2, 64)))
    assert capsys.readouterr().err == ""


def test_a_watched_long_save_load_and_dry_run_show_a_bar(tmp_path, capsys, watched):
    li.save(tmp_path / "t.safetensors", TREE)
    assert "li.save:" in capsys.readouterr().err
    li.load(tmp_path / "t.safetensors")
    assert "li.load:" in capsys.readouterr().err
    li.dry_run(li.Linear(64), jax.random.key(0), jnp.ones((2, 64)))
    assert "li.dry_run:" in capsys.readouterr().err


def test_progress_false_and_short_work_show_nothing_even_when_watched(tmp_path, capsys, watched):
    li.save(tmp_path / "t.safetensors", TREE, progress=False)
    li.load(tmp_path / "t.safetensors", progress=False)
    li.dry_run(li.Linear(64), jax.random.key(0), jnp.ones((2, 64)), progress=False)
    li.save(tmp_path / "small.safetensors", {"w": np.ones(8, np.float32)})  # 32 bytes: short
    li.dry_run(li.Linear(3), jax.random.key(0), jax.ShapeDtypeStruct((2, 4), jnp.float32))
    assert capsys.readouterr().err == ""


def test_the_decision(monkeypatch):
    big = _progress.THRESHOLD
    monkeypatch.setattr(_progress, "_on_terminal", lambda: False)
    assert not _progress.wanted(big, None)
    assert _progress.wanted(1, True) and not _progress.wanted(big, False)
    monkeypatch.setattr(_progress, "_on_terminal", lambda: True)
    assert _progress.wanted(big, None) and not _progress.wanted(big - 1, None)


def test_a_jupyter_kernel_counts_as_watched_and_gets_tqdm(monkeypatch):
    class ZMQInteractiveShell:  # the shell class of a Jupyter kernel
        pass

    monkeypatch.setattr(_progress, "_on_terminal", lambda: False)
    assert not _progress.interactive()
    fake = types.SimpleNamespace(get_ipython=ZMQInteractiveShell)
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert _progress.interactive()
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # without widgets: the text bar
    assert _progress._tqdm() is tqdm.tqdm


@pytest.mark.parametrize("bad", ["yes", 1, 0.5])
def test_a_bad_progress_is_refused_naming_the_function(tmp_path, bad):
    path = tmp_path / "t.safetensors"
    with pytest.raises(li.errors.InvalidArgumentError, match=r"li\.save: progress must be True"):
        li.save(path, TREE, progress=bad)
    assert not path.exists()
    li.save(path, TREE)
    with pytest.raises(li.errors.InvalidArgumentError, match=r"li\.load: progress must be True"):
        li.load(path, progress=bad)
    abstract = jax.ShapeDtypeStruct((2, 4), jnp.float32)
    with pytest.raises(
        li.errors.InvalidArgumentError, match=rf"li\.dry_run: progress must be .*got {bad!r}"
    ):
        li.dry_run(li.Linear(3), jax.random.key(0), abstract, progress=bad)
