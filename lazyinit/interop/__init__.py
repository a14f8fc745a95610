"""Meet users where they are: PyTorch state dicts and flax modules and params.

* :mod:`lazyinit.interop.torch`: ``from_torch_state_dict`` and
  ``to_torch_state_dict`` convert between PyTorch state dicts and lazyinit
  params, layer by layer. ``torch`` is imported only when they run.
* :mod:`lazyinit.interop.flax`: ``FlaxModule`` wraps any ``flax.linen.Module``
  as a lazyinit layer whose parameters the dry run infers;
  ``from_flax_variables`` and ``to_flax_variables`` convert between flax
  variables and the params of lazyinit's own layers. ``NnxModule`` wraps a
  ``flax.nnx`` module; ``nnx_params`` and ``update_nnx`` move params out of
  and into an nnx model's state.

A flat file of joined names (a safetensors file) nests with ``li.nest``.

Both submodules are imported on first use: ``import lazyinit.interop.torch``.
Converters for your own layers (and for other libraries' modules: GPT-2's
attention) are lists of :class:`Rule`, small values that compose: :func:`same`,
:func:`permute`, :func:`reshape`, :func:`linear` (a weight in ``nn.Linear``'s or
``Conv1D``'s layout), :func:`fused` (q/k/v packed in one entry), :func:`rotary`
(another rotary layout of q/k) and :func:`extra`, registered with each
submodule's ``register``.
"""

from ._rules import Leaf as Leaf
from ._rules import Rule as Rule
from ._rules import extra as extra
from ._rules import fused as fused
from ._rules import linear as linear
from ._rules import permute as permute
from ._rules import reshape as reshape
from ._rules import rotary as rotary
from ._rules import same as same

__all__ = ["Leaf", "Rule", "extra", "fused", "linear", "permute", "reshape", "rotary", "same"]
