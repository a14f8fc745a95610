"""Which libraries are installed, each one's builder of the three models, and the figures that
run as modules of their own."""

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


# Figures that are a module's ``main(argv)`` (``--quick`` for a smoke test), by name. The
# ``memory-*`` ones measure peak memory in fresh processes (issue 20).
FIGURES = {
    "memory-init": "benchmarks.memory_init",
    "memory-checkpoint": "benchmarks.memory_checkpoint",
    "memory-convert": "benchmarks.convert_memory",
    "big-trees": "benchmarks.big_trees",
}


def run_figure(name: str, argv: list[str] | None = None) -> None:
    """Runs the figure ``name`` of :data:`FIGURES`; it prints its tables."""
    module: Any = importlib.import_module(FIGURES[name])
    module.main(argv)
