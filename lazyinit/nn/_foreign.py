"""Modules of other libraries passed where a lazyinit layer goes: refused, naming the wrapper.

A ``flax.nnx`` or ``flax.linen`` module is callable, so a combinator would
otherwise call it as a plain function: its parameters would never reach the
params tree (never trained, never saved) and nothing would say so.
"""

from __future__ import annotations

import sys
from typing import Any

from ..errors import ConfigureLayerError

__all__ = ["refuse_foreign"]

_WRAPPERS = (
    ("flax.nnx", "lazyinit.interop.flax.NnxModule(module)"),
    ("flax.linen", "lazyinit.interop.flax.FlaxModule(module)"),
)


def refuse_foreign(where: str, obj: Any) -> None:
    """Raises :class:`ConfigureLayerError` if ``obj`` is a flax module, naming the wrapper to use."""
    if not (type(obj).__module__ or "").startswith("flax"):
        return
    for name, wrapper in _WRAPPERS:
        library = sys.modules.get(name)
        if library is not None and isinstance(obj, library.Module):
            raise ConfigureLayerError(
                f"{where} is a {name} module ({type(obj).__name__}); called as a plain function "
                f"its parameters would never reach the params tree. Wrap it: {wrapper}."
            )
