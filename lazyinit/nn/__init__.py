"""The layer catalogue: lazyinit's layers, combinators, activations and their tools.

``import lazyinit as li`` re-exports the layers and combinators at the top level
(``li.Linear``); the activations live here (``li.nn.relu``), next to the helpers
layers of your own may use (:func:`compute_in`). Every layer is a frozen
dataclass that declares its parameters from the input it sees (see
:class:`lazyinit.Layer`); none of them reaches into the lifecycle core's private
parts.
"""

from ._activations import *  # noqa: F403
from ._activations import __all__ as _activations
from ._attention import MultiHeadAttention as MultiHeadAttention
from ._batch_norm import BatchNorm as BatchNorm
from ._batch_norm import InstanceNorm as InstanceNorm
from ._combinators import Parallel as Parallel
from ._combinators import Residual as Residual
from ._conv import Conv as Conv
from ._conv_transpose import ConvTranspose as ConvTranspose
from ._dropout import Dropout as Dropout
from ._embedding import Embedding as Embedding
from ._ensemble import Ensemble as Ensemble
from ._linear import Linear as Linear
from ._lsuv import lsuv as lsuv
from ._lsuv import warmup_stats as warmup_stats
from ._norm import GroupNorm as GroupNorm
from ._norm import LayerNorm as LayerNorm
from ._norm import RMSNorm as RMSNorm
from ._pooling import AvgPool as AvgPool
from ._pooling import GlobalAvgPool as GlobalAvgPool
from ._pooling import MaxPool as MaxPool
from ._precision import compute_in as compute_in
from ._precision import mixed_precision as mixed_precision
from ._repeat import Repeat as Repeat
from ._repeat import stack_layers as stack_layers
from ._repeat import unstack_layers as unstack_layers
from ._reshape import Flatten as Flatten
from ._sequential import Sequential as Sequential
from ._switch import channels_first as channels_first

LAYERS = (
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
    "Sequential",
    "Residual",
    "Parallel",
    "Repeat",
    "Ensemble",
)
"""The layer and combinator classes, which ``lazyinit`` re-exports at the top level."""

__all__ = [
    *LAYERS,
    "compute_in",
    "mixed_precision",
    "channels_first",
    "stack_layers",
    "unstack_layers",
    "lsuv",
    "warmup_stats",
    *_activations,
]
