"""Docstrings cite objects Sphinx-style (:func:`lazyinit.trace`); the docs turn each into a link.

A griffe extension (listed under mkdocstrings' ``extensions`` in ``mkdocs.yml``): before
mkdocstrings renders a docstring, each role becomes a Markdown cross-reference,
``:func:`~lazyinit.trace``` -> ``[`trace`][lazyinit.trace]`` (``~`` shows the last name only;
``:func:`text <target>``` shows ``text``). With ``scoped_crossrefs`` a bare name resolves the
way Python would see it from the documented object (``:func:`load``` in ``lazyinit.load``'s
module is that module's ``load``). A target that names nothing documented stays unresolved:
autorefs warns "Could not find cross-reference target", which fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(?P<target>[^`]+)`")
EXPLICIT = re.compile(r"^(?P<title>.+?)\s*<(?P<target>[^<>]+)>$")


def link(match: re.Match[str]) -> str:
    """One role as a Markdown cross-reference."""
    target = match["target"].strip()
    if explicit := EXPLICIT.match(target):
        title, target = explicit["title"], explicit["target"]
    elif target.startswith("~"):
        target = target[1:]
        title = target.rsplit(".", 1)[-1]
    else:
        title = target
    return f"[`{title}`][{target}]"


def to_links(text: str) -> str:
    """Every role of ``text`` as a Markdown cross-reference."""
    return ROLE.sub(link, text)


class RstRoles(griffe.Extension):
    """Rewrites the roles of every docstring griffe loads."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_links(obj.docstring.value)
