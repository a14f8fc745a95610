"""The notebooks run top to bottom on a fresh kernel with clean outputs, twice in one folder.

Each notebook executes with nbclient on a kernel started from this very
interpreter (``sys.executable -m ipykernel_launcher``, through a kernelspec
written for the test), so the notebooks use the environment under test, not
whatever ``python3`` kernel a machine has installed. A failing cell fails the
test with the cell's source and traceback; then every output is checked as a
reader would see it: no error output, no empty ``text/plain``, nothing shown twice.
"""

import json
import pathlib
import sys

import pytest

pytestmark = pytest.mark.slow  # starts Python processes

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "lazyinit-test-python"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory):
    """A JUPYTER_PATH whose only kernelspec runs this interpreter."""
    home = tmp_path_factory.mktemp("jupyter")
    spec = home / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "lazyinit tests",
                "language": "python",
                "env": {"PYTHONPATH": str(ROOT)},
            }
        )
    )
    return {"JUPYTER_PATH": str(home), "JUPYTER_PLATFORM_DIRS": "1"}


def test_the_four_notebooks_exist_and_are_stored_without_outputs():
    import nbformat

    names = {p.stem for p in NOTEBOOKS}
    assert {"quickstart", "from_pytorch", "training", "scale"} <= names
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name


def execute(path: pathlib.Path, folder: pathlib.Path):
    """``path`` run top to bottom on a fresh kernel whose working directory is ``folder``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=300,
        resources={"metadata": {"path": str(folder)}},  # files a notebook writes go here
    )
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{e}", pytrace=False)
    return nb


def shown(nb) -> list[tuple[str, list[dict[str, str | None]]]]:
    """What each code cell shows a reader: its stdout (however the kernel split it into chunks)
    and each displayed object. Not stderr, where tqdm's bar prints timings, nor treescope's HTML,
    which embeds a compressed payload with random element ids (its text/plain is compared)."""
    keep = ("text/plain", "text/html", "image/png")
    cells = []
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        stdout = "".join(
            o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout"
        )
        shown = []
        for out in (o for o in cell.outputs if o.output_type in ("display_data", "execute_result")):
            data = {k: out.data.get(k) for k in keep}
            if "treescope" in (data["text/html"] or ""):
                data["text/html"] = None
            shown.append(data)
        cells.append((stdout, shown))
    return cells


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_twice_in_one_folder_and_shows_the_same(
    path, kernel_env, monkeypatch, tmp_path
):
    """Run all, then run all again in the same folder (a reader does): the second run must not
    find what the first left (checkpoints to resume), and neither leaves a file behind, in the
    notebook's folder or in the temporary directory."""
    folder, scratch = tmp_path / "notebooks", tmp_path / "tmp"
    folder.mkdir(), scratch.mkdir()
    for name, value in {**kernel_env, "TMPDIR": str(scratch)}.items():
        monkeypatch.setenv(name, value)
    first = execute(path, folder)
    left = sorted(p.name for p in [*folder.iterdir(), *scratch.iterdir()])
    assert left == [], f"{path.name} left {left} behind"
    problems = [
        f"cell {i}: {p}" for i, cell in enumerate(first.cells) for p in output_problems(cell)
    ]
    assert not problems, f"{path.name}:\n" + "\n".join(problems)
    summaries = [c for c in first.cells if c.cell_type == "code" and ends_in_summary(c.source)]
    if path.stem == "quickstart":
        assert summaries, "the quickstart shows li.summary"
    for cell in summaries:  # shown once: one HTML table, with the table as its text
        displayed = [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")]
        assert len(displayed) == 1, cell.source
        assert 'class="lazyinit-summary"' in displayed[0].data["text/html"], cell.source
        assert "summary" in displayed[0].data["text/plain"].splitlines()[0], cell.source

    second = execute(path, folder)
    left = sorted(p.name for p in [*folder.iterdir(), *scratch.iterdir()])
    assert left == [], f"{path.name} left {left} behind on its second run"
    for i, (a, b) in enumerate(zip(shown(first), shown(second), strict=True)):
        assert a == b, f"{path.name}: code cell {i} shows something else on a second run"


def ends_in_summary(source: str) -> bool:
    lines = [line for line in source.strip().splitlines() if not line.startswith("#")]
    return bool(lines) and lines[-1].startswith("li.summary(")


def output_problems(cell) -> list[str]:
    """What a reader would see as wrong in one executed cell's outputs.

    An error output; a displayed object whose ``text/plain`` is empty (what a console or an
    editor shows); the same object shown twice (two outputs whose text agrees, or one text
    inside another: a library that prints itself while being displayed).
    """
    if cell.cell_type != "code":
        return []
    problems, texts = [], []
    for out in cell.outputs:
        if out.output_type == "error":
            problems.append(f"error output {out.ename}: {out.evalue}")
        elif out.output_type in ("display_data", "execute_result"):
            text = out.get("data", {}).get("text/plain")
            if text is None or not text.strip():
                problems.append(f"{out.output_type} with an empty text/plain: {text!r}")
            else:
                texts.append(" ".join(text.split()))
    for i, a in enumerate(texts):
        for b in texts[i + 1 :]:
            if a in b or b in a:
                problems.append(f"displayed twice: {a[:120]!r}")
    return problems


def test_output_checks_catch_an_empty_text_a_double_display_and_an_error():
    import nbformat

    def cell(*outputs):
        return nbformat.v4.new_code_cell("x", outputs=list(outputs))

    def shown(kind, text, html="<table></table>"):
        data = {"text/plain": text, "text/html": html}
        if kind == "execute_result":
            return nbformat.v4.new_output(kind, data=data, execution_count=1)
        return nbformat.v4.new_output(kind, data=data)

    table = "LazyMLP summary\n path layer\n fc1 Linear"
    # li.summary before the fix: rich displayed the table, then the result's text was ''.
    before = cell(shown("display_data", table, "<pre>...</pre>"), shown("execute_result", ""))
    assert [p.split(":")[0] for p in output_problems(before)] == [
        "execute_result with an empty text/plain",
    ]
    twice = cell(shown("display_data", table), shown("execute_result", table))
    assert output_problems(twice) == [f"displayed twice: {' '.join(table.split())!r}"]
    error = cell(nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=[]))
    assert output_problems(error) == ["error output ValueError: bad"]
    assert output_problems(cell(shown("execute_result", table))) == []
