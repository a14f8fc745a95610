"""lazyinit: PyTorch's lazy modules for JAX, as pure functions.

Layers declare parameter specs from the inputs they see; ``dry_run`` traces a
model abstractly on a sample input and materializes its parameters. See
:mod:`lazyinit._tracer` for the lifecycle and its guarantees.
"""

from . import errors as errors
from . import initializers as initializers
from ._activations import *  # noqa: F403
from ._activations import __all__ as _activations
from ._attention import MultiHeadAttention as MultiHeadAttention
from ._batch_norm import BatchNorm as BatchNorm
from ._batch_norm import InstanceNorm as InstanceNorm
from ._buffers import apply as apply
from ._buffers import merge as merge
from ._buffers import partition as partition
from ._buffers import update_buffers as update_buffers
from ._checkpoint import CheckReport as CheckReport
from ._checkpoint import check_checkpoint as check_checkpoint
from ._checkpoint import load as load
from ._checkpoint import save as save
from ._combinators import Parallel as Parallel
from ._combinators import Residual as Residual
from ._conv import Conv as Conv
from ._conv_transpose import ConvTranspose as ConvTranspose
from ._display import describe as describe
from ._dropout import Dropout as Dropout
from ._dry_run import dry_run as dry_run
from ._dry_run import dry_run_with_report as dry_run_with_report
from ._embedding import Embedding as Embedding
from ._ensemble import Ensemble as Ensemble
from ._errors import *  # noqa: F403
from ._errors import __all__ as _errors
from ._labels import labels as labels
from ._layer import Layer as Layer
from ._linear import Linear as Linear
from ._lsuv import lsuv as lsuv
from ._lsuv import warmup_stats as warmup_stats
from ._match import Report as Report
from ._materialize import KEY_SCHEME as KEY_SCHEME
from ._materialize import param_key as param_key
from ._norm import GroupNorm as GroupNorm
from ._norm import LayerNorm as LayerNorm
from ._norm import RMSNorm as RMSNorm
from ._paths import nest as nest
from ._plan import plan as plan
from ._pooling import AvgPool as AvgPool
from ._pooling import GlobalAvgPool as GlobalAvgPool
from ._pooling import MaxPool as MaxPool
from ._precision import mixed_precision as mixed_precision
from ._recorder import Call as Call
from ._recorder import Trace as Trace
from ._reinit import reinit as reinit
from ._repeat import Repeat as Repeat
from ._repeat import stack_layers as stack_layers
from ._repeat import unstack_layers as unstack_layers
from ._reshape import Flatten as Flatten
from ._sequential import Sequential as Sequential
from ._sharding import Plan as Plan
from ._sharding import memory_plan as memory_plan
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
from ._training_state import TrainingCheckpoints as TrainingCheckpoints
from ._typing import Params as Params
from ._typing import State as State

__version__ = "0.1.0"

__all__ = [
    "initializers",
    "apply",
    "merge",
    "partition",
    "update_buffers",
    "save",
    "load",
    "check_checkpoint",
    "CheckReport",
    "TrainingCheckpoints",
    "describe",
    "dry_run",
    "dry_run_with_report",
    "reinit",
    "lsuv",
    "warmup_stats",
    "labels",
    "errors",
    "Layer",
    "Linear",
    "Conv",
    "ConvTranspose",
    "BatchNorm",
    "InstanceNorm",
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "Embedding",
    "MultiHeadAttention",
    "Dropout",
    "MaxPool",
    "AvgPool",
    "GlobalAvgPool",
    "Flatten",
    "Residual",
    "Parallel",
    "KEY_SCHEME",
    "param_key",
    "Sequential",
    "Repeat",
    "mixed_precision",
    "Ensemble",
    "stack_layers",
    "unstack_layers",
    "Plan",
    "memory_plan",
    "plan",
    "Param",
    "Uninitialized",
    "Report",
    "has_uninitialized",
    "lazy_state",
    "load_state",
    "nest",
    "uninitialized_paths",
    "Summary",
    "summary",
    "Call",
    "Trace",
    "clear_cache",
    "trace",
    "Params",
    "State",
    *_activations,
    *_errors,
]
