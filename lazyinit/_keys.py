"""The root PRNG key of a dry run: what is accepted where the key belongs, and why not.

``li.dry_run(model, key, *sample)`` takes the key right after the model. It
may be a typed key (``jax.random.key(0)``), a raw key of the default PRNG
implementation (``jax.random.PRNGKey(0)``, ``uint32[2]`` for threefry) or an
int seed. :func:`as_key` checks it first, before anything is traced, so that
a mistake (the sample passed in the key's place, a batch of keys, a deleted
key, a seed too large to be a seed) is one clear :class:`InvalidArgumentError`
instead of a JAX error from deep inside the draw. The abstract and concrete
dry runs accept exactly the same keys.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from . import _paths
from .errors import InvalidArgumentError

__all__ = ["as_key"]

_EXAMPLE = "li.dry_run(model, jax.random.key(0), x)"


def _seed_range() -> tuple[int, int]:
    """Seeds JAX turns into distinct keys: 64-bit with x64 on, else int32 or uint32 values."""
    return (-(2**63), 2**63) if jax.config.read("jax_enable_x64") else (-(2**31), 2**32)


def _describe(key: Any) -> str:
    if not (hasattr(key, "shape") and hasattr(key, "dtype")):
        return type(key).__name__
    dtype = key.dtype if _is_typed(key) else np.dtype(key.dtype).name
    return f"{type(key).__name__} {dtype}{list(key.shape)}"


def _is_typed(key: Any) -> bool:
    return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


def _raw_shape() -> tuple[int, ...]:
    """The shape of a raw key of the default PRNG implementation (``(2,)`` for threefry)."""
    return tuple(jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape)


def _not_a_key(key: Any) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"key must be a jax.random.key(...), a raw jax.random.PRNGKey(...) or an int seed, got "
        f"{_describe(key)}. The argument after the model is the key and the sample inputs "
        f"follow it: {_EXAMPLE}."
    )


def _check_seed(key: int) -> None:
    low, high = _seed_range()
    if not low <= key < high:
        hint = (
            ""
            if jax.config.read("jax_enable_x64")
            else " (64-bit types are off; with jax.config.update('jax_enable_x64', True) "
            "any int64 seed works)"
        )
        raise InvalidArgumentError(
            f"key: the int seed {key if abs(key) < 10**30 else f'of {len(str(key))} digits'} is "
            f"outside [{low}, {high}), the seeds JAX turns into distinct keys{hint}. Use a "
            "smaller seed, e.g. seed % 2**32."
        )


def _check_array(key: Any, *, abstract: bool) -> None:
    if _paths.is_deleted(key):
        raise InvalidArgumentError(
            "key: the PRNG key was deleted or donated to a jit-compiled call "
            "(donate_argnums). Pass a live key, e.g. jax.random.key(0)."
        )
    if _is_typed(key):
        if key.shape != ():
            raise InvalidArgumentError(
                f"key: got a batch of {key.shape} keys ({_describe(key)}); a dry run takes one "
                "key and derives every parameter's key from it by path. Pass one key, e.g. "
                "keys[0]; to initialize several models, call li.dry_run once per key "
                "(or jax.vmap over it)."
            )
        return
    raw = _raw_shape()
    impl = jax.config.jax_default_prng_impl  # type: ignore[attr-defined]
    if np.dtype(key.dtype) == np.uint32 and tuple(key.shape) == raw:
        return
    if np.dtype(key.dtype) == np.uint32 and key.ndim >= 1 and tuple(key.shape[-1:]) == raw:
        raise InvalidArgumentError(
            f"key: got a batch of raw keys ({_describe(key)}); a dry run takes one key. Pass "
            "one key, e.g. keys[0]."
        )
    if np.dtype(key.dtype) == np.uint32 and tuple(key.shape) in ((2,), (4,)):
        raise InvalidArgumentError(
            f"key: got raw key data uint32{list(key.shape)}, but the default PRNG "
            f"implementation {impl!r} uses raw keys of shape {raw}. Raw keys are accepted "
            "only for the default implementation: pass a typed key, e.g. "
            "jax.random.wrap_key_data(raw, impl='threefry2x32'), or jax.random.key(0)."
        )
    if key.shape in ((2,), (4,)) and np.issubdtype(np.dtype(key.dtype), np.integer):
        raise InvalidArgumentError(
            f"key: raw key data must be uint32{list(raw)} (what jax.random.PRNGKey gives), "
            f"got {_describe(key)}. Pass jax.random.key(seed), or convert the data with "
            "jnp.asarray(raw, jnp.uint32)."
        )
    raise _not_a_key(key)


def as_key(key: Any, *, abstract: bool = False) -> Any:
    """The root key from a typed key, a raw key or an int seed, checked; see the module doc.

    An abstract dry run draws nothing, so it checks the key exactly as the
    concrete one does but returns an int seed as it is, without building a key.

    Raises:
      InvalidArgumentError: anything else, saying what was found and what to pass.

    Examples:
        >>> import jax
        >>> from lazyinit._keys import as_key
        >>> as_key(7).shape, as_key(7, abstract=True)
        ((), 7)
        >>> try:
        ...     as_key(jax.numpy.ones((2, 3)))
        ... except InvalidArgumentError as e:
        ...     print(e)
        key must be a jax.random.key(...), a raw jax.random.PRNGKey(...) or an int seed, got ArrayImpl float32[2, 3]. The argument after the model is the key and the sample inputs follow it: li.dry_run(model, jax.random.key(0), x).
    """
    if isinstance(key, (bool, np.bool_)):
        raise InvalidArgumentError(
            f"key must be a jax.random.key(...) or an int seed, got the bool {key!r}: {_EXAMPLE}."
        )
    if isinstance(key, (int, np.integer)):
        _check_seed(int(key))
        return key if abstract else jax.random.key(int(key))
    if isinstance(key, jax.ShapeDtypeStruct) and abstract:
        _check_array(key, abstract=abstract)
        return key
    if isinstance(key, (jax.Array, np.ndarray)):
        _check_array(key, abstract=abstract)
        return key
    raise _not_a_key(key)
