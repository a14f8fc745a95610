"""Every error lazyinit raises, in one place: the set a caller would ``except``.

Each class names what failed (``<Verb><Object>Error``, as flax's ``errors.py``
does), subclasses :class:`LazyInitError` so that ``except LazyInitError``
catches them all, and also the builtin a caller would expect (``ValueError``
or ``TypeError``). Messages say what failed, the parameter path, expected
against found, and what to do; ``docs/troubleshooting.md`` has a section per class.

The load rules' errors own their words: :class:`StateMismatchError` is built
from the rule lines of ``lazyinit._match`` (one line per offending path,
worded once for every entry point) and formats the message itself.

>>> import lazyinit as li
>>> from lazyinit import errors
>>> issubclass(errors.StateMismatchError, errors.LazyInitError)
True
>>> e = errors.StateMismatchError("Cannot load 'a.safetensors'", ["missing key 'bias'"])
>>> print(e)
Cannot load 'a.safetensors' (1 problem); nothing was changed:
  missing key 'bias'
>>> e.problems
("missing key 'bias'",)
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "LazyInitError",
    "UninitializedParamError",
    "InferShapeError",
    "DeriveStructureError",
    "InvalidSpecError",
    "InitializerError",
    "ConfigureLayerError",
    "InvalidArgumentError",
    "DuplicateParamError",
    "StateMismatchError",
    "ReshardStateError",
    "InvalidTreeError",
    "UpdateBuffersError",
    "DeletedParamError",
    "ReadCheckpointError",
    "ReadPickleError",
    "ReadVersionError",
    "WriteCheckpointError",
    "OverwriteCheckpointError",
    "ShardParamError",
    "ProcessMismatchError",
    "RescaleLayerError",
    "NonFiniteParamWarning",
]


class LazyInitError(Exception):
    """Base class of every error lazyinit raises."""


class UninitializedParamError(LazyInitError, ValueError):
    """A placeholder was used as if it held a value (before a dry run or load)."""


class InferShapeError(LazyInitError, ValueError):
    """A layer could not infer its parameters or outputs from the sample input, or a function
    that needs a sample input got none.

    Attributes:
      layer_path: the path of the layer the message is located at (set by the tracer, so
        that enclosing layers do not locate it again), or None.
    """

    layer_path: tuple[str, ...] | None = None


class DeriveStructureError(LazyInitError, ValueError):
    """A layer's ``__call__`` indexes ``params`` other than its fields declare: a field child
    called with another sub-dict than ``params[field]`` (or with the whole ``params``) without
    saying so in ``children()``. Without a sample, lazyinit derives paths from the fields, so
    the derived paths and the dry run's would disagree."""


class InvalidSpecError(LazyInitError, ValueError):
    """A layer declared a parameter spec that cannot be materialized."""


class InitializerError(LazyInitError, ValueError):
    """An initializer raised, or returned something other than one array of the declared shape and
    dtype; the message names the parameter path and the initializer."""


class NonFiniteParamWarning(RuntimeWarning):
    """An initializer drew NaN or infinite values; the message names each parameter path and
    its initializer. ``li.dry_run(..., nonfinite="raise")`` makes it an :class:`InitializerError`,
    ``nonfinite="ignore"`` skips the check (numpy warns with a ``RuntimeWarning`` for the same
    kind of problem)."""


class ConfigureLayerError(LazyInitError, TypeError, ValueError):
    """A layer was built from arguments it cannot work with: a child that is not a layer (a
    flax module, a non-callable), or option values that cannot work (``groups`` not dividing
    ``out_channels``)."""


class InvalidArgumentError(LazyInitError, TypeError):
    """A lazyinit function or a layer call got an argument of the wrong kind, or lacks one it
    needs: a PRNG key that is not one key (often the sample passed in the key's place), a
    random layer (``Dropout``) called in training mode without ``key=``, an option that does
    not fit the others."""


class DuplicateParamError(LazyInitError, ValueError):
    """Two different layers declared parameters at the same path."""


def _lines(what: str, problems: tuple[str, ...], advice: str) -> str:
    n = len(problems)
    text = f"{what} ({n} problem{'' if n == 1 else 's'}); nothing was changed:\n  "
    return text + "\n  ".join(problems) + (f"\n{advice}" if advice else "")


class StateMismatchError(LazyInitError, ValueError):
    """State disagrees with what the model needs: a loaded or existing state, a checkpoint,
    another library's state (a PyTorch state dict, flax variables), or params passed to a call.

    Built from every rule line that applies (``size mismatch for 'fc1/kernel': found shape
    (10, 7), expected (10, 3)``), all at once, never only the first; the words of each line
    are those of ``lazyinit._match``, the same at every entry point.

    Attributes:
      problems: one line per offending path.
    """

    def __init__(self, what: str, problems: Iterable[object], advice: str = ""):
        self.problems = tuple(str(p) for p in problems)
        super().__init__(_lines(what, self.problems, advice))

    def __reduce__(self) -> tuple:  # pickles (and crosses processes) with its problems
        return (_rebuild, (type(self), str(self), self.problems))


def _rebuild(cls: type[StateMismatchError], message: str, problems: tuple) -> StateMismatchError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.problems = problems
    return error


class ReshardStateError(StateMismatchError):
    """A loaded array is already spread over devices in another layout than the planned one
    (``reshard=True`` moves it and reports it)."""


class InvalidTreeError(LazyInitError, TypeError):
    """A parameter tree holds a leaf or key that lazyinit cannot address."""


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


class ProcessMismatchError(LazyInitError, ValueError):
    """The processes of a multi-process run disagree on the parameters they would materialize."""


class RescaleLayerError(LazyInitError, ValueError):
    """Data-dependent init (``li.lsuv``) could not bring a layer's output to the target variance:
    the output is constant on the batch, or it did not converge in ``max_iters`` rescalings."""
