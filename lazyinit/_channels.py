"""Noticing a channels-first sample read as channels-last.

lazyinit's layers are channels-last, ``(N, *spatial, C)``, as flax's; PyTorch's are
channels-first, ``(N, C, *spatial)``. A PyTorch-layout sample, ``(2, 3, 32, 32)``, fed
to a channels-last ``Conv`` does not fail there: the conv takes 32 input channels from
the width and convolves over the 3 colour channels as if they were rows, and the error,
if any, comes layers later. :func:`misread` recognizes the pattern from a layer and the
input it read, and :func:`hint` says what to do; the tracer adds it to an ``InferShapeError`` that
follows in the same trace (the calls before the failure are in the trace's record, so a
cached layer is seen as well as a new one), and :func:`lazyinit.describe` to the layer.

The pattern, kept narrow so that it never fires on a channels-last model: the layer has
a ``channels_first`` option and it is off (a protocol on the layer's fields, not a
list of types), the input has 1-3 spatial dims, its axis 1 is small (at most
:data:`FEW`, as colour or stereo channels are) and smaller than its last axis, and the
last axis, read as the channel count, equals a spatial size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _paths
from ._typing import Path

__all__ = ["misread", "hint", "FEW"]

FEW = 4
"""The most channels a channels-first sample's axis 1 is taken to hold (RGBA, stereo, grey)."""


def misread(layer: Any, args: Any) -> tuple[tuple[int, ...], int, int] | None:
    """``(shape, channels, axis)`` when ``layer`` read a channels-first-looking input as
    channels-last (``axis`` is the spatial axis of the same size as ``channels``), else None.
    ``args`` are the call's positional inputs; the first one is read."""
    if not hasattr(layer, "channels_first") or layer.channels_first:
        return None
    shape = getattr(args[0], "shape", None) if isinstance(args, tuple | list) and args else None
    if shape is None or not 3 <= len(shape) <= 5:
        return None
    if not all(isinstance(d, int | np.integer) for d in shape):
        return None  # symbolic dims: nothing to compare
    shape = tuple(int(d) for d in shape)
    channels, second = shape[-1], shape[1]
    if not (second <= FEW and second < channels and channels in shape[2:-1]):
        return None
    return shape, channels, 2 + shape[2:-1].index(channels)


def hint(layer: Any, path: Path, args: Any) -> str:
    """The sentence an error adds when :func:`misread` sees the pattern, else ``""``."""
    seen = misread(layer, args)
    if seen is None:
        return ""
    shape, channels, axis = seen
    return (
        f"The sample may be channels-first: {type(layer).__name__} at {_paths.join(path)!r} read "
        f"its input {shape} as (N, ..., C), taking {channels} channels from the last axis (the "
        f"size of axis {axis} too) while axis 1 holds only {shape[1]}. For PyTorch's (N, C, ...) "
        "layout, call model = li.channels_first(model)."
    )
