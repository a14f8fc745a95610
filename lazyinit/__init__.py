"""lazyinit: PyTorch's lazy modules for JAX, as pure functions.

Layers declare parameter specs from the inputs they see; ``dry_run`` traces a
model abstractly on a sample input and materializes its parameters. The
lifecycle and its guarantees are told once, in :mod:`lazyinit._tracer`.

The package is a core and two wings: the lifecycle core (``lazyinit/_*.py``:
specs, the trace, the load rules, the draw), the layer catalogue
(:mod:`lazyinit.nn`) and checkpoint storage (:mod:`lazyinit.checkpoint`); the
core never imports a wing. Errors live in :mod:`lazyinit.errors`, converters
for PyTorch and flax in :mod:`lazyinit.interop`.
"""

from . import checkpoint as checkpoint
from . import errors as errors
from . import initializers as initializers
from . import nn as nn
from ._buffers import apply as apply
from ._buffers import merge as merge
from ._buffers import partition as partition
from ._buffers import update_buffers as update_buffers
from ._display import describe as describe
from ._dry_run import dry_run as dry_run
from ._dry_run import dry_run_with_report as dry_run_with_report
from ._labels import labels as labels
from ._layer import Layer as Layer
from ._match import Report as Report
from ._materialize import KEY_SCHEME as KEY_SCHEME
from ._materialize import param_key as param_key
from ._paths import nest as nest
from ._plan import plan as plan
from ._recorder import Trace as Trace
from ._reinit import reinit as reinit
from ._sharding import Plan as Plan
from ._spec import Param as Param
from ._spec import Uninitialized as Uninitialized
from ._state import has_uninitialized as has_uninitialized
from ._state import lazy_state as lazy_state
from ._state import load_state as load_state
from ._state import uninitialized_paths as uninitialized_paths
from ._summary import Summary as Summary
from ._summary import summary as summary
from ._trace_cache import clear_cache as clear_cache
from ._tracer import trace as trace
from ._typing import Params as Params
from ._typing import State as State
from .checkpoint import CheckReport as CheckReport
from .checkpoint import TrainingCheckpoints as TrainingCheckpoints
from .checkpoint import check_checkpoint as check_checkpoint
from .checkpoint import load as load
from .checkpoint import save as save
from .nn import AvgPool as AvgPool
from .nn import BatchNorm as BatchNorm
from .nn import Conv as Conv
from .nn import ConvTranspose as ConvTranspose
from .nn import Dropout as Dropout
from .nn import Embedding as Embedding
from .nn import Ensemble as Ensemble
from .nn import Flatten as Flatten
from .nn import GlobalAvgPool as GlobalAvgPool
from .nn import GroupNorm as GroupNorm
from .nn import InstanceNorm as InstanceNorm
from .nn import LayerNorm as LayerNorm
from .nn import Linear as Linear
from .nn import MaxPool as MaxPool
from .nn import MultiHeadAttention as MultiHeadAttention
from .nn import Parallel as Parallel
from .nn import Repeat as Repeat
from .nn import Residual as Residual
from .nn import RMSNorm as RMSNorm
from .nn import Sequential as Sequential
from .nn import channels_first as channels_first
from .nn import lsuv as lsuv
from .nn import mixed_precision as mixed_precision
from .nn import stack_layers as stack_layers
from .nn import unstack_layers as unstack_layers
from .nn import warmup_stats as warmup_stats

__version__ = "0.2.0"

__all__ = [
    # the lifecycle
    "Layer",
    "Param",
    "Uninitialized",
    "lazy_state",
    "dry_run",
    "dry_run_with_report",
    "has_uninitialized",
    "uninitialized_paths",
    "param_key",
    "KEY_SCHEME",
    "trace",
    "Trace",
    "clear_cache",
    "Params",
    "State",
    # loading state
    "load_state",
    "Report",
    "nest",
    # checkpoints
    "checkpoint",
    "save",
    "load",
    "check_checkpoint",
    "CheckReport",
    "TrainingCheckpoints",
    # layers
    "nn",
    *nn.LAYERS,
    "mixed_precision",
    "channels_first",
    "stack_layers",
    "unstack_layers",
    # buffers and training mode
    "apply",
    "partition",
    "merge",
    "update_buffers",
    # surgery and data-dependent init
    "reinit",
    "labels",
    "lsuv",
    "warmup_stats",
    # exploring and planning
    "summary",
    "Summary",
    "describe",
    "plan",
    "Plan",
    # the rest
    "errors",
    "initializers",
]
