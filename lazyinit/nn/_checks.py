"""Input checks shared by the built-in layers' ``specs``."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigureLayerError, InferShapeError


def known_rank(x: Any) -> int | None:
    """``x.ndim``, or None while ``lazy_state`` asks with an input not seen yet."""
    try:
        return len(x.shape)
    except Exception:
        return None


def expect_min_rank(layer: Any, x: Any, rank: int, what: str) -> None:
    n = known_rank(x)
    if n is not None and n < rank:
        raise InferShapeError(
            f"{type(layer).__name__} expects inputs with at least {rank} dimension(s) ({what}), "
            f"got shape {tuple(x.shape)}."
        )


# ---------------------------------------------------------------------------
# Options of convolutions and pooling, checked when the layer is built.

_LAYOUT_HINT = (
    "lazyinit layers are channels-last, (N, ..., C), by default; for PyTorch's (N, C, ...) "
    "layout pass channels_first=True (li.channels_first(model) sets it on every layer)."
)


def _name(layer: Any) -> str:
    return type(layer).__name__


def as_ints(layer: Any, name: str, value: Any, n: int | None = None) -> int | tuple[int, ...]:
    """``value`` as an int or a tuple of ints (of length ``n`` if given), each at least 1."""
    items = (value,) if isinstance(value, int) else tuple(value)
    if (
        not items
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items)
        or (n is not None and not isinstance(value, int) and len(items) != n)
    ):
        size = f"{n} " if n is not None else ""
        raise ConfigureLayerError(
            f"{_name(layer)}: `{name}`={value!r} must be a positive int or a tuple of {size}"
            "positive ints, one per spatial dimension."
        )
    return value if isinstance(value, int) else items


def as_padding(layer: Any, value: Any) -> str | int | tuple[Any, ...]:
    """'SAME', 'VALID' (any case), an int, or one int or ``(low, high)`` pair per spatial dim."""
    if isinstance(value, str):
        if value.upper() in ("SAME", "VALID"):
            return value.upper()
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    elif isinstance(value, tuple | list):
        items = tuple(tuple(v) if isinstance(v, tuple | list) else v for v in value)
        flat = [d for v in items for d in (v if isinstance(v, tuple) else (v,))]
        pairs_ok = all(not isinstance(v, tuple) or len(v) == 2 for v in items)
        if items and pairs_ok and all(isinstance(d, int) and d >= 0 for d in flat):
            return items
    raise ConfigureLayerError(
        f"{_name(layer)}: `padding`={value!r} must be 'SAME', 'VALID', a non-negative int, or "
        "one int or (low, high) pair per spatial dimension."
    )


def spatial_dims(layer: Any, window: int | tuple[int, ...], x: Any, what: str) -> int:
    """How many spatial dims ``x`` has for ``window``; checks ``x`` is (N, *spatial, C)."""
    n = known_rank(x)
    if isinstance(window, int):
        if n is None:
            raise InferShapeError(f"{_name(layer)} needs the input's rank to infer its shape.")
        if n not in (3, 4, 5):
            raise InferShapeError(
                f"{_name(layer)} expects a batch of 1-3 spatial dims (N, *spatial, C), rank 3-5, "
                f"got shape {tuple(x.shape)}."
            )
        return n - 2
    if n is not None and n != len(window) + 2:
        layout = (
            "(N, C, *spatial)" if getattr(layer, "channels_first", False) else "(N, *spatial, C)"
        )
        raise InferShapeError(
            f"{_name(layer)} with {what} {window} expects inputs of rank {len(window) + 2} "
            f"{layout}, got shape {tuple(x.shape)}."
        )
    return len(window)


def tuple_of(value: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    return (value,) * n if isinstance(value, int) else tuple(value)


def explicit_pads(layer: Any, padding: Any, n: int) -> tuple[tuple[int, int], ...]:
    """Explicit padding as ``n`` (low, high) pairs."""
    items = (padding,) * n if isinstance(padding, int) else padding
    if len(items) != n:
        raise ConfigureLayerError(
            f"{_name(layer)}: `padding`={padding!r} has {len(items)} entries for {n} spatial "
            "dimension(s); give one per dimension or a single int."
        )
    return tuple(p if isinstance(p, tuple) else (p, p) for p in items)


def channel_axis(layer: Any, x: Any) -> int:
    """The channel axis of ``x``: 1 if the layer is ``channels_first``, else the last."""
    return 1 if getattr(layer, "channels_first", False) else -1


def spatial_shape(layer: Any, x: Any) -> tuple[int, ...]:
    return tuple(x.shape[2:] if getattr(layer, "channels_first", False) else x.shape[1:-1])


def expect_window_fits(
    layer: Any,
    x: Any,
    window: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    what: str = "kernel",
) -> None:
    """Raises if the (dilated) ``window`` is larger than the padded input along some dim."""
    if known_rank(x) is None:
        return
    spatial = spatial_shape(layer, x)
    remedy = "kernel_size or dilation" if what == "dilated kernel" else what
    for i, (size, k, (lo, hi)) in enumerate(zip(spatial, window, pads)):
        if k > size + lo + hi:
            raise InferShapeError(
                f"the {what} ({k} along spatial dim {i}) is larger than the "
                f"padded input ({size} + {lo} + {hi} = {size + lo + hi}); input shape "
                f"{tuple(x.shape)}, spatial shape {spatial}. Use a smaller {remedy}, more padding "
                f"or padding='SAME'. {_LAYOUT_HINT}"
            )


def expect_divides(
    layer: Any, x: Any, count: int, total: Any, what: str, name: str, hint: str = _LAYOUT_HINT
) -> None:
    """Raises unless ``count`` divides ``total`` (skipped while ``total`` is unknown)."""
    if known_rank(x) is not None and total % count:
        raise InferShapeError(
            f"{name}={count} does not divide the {what} ({total}); input shape "
            f"{tuple(x.shape)}. Choose {name} dividing {total}. {hint}".rstrip()
        )
