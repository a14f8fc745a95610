"""The root PRNG key of a dry run: what is accepted where the key belongs, and why not.

``li.dry_run(model, key, *sample)`` takes the key right after the model. It
may be a typed key (``jax.random.key(0)``), a raw key of the default PRNG
implementation (``jax.random.PRNGKey(0)``, ``uint32[2]`` for threefry) or an
int seed. :func:`as_key` checks it first, before anything is traced, so that
a mistake (the sample passed in the key's place, a batch of keys, a deleted
key, a seed too large to be a seed) is one clear :class:`InvalidArgumentError`
instead of a JAX error from deep inside the draw. The abstract and concrete
dry runs accept exactly the same keys.

**The key an initializer gets** (:func:`for_draw`) is its per-path threefry key
with the same key data, typed as :data:`FUSED_THREEFRY`: the threefry2x32 hash
written as plain element-wise operations. JAX lowers threefry on the CPU as a
loop over its five rounds that keeps two ``uint32`` arrays as big as the output
(and the counters) alive: drawing a 64 MiB kernel needed 192 MiB of temporaries.
Written out, XLA fuses the counters, the hash and the initializer's arithmetic
into one loop that writes the output directly, so a draw needs no temporaries
beyond its output, on one device or on each device's shard. The bits are
threefry's, bit for bit (the key scheme's values do not change: golden tests
pin them); splitting and folding keys is JAX's own threefry. Raw ``uint32``
keys, other PRNG implementations and ``jax_threefry_partitionable=False`` draw
through JAX as they are.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import define_prng_impl, threefry_prng_impl

from . import _paths
from .errors import InvalidArgumentError

__all__ = ["as_key", "for_draw", "FUSED_THREEFRY"]

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


# ---------------------------------------------------------------------------
# The key an initializer gets: threefry, written so that XLA fuses the draw.

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x: jax.Array, bits: int) -> jax.Array:
    return (x << np.uint32(bits)) | (x >> np.uint32(32 - bits))


def _threefry2x32(k1: Any, k2: Any, x1: jax.Array, x2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011), element-wise: a key is injected
    every four rounds, the rotations alternate between two sets of four."""
    ks = (k1, k2, k1 ^ k2 ^ _PARITY)
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = _rotate_left(x2, r) ^ x1
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    """JAX's partitionable threefry bits: the hash of each element's row-major index."""
    size = math.prod(shape)
    if not shape or size >= 2**32 or not jax.config.jax_threefry_partitionable:  # type: ignore[attr-defined]
        return threefry_prng_impl.random_bits(key, bit_width, shape)
    strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    low = jax.lax.broadcasted_iota(jnp.uint32, shape, 0) * np.uint32(strides[0])
    for d in range(1, len(shape)):  # each index < 2**32: the high word of the counter is 0
        low = low + jax.lax.broadcasted_iota(jnp.uint32, shape, d) * np.uint32(strides[d])
    b1, b2 = _threefry2x32(key[0], key[1], jnp.zeros(shape, jnp.uint32), low)
    if bit_width == 64:
        return (b1.astype(jnp.uint64) << np.uint64(32)) | b2.astype(jnp.uint64)
    bits = b1 ^ b2
    return bits if bit_width == 32 else bits.astype(np.dtype(f"uint{bit_width}"))


FUSED_THREEFRY = define_prng_impl(
    key_shape=threefry_prng_impl.key_shape,
    seed=threefry_prng_impl.seed,
    split=threefry_prng_impl.split,
    random_bits=_random_bits,
    fold_in=threefry_prng_impl.fold_in,
    name="lazyinit_threefry2x32",
    tag="lzfry",
)
"""Threefry2x32 whose random bits XLA fuses into the draw: the same bits as JAX's."""


def for_draw(key: Any) -> Any:
    """``key`` as the initializer gets it: a typed threefry key becomes the same key data
    typed as :data:`FUSED_THREEFRY` (see the module doc); any other key is returned as it is.

    Examples:
        >>> import jax, lazyinit as li
        >>> from lazyinit._keys import for_draw
        >>> key = jax.random.key(0)
        >>> a = jax.random.normal(key, (3,))
        >>> bool((jax.random.normal(for_draw(key), (3,)) == a).all())
        True
    """
    if _is_typed(key) and str(jax.random.key_impl(key)) == "threefry2x32":
        return jax.random.wrap_key_data(jax.random.key_data(key), impl=FUSED_THREEFRY)
    return key
