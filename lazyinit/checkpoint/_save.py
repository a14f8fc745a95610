"""``save``: one parameter tree to one portable, checksummed file, atomically.

The bytes are described in :mod:`lazyinit.checkpoint._format` and written a piece at a
time by :mod:`lazyinit.checkpoint._write`; :func:`lazyinit.load` reads them back against a
template.
"""

from __future__ import annotations

import os

from .. import _paths
from .._spec import Uninitialized
from .._typing import Params
from ..errors import WriteCheckpointError
from . import _atomic, _format, _gc, _write

__all__ = ["save"]


def save(
    path: str | os.PathLike[str] | bytes,
    tree: Params | Uninitialized,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
) -> None:
    """Saves a parameter tree, a lazy state or any nested dict of arrays to one file, atomically.

    Leaves may be arrays (``jax.Array``, numpy) of any dtype safetensors
    stores (floats incl. bfloat16 and float8, ints, bool, complex64), of any
    shape including scalars and zero-size ones, and
    :class:`~lazyinit.Uninitialized` placeholders, whose known dimensions
    and dtype are kept (their device is not: it belongs to the machine).

    Args:
      path: the file to write, conventionally ``*.safetensors``.
      tree: a nested dict with string keys, or a lone placeholder: the lazy
        state of a layer that names its parameters only from its input (a
        ``Conv`` with an int ``kernel_size``), which loads back as itself.
      overwrite: replace ``path`` if it exists. Either way, the replacement is
        atomic: readers see the old file or the new one, never a mix.
      progress: show a progress bar (``True``), never (``False``), or, by default,
        on a terminal or in Jupyter when the tree holds about a gigabyte or more.

    The arrays are written as they are, a piece at a time: a numpy or CPU array
    from its own memory, a GPU array a window of rows at a time, a sharded array
    shard by shard. A save needs no second copy of the tree, only a few MiB.

    Raises:
      OverwriteCheckpointError: ``path`` exists and ``overwrite`` is false.
      WriteCheckpointError: a leaf cannot be saved (abstract, unsupported
        dtype), listing every one; nothing is written.
      InvalidArgumentError: ``progress`` is not True, False or None.
      DeletedParamError: a leaf was deleted or donated to a jit-compiled call.
      InvalidTreeError: a leaf is not an array, a key is not a plain string, or
        the tree contains itself or nests deeper than 100 levels.

    A key that a file cannot hold (the reserved top-level ``__metadata__``
    leaf, text with a lone surrogate) and a traced value (``li.save`` inside
    ``jax.jit``) are WriteCheckpointErrors; whatever ``li.save`` accepts,
    ``li.load`` reads back identically (a boolean array is written as the
    bytes 0 and 1, whatever bytes numpy holds for True). Temporary files left by killed saves
    of the same ``path`` are deleted first (never a live writer's).

    Examples:
        >>> import jax, jax.numpy as jnp, lazyinit as li, tempfile, os
        >>> model = li.Linear(4)
        >>> params = li.dry_run(model, jax.random.key(0), jnp.ones((2, 3)))
        >>> path = os.path.join(tempfile.mkdtemp(), "linear.safetensors")
        >>> li.save(path, params)
        >>> tree, report = li.load(path, like=li.lazy_state(model))
        >>> jax.tree.map(jnp.shape, tree), report.loaded
        ({'bias': (4,), 'kernel': (3, 4)}, ('bias', 'kernel'))
    """
    path = os.fsdecode(path)
    if path.lower().endswith(_format.PICKLE_SUFFIXES):
        raise WriteCheckpointError(
            f"Refusing to write {path!r}: its suffix says pickle, which li.save does not write. "
            "Name it *.safetensors."
        )
    if os.path.exists(path) and not overwrite:
        raise _atomic.exists_error(path)
    with _gc.paused():
        flat = _paths.flatten_state(tree, "tree to save")
        _write.write(path, flat, tree, overwrite=overwrite, progress=progress)
