"""What a PyTorch source holds: its state dict, its modules by path, and its tied entries.

A source is an ``nn.Module``, a state dict or a file. A module says more than
its state dict: the type of the module at each path (which layout a weight is
in: ``nn.Linear``'s or Hugging Face ``Conv1D``'s) and which entries are one
tensor under two names (``lm_head.weight is transformer.wte.weight``).

Entries are read lazily (:class:`Entry`): their shape and dtype are known up
front, and an entry becomes a numpy array, a view of the tensor's own memory
where its dtype allows, only when its rule converts it, so that a state is
never copied whole. ``torch`` is imported only when a torch object is met.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._typing import Path
from ..errors import InvalidArgumentError

__all__ = ["Source", "Entry", "read_state_dict", "source_of", "entries", "split"]


def split(key: str) -> Path:
    """``'h.0.attn.weight' -> ('h', '0', 'attn', 'weight')``."""
    return tuple(key.split(".")) if key else ()


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _is_module(x: Any) -> bool:
    return callable(getattr(x, "state_dict", None)) and callable(getattr(x, "named_modules", None))


def read_state_dict(source: Any) -> dict[str, Any]:
    """The state dict of ``source``: an ``nn.Module``, a mapping, or a file path.

    A file is read with ``torch.load(path, map_location='cpu', weights_only=True)``,
    or with ``safetensors`` when its name ends in ``.safetensors``.

    Examples:
        >>> import torch
        >>> from lazyinit.interop.torch import read_state_dict
        >>> sorted(read_state_dict(torch.nn.Linear(3, 2)))
        ['bias', 'weight']
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return dict(load_file(path))
        import torch

        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, Mapping):
            raise InvalidArgumentError(
                f"{path!r} holds a {type(loaded).__name__}, not a state dict. Save "
                "module.state_dict() with torch.save and pass that file."
            )
        return dict(loaded)
    if hasattr(source, "state_dict") and callable(source.state_dict):
        return dict(source.state_dict())
    if isinstance(source, Mapping):
        return dict(source)
    raise InvalidArgumentError(
        f"Expected a torch nn.Module, a state dict or a file path, got {type(source).__name__}."
    )


@dataclasses.dataclass(frozen=True)
class Source:
    """A source read: its state dict, and when it is a module, its modules by dotted path and
    its tied entries as ``(copy, source)`` pairs."""

    state: dict[str, Any]
    modules: dict[str, Any] | None = None
    ties: tuple[tuple[str, str], ...] = ()


def source_of(source: Any) -> Source:
    """Reads ``source`` (an ``nn.Module``, a state dict or a file path)."""
    if not _is_module(source):
        return Source(read_state_dict(source))
    state = dict(source.state_dict())
    return Source(state, dict(source.named_modules()), _tied(state))


def _tied(state: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Entries that are one tensor under several names: the same memory, shape and strides."""
    first: dict[tuple, str] = {}
    pairs = []
    for key, t in state.items():
        try:
            if t.numel() == 0:
                continue
            where = (
                t.untyped_storage().data_ptr(),
                t.storage_offset(),
                tuple(t.shape),
                tuple(t.stride()),
                t.dtype,
            )
        except Exception:  # an uninitialized (lazy) parameter, or not a tensor
            continue
        if where in first:
            pairs.append((key, first[where]))
        else:
            first[where] = key
    return tuple(pairs)


class Entry:
    """One entry of a state dict, converted only when :meth:`array` is called.

    ``shape`` and ``dtype`` are what the entry becomes (``dtype=`` applied; int64
    held as int32 where JAX has no 64-bit types), known without touching its values.
    """

    __slots__ = ("value", "shape", "dtype")

    def __init__(self, value: Any, shape: tuple[int, ...], dtype: np.dtype):
        self.value, self.shape, self.dtype = value, shape, dtype

    def array(self) -> np.ndarray:
        """The entry's values: a view of the tensor's memory when the dtype is unchanged."""
        array = _numpy_view(self.value)
        return array if array.dtype == self.dtype else array.astype(self.dtype)


def _numpy_view(value: Any) -> np.ndarray:
    if _is_torch(value):
        import torch

        value = value.detach()
        if value.device.type != "cpu":
            value = value.cpu()
        if value.dtype == torch.bfloat16:
            import ml_dtypes

            return value.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return value.numpy()
    return np.asarray(value)


def _dtype_of(value: Any) -> np.dtype:
    if _is_torch(value):
        import torch

        if value.dtype == torch.bfloat16:
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        return torch.empty((), dtype=value.dtype).numpy().dtype
    return np.dtype(value.dtype)


def entries(state: Mapping[str, Any], dtype: Any, problems: list[str]) -> dict[Path, Entry]:
    """Every entry of ``state`` by path, unconverted; what cannot be converted is a line in
    ``problems`` (a lazy module's uninitialized parameter, float64 without ``dtype=``, ...)."""
    out: dict[Path, Entry] = {}
    x64 = bool(jax.config.jax_enable_x64)  # type: ignore[attr-defined]
    for key, value in state.items():
        if not isinstance(key, str) or not key:
            problems.append(f"key {key!r} is not a non-empty string")
            continue
        if _is_torch(value):
            import torch

            if isinstance(value, torch.nn.parameter.UninitializedTensorMixin):  # type: ignore[attr-defined]
                problems.append(
                    f"{key!r} is an uninitialized PyTorch parameter: run the lazy torch module on "
                    "a sample batch first (its dry run), then take its state_dict()"
                )
                continue
        elif not hasattr(value, "shape") or not hasattr(value, "dtype"):
            problems.append(f"{key!r} is a {type(value).__name__}, not a tensor")
            continue
        found = _dtype_of(value)
        want = found
        if dtype is not None and jnp.issubdtype(found, jnp.floating):
            want = np.dtype(dtype)
        elif found.itemsize == 8 and not x64 and found.kind == "f":
            problems.append(
                f"{key!r} is {found.name}, which JAX holds only with jax_enable_x64: "
                "pass dtype='float32' to convert it"
            )
            continue
        elif found.itemsize == 8 and not x64 and found.kind in "iu":
            want = np.dtype(np.int32 if found.kind == "i" else np.uint32)
            array = _numpy_view(value)  # integer entries are small: counters, position ids
            if array.size and (
                array.min() < np.iinfo(want).min or array.max() > np.iinfo(want).max
            ):
                problems.append(f"{key!r} holds {found.name} values beyond {want.name}")
                continue
        out[split(key)] = Entry(value, tuple(value.shape), want)
    return out
