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
    "DuplicateParamError",
    "InitializerError",
    "StateMismatchError",
    "InvalidTreeError",
    "ParamsMismatchError",
    "UpdateBuffersError",
    "LazyInitWarning",
]


class LazyInitError(Exception):
    """Base class of every error lazyinit raises."""


class UninitializedParamError(LazyInitError, ValueError):
    """A placeholder was used as if it held a value (before a dry run or load)."""


class InferShapeError(LazyInitError, ValueError):
    """A layer could not infer its parameters or outputs from the sample input."""


class InvalidSpecError(LazyInitError, ValueError):
    """A layer declared a parameter spec that cannot be materialized."""


class InvalidLayerError(LazyInitError, TypeError):
    """A layer was built from arguments it cannot work with."""


class DuplicateParamError(LazyInitError, ValueError):
    """Two different layers declared parameters at the same path."""


class InitializerError(LazyInitError, ValueError):
    """An initializer returned an array of another shape or dtype than declared."""


class StateMismatchError(LazyInitError, ValueError):
    """Loaded or existing state disagrees with what the model needs.

    Attributes:
      problems: one line per offending path, all of them, not only the first.
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()):
        super().__init__(message)
        self.problems = problems


class InvalidTreeError(LazyInitError, TypeError):
    """A parameter tree holds a leaf or key that lazyinit cannot address."""


class ParamsMismatchError(LazyInitError, ValueError):
    """A params tree passed to a model does not fit that model (another model's tree?)."""


class UpdateBuffersError(LazyInitError, RuntimeError):
    """A layer updated its buffers outside ``li.apply(..., mutable=True)``."""


class LazyInitWarning(UserWarning):
    """Something lazyinit did on your behalf that you may want to know about."""
