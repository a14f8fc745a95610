"""Checkpoint storage: one portable safetensors file per tree, and orbax directories for training.

* :func:`save` and :func:`load` write and read one file (``_format.py`` holds its
  bytes): atomic, checksummed, never unpickled, checked against a ``like`` tree by the
  load rules of the core (``lazyinit/_match.py``); :func:`check_checkpoint` answers
  from the header alone, memory included. A save streams the arrays as they are
  (``_write.py``, ``_atomic.py``); a load plans where each tensor goes (``_pieces.py``)
  and reads it, or this process's pieces of it, straight into its arrays
  (``_transfer.py``), every byte checked as it is read (``_read.py``).
* :class:`TrainingCheckpoints` keeps the last few steps of a training run (params,
  optimizer state, step) through orbax-checkpoint.

``lazyinit`` re-exports all four at the top level (``li.save``).
"""

from ._load import CheckReport as CheckReport
from ._load import check_checkpoint as check_checkpoint
from ._load import load as load
from ._save import save as save
from ._training import TrainingCheckpoints as TrainingCheckpoints

__all__ = ["save", "load", "check_checkpoint", "CheckReport", "TrainingCheckpoints"]
