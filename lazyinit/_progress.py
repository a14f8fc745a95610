"""Progress bars for long work: ``tqdm`` on a terminal and in Jupyter, nothing elsewhere.

``li.save``, ``li.load`` and dry runs that move more than :data:`THRESHOLD` bytes
(about a gigabyte) show a bar, as Hugging Face's "Loading checkpoint shards"
does, when someone is watching: standard error is a terminal, or the code runs
in a Jupyter kernel (where the bar is a widget if ``ipywidgets`` is installed,
and text otherwise). Logs, pipes and CI get nothing. ``progress=True`` or
``False`` forces the choice either way; ``None`` (every function's default)
decides as above.

Examples:
    >>> from lazyinit import _progress
    >>> with _progress.bar("li.save", 10, progress=False) as advance:
    ...     advance(10)  # no bar: progress=False
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from .errors import InvalidArgumentError

__all__ = ["THRESHOLD", "bar", "check", "wanted", "nbytes"]

THRESHOLD = 1 << 30
"""Work that moves at least this many bytes shows a bar when ``progress=None``."""


def _in_jupyter() -> bool:
    """Whether this runs in a Jupyter kernel (IPython's ZMQ shell), without importing IPython."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def _on_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def interactive() -> bool:
    """Whether someone is watching: standard error is a terminal, or this is a Jupyter kernel."""
    return _on_terminal() or _in_jupyter()


def check(progress: Any, where: str) -> None:
    """Refuses a ``progress=`` that is not True, False or None, naming the function."""
    if progress is not None and not isinstance(progress, bool):
        raise InvalidArgumentError(
            f"{where}: progress must be True (always show a bar), False (never) or None (on a "
            f"terminal or in Jupyter, for work over about a gigabyte); got {progress!r}."
        )


def wanted(total: int, progress: bool | None, where: str = "progress") -> bool:
    """Whether work that moves ``total`` bytes shows a bar: ``progress`` if it says, else
    whether it is long (at least :data:`THRESHOLD` bytes) and someone is watching."""
    check(progress, where)
    if progress is not None:
        return progress
    return total >= THRESHOLD and interactive()


def _tqdm() -> Any:
    if _in_jupyter():
        try:
            import ipywidgets  # noqa: F401  (tqdm's notebook bar is an ipywidgets widget)
            from tqdm.notebook import tqdm as notebook

            return notebook
        except ImportError:
            pass
    from tqdm import tqdm

    return tqdm


@contextlib.contextmanager
def bar(what: str, total: int, progress: bool | None) -> Iterator[Callable[[int], Any]]:
    """A bar for work that moves ``total`` bytes; yields ``advance(n)``, which counts ``n`` more.

    The bar is full when the block ends without an error, however much was
    counted (work done in one call counts nothing until then). When no bar is
    wanted (see :func:`wanted`), ``advance`` does nothing.
    """
    if not wanted(total, progress, what):
        yield _nothing
        return
    with _tqdm()(
        total=total, desc=what, unit="B", unit_scale=True, unit_divisor=1024, leave=False
    ) as shown:
        yield shown.update
        shown.update(total - shown.n)
        shown.refresh()  # drawn full even when the last update came within tqdm's mininterval


def _nothing(n: int) -> None:
    return None


def nbytes(leaves: Iterable[Any]) -> int:
    """The bytes of leaves that have a ``shape`` and a ``dtype`` (arrays, holes of known size);
    a leaf of unknown size or dtype counts nothing."""
    return sum(
        math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
        for leaf in leaves
        if leaf.shape is not None and None not in leaf.shape and leaf.dtype is not None
    )
