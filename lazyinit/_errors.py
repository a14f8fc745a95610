"""Every error lazyinit raises, in one place.

Each class names what failed (``<Verb><Object>Error``, as flax's ``errors.py``
does), subclasses :class:`LazyInitError` so that ``except li.LazyInitError``
catches them all, and also the builtin a caller would expect (``ValueError``
or ``TypeError``). Messages say what failed, the parameter path, expected
against found, and what to do.
"""

from __future__ import annotations

__all__ = [
    "LazyInitError",
    "UninitializedParamError",
    "InferShapeError",
    "InvalidSpecError",
    "InvalidLayerError",
    "InvalidArgumentError",
    "DuplicateParamError",
    "InitializerError",
    "StateMismatchError",
    "ConvertStateError",
    "InvalidTreeError",
    "ParamsMismatchError",
    "UpdateBuffersError",
    "DeletedParamError",
    "ReadCheckpointError",
    "ReadPickleError",
    "ReadVersionError",
    "WriteCheckpointError",
    "OverwriteCheckpointError",
    "ShardParamError",
    "ReshardStateError",
    "ProcessMismatchError",
    "ConfigureLayerError",
    "RequireKeyError",
    "LazyInitWarning",
    "RescaleLayerError",
    "InvalidKeyError",
]


class LazyInitError(Exception):
    """Base class of every error lazyinit raises."""


class UninitializedParamError(LazyInitError, ValueError):
    """A placeholder was used as if it held a value (before a dry run or load)."""


class InferShapeError(LazyInitError, ValueError):
    """A layer could not infer its parameters or outputs from the sample input.

    Attributes:
      layer_path: the path of the layer the message is located at (set by the tracer, so
        that enclosing layers do not locate it again), or None.
    """

    layer_path: tuple[str, ...] | None = None


class InvalidSpecError(LazyInitError, ValueError):
    """A layer declared a parameter spec that cannot be materialized."""


class InvalidLayerError(LazyInitError, TypeError):
    """A layer was built from arguments it cannot work with."""


class InvalidArgumentError(LazyInitError, TypeError):
    """A lazyinit function or a layer call got an argument of the wrong kind."""


class DuplicateParamError(LazyInitError, ValueError):
    """Two different layers declared parameters at the same path."""


class InitializerError(LazyInitError, ValueError):
    """An initializer raised, or returned something other than one array of the declared shape and
    dtype; the message names the parameter path and the initializer."""


class StateMismatchError(LazyInitError, ValueError):
    """Loaded or existing state disagrees with what the model needs.

    Attributes:
      problems: one line per offending path, all of them, not only the first.
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()):
        super().__init__(message)
        self.problems = problems


class ConvertStateError(StateMismatchError):
    """Another library's state (a PyTorch state dict, flax variables) does not fit the model's layout.

    Raised by :mod:`lazyinit.interop` with every missing, unexpected and
    mis-shaped entry listed in ``problems``; nothing is converted.
    """


class InvalidTreeError(LazyInitError, TypeError):
    """A parameter tree holds a leaf or key that lazyinit cannot address."""


class ParamsMismatchError(LazyInitError, ValueError):
    """A params tree passed to a model does not fit that model (another model's tree?)."""


class UpdateBuffersError(LazyInitError, RuntimeError):
    """A layer updated its buffers outside ``li.apply(..., mutable=True)``."""


class DeletedParamError(LazyInitError, ValueError):
    """A parameter is an array that was deleted or donated to a jit-compiled call."""


class ReadCheckpointError(LazyInitError, ValueError):
    """A file is not a valid lazyinit checkpoint: truncated, corrupt or foreign.

    The only error that reading a file's bytes can raise; its subclasses say why more precisely.
    """


class ReadPickleError(ReadCheckpointError):
    """A pickle-based file (``.pt``, ``.pkl``, ``.ckpt``): lazyinit never unpickles."""


class ReadVersionError(ReadCheckpointError):
    """A checkpoint written by a newer format version than this lazyinit reads."""


class WriteCheckpointError(LazyInitError, ValueError):
    """A tree cannot be saved as it is (an abstract leaf, or a dtype safetensors cannot store)."""


class OverwriteCheckpointError(LazyInitError, FileExistsError):
    """A save would replace an existing file and ``overwrite=True`` was not given."""


class ShardParamError(LazyInitError, ValueError):
    """A parameter cannot be laid out on the mesh: a logical axis without a rule, a rule
    naming a mesh axis the mesh lacks, or a dimension its mesh axes do not divide."""


class ReshardStateError(StateMismatchError):
    """A loaded array is already spread over devices in another layout than the planned one
    (``reshard=True`` moves it and reports it)."""


class ProcessMismatchError(LazyInitError, ValueError):
    """The processes of a multi-process run disagree on the parameters they would materialize."""


class ConfigureLayerError(LazyInitError, ValueError):
    """A layer was built with option values that cannot work (``groups`` not dividing ``out_channels``)."""


class RequireKeyError(LazyInitError, TypeError):
    """A random layer (``Dropout``) was called in training mode without a PRNG ``key``."""


class LazyInitWarning(UserWarning):
    """Something lazyinit did on your behalf that you may want to know about."""


class RescaleLayerError(LazyInitError, ValueError):
    """Data-dependent init (``li.lsuv``) could not bring a layer's output to the target variance:
    the output is constant on the batch, or it did not converge in ``max_iters`` rescalings."""


class InvalidKeyError(InvalidArgumentError):
    """The PRNG key given to a dry run is not one key: a non-key (often the sample passed in the
    key's place), a batch of keys, raw key data of the wrong dtype or shape (or of another PRNG
    implementation than the default), a seed outside the range JAX turns into distinct keys, or
    a deleted key."""
