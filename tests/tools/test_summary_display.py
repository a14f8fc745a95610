"""``li.summary`` displays once in Jupyter: its text is the table, not rich's side output.

Inside a notebook kernel rich's ``Console`` detects Jupyter and displays what it prints as
a notebook output of its own instead of writing to its file. ``str(summary)`` (also the
``text/plain`` of a cell ending in ``li.summary(...)``) was then ``''`` and the table showed
twice. Here Jupyter is simulated by making rich's detection answer yes; the notebooks
(``tests/e2e/test_notebooks.py``) check the real kernel's outputs.
"""

import jax
import jax.numpy as jnp
import pytest
import rich.console
import rich.jupyter

import lazyinit as li

X = jax.ShapeDtypeStruct((4, 3), jnp.float32)


def model():
    return li.Sequential([li.Linear(5), li.nn.relu, li.Linear(2)])


@pytest.fixture
def in_jupyter(monkeypatch):
    """rich believes it runs in a notebook, as it does in an ipykernel."""
    monkeypatch.setattr(rich.console, "_is_jupyter", lambda: True)
    assert rich.console.Console().is_jupyter  # the simulation takes effect


def test_str_is_the_table_in_jupyter(in_jupyter):
    text = str(li.summary(model(), X))
    assert text.lstrip().startswith("Sequential summary"), text
    assert "kernel: float32[3,5]" in text, text
    assert "32 parameters in 4 arrays" in text, text


def test_str_and_repr_agree_in_and_out_of_jupyter(monkeypatch):
    s = li.summary(model(), X)
    outside = str(s)
    monkeypatch.setattr(rich.console, "_is_jupyter", lambda: True)
    assert str(s) == outside == repr(s)


def test_nothing_is_displayed_while_rendering_text(in_jupyter, monkeypatch):
    shown = []
    monkeypatch.setattr(rich.jupyter, "display", lambda segments, text: shown.append(text))
    s = li.summary(model(), X)
    str(s), repr(s), s._repr_html_()
    assert shown == []


def test_html_is_one_table_with_every_row():
    html = li.summary(model(), X)._repr_html_()
    assert html.count("<table") == 1
    assert html.count("<tr>") == 1 + 3 + 1  # header; Sequential and its two Linears; footer
    assert "Sequential summary" in html and "32" in html
