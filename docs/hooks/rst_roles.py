"""mkdocs hook: docstrings cite objects Sphinx-style (:func:`lazyinit.trace`); show the name only.

mkdocstrings renders ``:func:`x``` as ``:func:<code>x</code>``; the role prefix is dropped.
"""

import re

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):(?=<code>)")


def on_page_content(html, **kwargs):
    return ROLE.sub("", html)
