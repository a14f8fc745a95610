"""Every ```python block of README.md and docs/*.md runs, in order, in one namespace per page.

A page is one test. It runs in a child process of this interpreter, in an empty
directory (files a page saves land there), with 8 simulated CPU devices so that the
scaling page can build a real mesh (JAX fixes its device count at start-up). A block
that must not run uses another fence (```bash, ```text, ```pycon). A failure names
the page, the block's first line in the page, and the traceback.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)

pytestmark = pytest.mark.slow  # starts Python processes

RUNNER = r"""
import sys, traceback
page, blocks = sys.argv[1], eval(sys.stdin.read())
namespace = {"__name__": "__docs__"}
for line, source in blocks:
    try:
        exec(compile("\n" * (line - 1) + source, page, "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        print(f"\n{page}: the block starting at line {line} failed", file=sys.stderr)
        sys.exit(1)
"""


def blocks(text: str) -> list[tuple[int, str]]:
    """Each python block's source with the page line its code starts on."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def test_blocks_are_found_with_their_line_numbers():
    page = "# t\n\n```python\nx = 1\n```\n\n```bash\nls\n```\n```python\ny = x\n```\n"
    assert blocks(page) == [(4, "x = 1\n"), (11, "y = x\n")]


def test_a_failing_block_names_its_page_and_line(tmp_path):
    out = run_page(
        "broken.md", [(1, "x = 1\n"), (7, "y = x\nraise ValueError('boom')\n")], tmp_path
    )
    assert out.returncode == 1
    assert 'File "broken.md", line 8' in out.stderr and "ValueError: boom" in out.stderr
    assert "broken.md: the block starting at line 7 failed" in out.stderr


def run_page(name: str, page_blocks: list[tuple[int, str]], cwd: pathlib.Path):
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    return subprocess.run(
        [sys.executable, "-c", RUNNER, name],
        input=repr(page_blocks),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_the_docs_pages_exist():
    names = {p.name for p in PAGES}
    for page in [
        "index.md",
        "lifecycle.md",
        "layers.md",
        "loading.md",
        "interop.md",
        "scaling.md",
        "transforms.md",
        "troubleshooting.md",
        "api.md",
    ]:
        assert page in names, page


@pytest.mark.parametrize(
    "page", [p for p in PAGES if "```python" in p.read_text()], ids=lambda p: p.name
)
def test_page_code_runs(page, tmp_path):
    out = run_page(str(page.relative_to(ROOT)), blocks(page.read_text()), tmp_path)
    assert out.returncode == 0, out.stderr[-4000:]


def test_troubleshooting_has_a_section_for_every_error():
    import lazyinit as li

    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    headings = " ".join(line for line in text.splitlines() if line.startswith("## "))
    errors = list(li.errors.__all__)  # the errors, and the warnings lazyinit raises
    kinds = (li.errors.LazyInitError, Warning)
    assert all(issubclass(getattr(li.errors, name), kinds) for name in errors)
    assert "LazyInitError" in errors and len(errors) > 10
    missing = [name for name in errors if f"`{name}`" not in headings and name != "LazyInitError"]
    assert not missing, f"docs/troubleshooting.md has no '## `Name`' heading for {missing}"


def test_the_api_reference_lists_every_public_name():
    import lazyinit as li

    text = (ROOT / "docs" / "api.md").read_text()
    listed = {n.strip() for line in re.findall(r"members: \[(.*)\]", text) for n in line.split(",")}
    modules = {"initializers", "errors", "nn", "checkpoint"}  # documented whole, or by members
    missing = sorted(set(li.__all__) - listed - modules)
    assert not missing, f"add {missing} to a 'members:' list of docs/api.md"


def test_readme_is_short_and_its_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    commands = re.findall(r"^```bash\n(.*?)\n```", readme, re.M | re.S)
    test_command = next(c for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text()
    tail = ci.split("# --- the README's test command, verbatim ---\n")[1]
    assert tail.strip() == test_command.split(" && ", 1)[1].strip()
    for step in ["ruff check", "ruff format --check", "mypy lazyinit", "mkdocs build --strict"]:
        assert step in ci and step in readme, step


def test_readme_links_point_at_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    links = [l for l in re.findall(r"\]\(([^)#]+)\)", readme) if "://" not in l]
    assert len(links) >= 10
    assert [l for l in links if not (ROOT / l).exists()] == []


def test_benchmarks_readme_is_dated_ordered_and_in_plain_words():
    text = (ROOT / "benchmarks" / "README.md").read_text()
    figures = re.findall(r"^### (\d+[a-d]?)\. ", text, re.M)
    assert figures == sorted(figures, key=lambda f: (int(re.match(r"\d+", f)[0]), f)), figures
    assert {"1", "2", "3", "4", "5", "6", "7", "8a", "8d"} <= set(figures)
    runs = re.split(r"^#{2,3} (?=20\d\d-\d\d-\d\d)|^## The full run: ", text, flags=re.M)[1:]
    assert len(runs) >= 3
    for run in runs:  # each dated run says how it was made
        assert re.match(r"20\d\d-\d\d-\d\d, \d\d:\d\d UTC", run), run[:60]
        assert "Command:" in run or "Measured with" in run, run[:200]
    assert "issue" not in text.lower()


def test_every_notebook_is_rendered_in_the_docs():
    config = (ROOT / "mkdocs.yml").read_text()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        link = ROOT / "docs" / "notebooks" / notebook.name
        assert link.resolve() == notebook.resolve(), f"link docs/notebooks/{notebook.name} to it"
        assert f"notebooks/{notebook.name}" in config, f"add {notebook.name} to mkdocs.yml's nav"
