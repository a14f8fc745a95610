"""Which rules convert a layer: by its type and, for PyTorch, the type of the module at its path.

A lazyinit ``Linear`` is PyTorch's ``nn.Linear`` (weight ``(out, in)``) or Hugging
Face's ``Conv1D`` (weight ``(in, out)``): a square weight cannot tell which, so
the converter is chosen by the module at the layer's path when the module is
given, and by a declaration (``layouts=``) or the layer type's default when
only a state dict is. A layer type that has rules per module type refuses a
module type it has none for, by name, rather than guess.

:class:`Framework` says how one library addresses its state, :class:`Registry`
holds its converters, :class:`Kinds` finds the module type at each layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from .. import _paths
from .._typing import Path
from ._rules import Leaf, Rule

__all__ = ["Converter", "Framework", "Kinds", "NoRule", "Registry", "Shape", "kind_name"]

Shape = tuple[int | None, ...]
Converter = Callable[..., list[Rule]]
"""``converter(layer, leaves) -> list[Rule]``: how one layer type's parameters map to entries."""


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _key(kind: Any) -> str:
    """A registry key: a class by its qualified name, a name as it is."""
    return kind if isinstance(kind, str) else _qualified(kind)


def kind_name(kind: Any) -> str:
    """How messages name a module type: ``Conv1D``, ``GPT2Attention``."""
    return kind.rsplit(".", 1)[-1] if isinstance(kind, str) else kind.__name__


def _matches(key: str, kind: Any) -> bool:
    """Whether registry ``key`` serves ``kind`` (a class: exactly this class; a declared name)."""
    if isinstance(kind, type):
        return key == _qualified(kind) if "." in key else key == kind.__name__
    return key == kind or key.rsplit(".", 1)[-1] == kind


class NoRule(Exception):
    """A layer type with rules per module type met a module type it has none for."""

    def __init__(self, layer: Any, kind: Any, known: list[str]):
        super().__init__(kind)
        self.layer, self.kind, self.known = layer, kind, known


class Registry:
    """Converters by lazyinit layer type, and optionally by the other library's module type.

    ``add(layer_type, converter)`` serves the layer type whatever the module;
    ``add(layer_type, converter, kind)`` only beside a module of type ``kind``
    (a class, or a class name such as ``'GPT2Attention'``), and, with
    ``default=True``, also when no module is known. ``aliases`` name module
    types for declarations (``'conv1d'``).
    """

    def __init__(self, aliases: Mapping[str, str] | None = None):
        self._by_layer: dict[type, dict[str | None, Converter]] = {}
        self.aliases = dict(aliases or {})

    def add(
        self,
        layer_type: type,
        converter: Converter,
        kind: Any = None,
        *,
        default: bool = False,
        replace: bool = True,
    ) -> None:
        table = self._by_layer.setdefault(layer_type, {})
        keys = [None] if kind is None else [_key(kind)] + ([None] if default else [])
        for key in keys:
            if replace or key not in table:
                table[key] = converter

    def knows(self, layer: Any) -> bool:
        """Whether some converter serves ``layer``'s type (it then claims the params below it)."""
        return any(cls in self._by_layer for cls in type(layer).__mro__)

    def find(self, layer: Any, kind: Any) -> Converter | None:
        """The converter of ``layer`` beside a module of type ``kind`` (None: not known).

        Raises:
          NoRule: the layer type has rules per module type, and none for ``kind``.
        """
        for cls in type(layer).__mro__:
            table = self._by_layer.get(cls)
            if not table:
                continue
            pairs = [k for k in table if k is not None]
            if kind is None or not pairs:
                if None in table:
                    return table[None]
                raise NoRule(layer, None, pairs)
            kind = self.aliases.get(kind, kind) if isinstance(kind, str) else kind
            for candidate in kind.__mro__ if isinstance(kind, type) else (kind,):
                for key in pairs:
                    if _matches(key, candidate):
                        return table[key]
            raise NoRule(layer, kind, pairs)
        return None


@dataclasses.dataclass
class Kinds:
    """The other library's module type at each layer: the module's own type when a module was
    given, else the one declared for the layer's path (``layouts=``, ``dtype=``-style patterns:
    the most specific wins), else unknown. ``used`` records the patterns that served a layer."""

    modules: Mapping[str, Any] | None = None
    declared: Mapping[str, Any] | None = None
    used: set[str] = dataclasses.field(default_factory=set)

    def of(self, at: Path, module: str) -> tuple[Any, str | None]:
        """``(kind, pattern)`` at lazyinit layer path ``at`` (module path ``module``); the
        pattern is None for a module's own type or an unknown one."""
        if self.modules is not None and module in self.modules:
            return type(self.modules[module]), None
        if not self.declared:
            return None, None
        pattern = _paths.resolve({p: p for p in self.declared}, at)  # the most specific one
        return (None, None) if pattern is None else (self.declared[pattern], pattern)


@dataclasses.dataclass(frozen=True)
class Framework:
    """How one library addresses its state.

    Attributes:
      name: ``'PyTorch'``, ``'flax'``: how messages name the library.
      noun: how messages name its state (``'a PyTorch state dict'``).
      entry: how messages name one entry of it (``'state dict key'``).
      registry: the converters (:class:`Registry`).
      default: the rule for a parameter of a layer that has no converter.
      locate: ``(module_path, rel) -> path`` of an entry in the other library's state.
      show: how an entry's path prints (``'fc1.weight'``, ``'params/fc1/kernel'``).
      split: how a module path written by the user splits into names (``rename=``).
      hint: ``(found_shape, expected_shape, planned) -> str``, a hint for a size mismatch of
        an entry of ``planned`` (the rule's record, ``None`` for an entry no rule expects).
      notes: ``(planned, expected, found) -> lines``: advice on the whole import beside the
        rule lines (``expected`` and ``found`` map each entry to its shape).
      module_of: the module path of an entry's path (for the ``rename=`` hint).
      stacks: whether copy ``i`` of ``li.Repeat``/``li.Ensemble`` is the other library's
        module ``i`` (an ``nn.ModuleList``), each converted by the block's rules.
      register: the function that registers converters, for messages.
      importer, exporter: the public functions' names, for messages.
    """

    name: str
    noun: str
    entry: str
    registry: Registry
    default: Callable[[str, Leaf], Rule]
    locate: Callable[[Path, Path], Path]
    show: Callable[[Path], str]
    split: Callable[[str], Path]
    hint: Callable[[Shape | None, Shape | None, Any], str]
    notes: Callable[[list[Any], Mapping[Path, Shape], Mapping[Path, Shape]], list[str]] = (
        lambda planned, expected, found: []
    )
    module_of: Callable[[Path], Path] = lambda path: path[:-1]
    stacks: bool = False
    register: str = "register"
    importer: str = "the import"
    exporter: str = "the export"
