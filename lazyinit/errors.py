"""Every error lazyinit raises: the set a caller would ``except``.

All subclass :class:`LazyInitError` and the builtin a caller would expect
(``ValueError`` or ``TypeError``); each class's docstring says when it is
raised. They are also re-exported at the top level (``li.StateMismatchError``).

>>> import lazyinit as li
>>> from lazyinit import errors
>>> issubclass(errors.StateMismatchError, errors.LazyInitError)
True
>>> errors.StateMismatchError is li.StateMismatchError
True
"""

from ._errors import *  # noqa: F403
from ._errors import __all__ as __all__
