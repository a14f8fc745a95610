"""The cyclic garbage collector, paused while a checkpoint's many small objects are built.

Reading or writing a checkpoint of 100,000 leaves allocates millions of
short-lived dicts, lists and tuples (the JSON header, the path tuples, the
plan). None of them forms a reference cycle, so reference counting frees
them all, but each burst of allocations triggers the cyclic collector, whose
full passes walk every live object: they took 40% of ``li.load`` and 25% of
``li.save`` at that size (``benchmarks/checkpoint_leaves.py``). Pausing loses
nothing: a cycle made meanwhile is collected by the first pass after the
block. The collector is re-enabled only if it was enabled when the block
began, so a caller's own ``gc.disable()`` stands.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["paused"]


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Disables the cyclic garbage collector for the block; restores its previous state."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
