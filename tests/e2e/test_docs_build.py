"""The docs build strictly: no warning, every public name in the API reference, every role a link.

``mkdocs build --strict`` runs here (into a temporary folder), so the README's test command
catches a docs break as CI does. ``docs/hooks/rst_roles.py`` turns a docstring's Sphinx role
(:func:`lazyinit.trace`) into a cross-reference; a role naming nothing documented must fail the
strict build, which a test shows on a temporary copy of the package with one injected.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zlib

import griffe
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs" / "hooks"))
import rst_roles  # noqa: E402  (docs/hooks is no package)

PUBLIC_MODULES = [
    "lazyinit",
    "lazyinit.nn",
    "lazyinit.errors",
    "lazyinit.checkpoint",
    "lazyinit.interop",
    "lazyinit.interop.torch",
    "lazyinit.interop.flax",
    "lazyinit.initializers",
]


def build(root: pathlib.Path, site: pathlib.Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of the project at ``root`` into ``site``."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def inventory(site: pathlib.Path) -> set[str]:
    """The names in the ``objects.inv`` that mkdocstrings writes (Sphinx's format, version 2)."""
    data = (site / "objects.inv").read_bytes()
    header, _, body = data.partition(b"# The remainder of this file is compressed using zlib.\n")
    assert header.startswith(b"# Sphinx inventory version 2"), header[:60]
    return {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines()}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    site = tmp_path_factory.mktemp("site")
    out = build(ROOT, site)
    assert out.returncode == 0, out.stderr[-4000:]
    warnings = [line for line in out.stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == []
    return site


@pytest.mark.slow
def test_every_public_name_is_in_the_api_reference(site):
    names = inventory(site)
    assert "lazyinit.dry_run" in names and "lazyinit.errors.StateMismatchError" in names
    missing = [
        f"{module}.{name}"
        for module in PUBLIC_MODULES
        for name in importlib.import_module(module).__all__
        if f"{module}.{name}" not in names
    ]
    assert missing == [], f"add them to docs/api.md: {missing}"


@pytest.mark.slow
def test_a_docstring_role_is_a_link_in_the_built_docs(site):
    page = (site / "api" / "index.html").read_text()
    # lazyinit.interop.torch's docstring: :class:`~lazyinit.errors.StateMismatchError`
    assert '<a class="autorefs autorefs-internal"' in page
    assert re.search(r'href="#lazyinit\.errors\.StateMismatchError"[^>]*><code>StateMismatch', page)
    assert ":class:" not in page and ":func:" not in page


def inject(path: pathlib.Path, function: str, text: str) -> None:
    """Append ``text`` to the first line of ``function``'s docstring in ``path``."""
    source = path.read_text()
    new, count = re.subn(
        rf'(def {function}\(.*?""".*?)\n', rf"\1 {text}\n", source, count=1, flags=re.S
    )
    assert count == 1, function
    path.write_text(new)


@pytest.mark.slow
def test_a_broken_cross_reference_in_a_docstring_fails_the_strict_build(tmp_path):
    """On a copy: the real mkdocs.yml (its API page only) and lazyinit, two roles injected."""
    shutil.copytree(
        ROOT / "lazyinit", tmp_path / "lazyinit", ignore=shutil.ignore_patterns("*.pyc")
    )
    shutil.copytree(ROOT / "docs" / "hooks", tmp_path / "docs" / "hooks")
    shutil.copy(ROOT / "docs" / "api.md", tmp_path / "docs" / "api.md")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["nav"] = [{"API reference": "api.md"}]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    # a name that never existed, and one that moved (the errors live in lazyinit.errors)
    inject(tmp_path / "lazyinit" / "_dry_run.py", "dry_run", ":func:`lazyinit.no_such_function`.")
    inject(
        tmp_path / "lazyinit" / "_state.py", "load_state", ":class:`lazyinit.StateMismatchError`."
    )

    out = build(tmp_path, tmp_path / "site")
    assert out.returncode != 0
    warnings = [line for line in out.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 2, out.stderr[-4000:]
    text = "\n".join(warnings)
    assert "lazyinit/_dry_run.py" in text and "lazyinit/_state.py" in text  # where to fix it
    assert "Could not find cross-reference target 'lazyinit.no_such_function'" in text
    assert "Could not find cross-reference target 'lazyinit.StateMismatchError'" in text
    assert "Aborted with 2 warnings in strict mode" in out.stdout + out.stderr


def roles_naming_nothing(packages: list[str]) -> list[str]:
    """Each role of every docstring in ``packages`` whose target does not exist, as
    ``'path: role'``; a bare name is looked up from the object, as mkdocstrings does."""
    loader = griffe.GriffeLoader(search_paths=[str(ROOT)])
    modules = [loader.load(name) for name in packages]
    loader.resolve_aliases(implicit=True, external=False)

    def objects(obj):
        yield obj
        for member in obj.members.values():
            if not member.is_alias:
                yield from objects(member)

    def exists(path: str) -> bool:
        try:
            loader.modules_collection.get_member(path)
        except (KeyError, ValueError, griffe.AliasResolutionError):
            return False
        return True

    bad = []
    for obj in (o for module in modules for o in objects(module) if o.docstring):
        for match in rst_roles.ROLE.finditer(obj.docstring.value):
            target = rst_roles.EXPLICIT.sub(r"\g<target>", match["target"]).lstrip("~")
            if target.startswith("."):  # .name: a member of the object; ..name: of its parent
                scope, target = obj, target[1:]
                while target.startswith(".") and scope.parent is not None:
                    scope, target = scope.parent, target[1:]
                target = f"{scope.path}.{target}"
            first, _, rest = target.partition(".")
            try:
                target = ".".join(filter(None, [obj.resolve(first), rest]))
            except griffe.NameResolutionError:
                pass
            if not exists(target):
                bad.append(f"{obj.path}: {match[0]}")
    return bad


def test_every_role_in_a_docstring_names_an_object_that_exists():
    """Private docstrings too (the build checks only what it renders): a name that moved."""
    assert rst_roles.to_links(":class:`~lazyinit.errors.StateMismatchError`, :func:`load`") == (
        "[`StateMismatchError`][lazyinit.errors.StateMismatchError], [`load`][load]"
    )
    assert roles_naming_nothing(["lazyinit", "benchmarks", "examples"]) == []
