"""Which libraries are installed, and each one's builder of the three models."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .common import LIBRARIES, Impl, Sizes

_MODULES = {
    "jax": "benchmarks.models_jax",
    "lazyinit": "benchmarks.models_lazyinit",
    "flax": "benchmarks.models_flax",
    "haiku": "benchmarks.models_haiku",
    "equinox": "benchmarks.models_equinox",
}
_NEEDS = {"flax": "flax", "haiku": "haiku", "equinox": "equinox"}


def available() -> tuple[str, ...]:
    """The libraries of :data:`LIBRARIES` that are installed (haiku and equinox are optional)."""
    return tuple(
        lib for lib in LIBRARIES if lib not in _NEEDS or importlib.util.find_spec(_NEEDS[lib])
    )


def build(lib: str, model: str, sizes: Sizes, layers: int | None = None) -> Impl:
    module: Any = importlib.import_module(_MODULES[lib])
    return module.build(model, sizes, layers)


FIGURES: dict[str, str] = {
    "memory-convert": "benchmarks.convert_memory",  # from_torch_state_dict's peak memory
}
"""Figures run on their own, by name: the module whose ``main(argv)`` prints the table
(``python -m <module>``, ``--quick`` for a smoke test)."""
