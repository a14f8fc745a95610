"""Input checks shared by the built-in layers' ``specs``."""

from __future__ import annotations

from typing import Any

from ._errors import InferShapeError


def known_rank(x: Any) -> int | None:
    """``x.ndim``, or None while ``lazy_state`` asks with an input not seen yet."""
    try:
        return len(x.shape)
    except Exception:
        return None


def expect_rank(layer: Any, x: Any, rank: int | tuple[int, ...], what: str) -> None:
    """Raises unless ``x`` has ``rank`` dimensions (one of them, for a tuple); ``what`` describes them."""
    n = known_rank(x)
    ranks = (rank,) if isinstance(rank, int) else rank
    if n is not None and n not in ranks:
        raise InferShapeError(
            f"{type(layer).__name__} expects inputs of rank {' or '.join(map(str, ranks))} "
            f"({what}), got shape {tuple(x.shape)}."
        )


def expect_min_rank(layer: Any, x: Any, rank: int, what: str) -> None:
    n = known_rank(x)
    if n is not None and n < rank:
        raise InferShapeError(
            f"{type(layer).__name__} expects inputs with at least {rank} dimension(s) ({what}), "
            f"got shape {tuple(x.shape)}."
        )
