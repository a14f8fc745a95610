"""``TrainingCheckpoints``: resumable training state through orbax-checkpoint.

:func:`lazyinit.save` writes one portable file of one parameter tree, for
sharing weights, lazy states and exports. A training run needs more: the
params *and* the optimizer state, the step and the buffers, saved every few
steps, the last few kept, sharded arrays written by every host and read back
onto their shardings. That is orbax's job; this module is a thin layer over
its ``CheckpointManager`` that adds lazyinit's checks: a state holding
placeholders or deleted (donated) arrays is refused by path before anything
is written, and a restore compares every path, shape and dtype with the
target first, listing every problem at once.

::

    ckpts = li.TrainingCheckpoints("runs/exp1", keep=3)
    state = {"params": params, "opt_state": opt_state, "step": jnp.asarray(0)}
    for step in range(start, steps):
        state = train_step(state, batch)
        ckpts.save(step, state)             # every call, or every N with save_every=N
    ...
    state = ckpts.restore(like=state)       # latest step, onto like's shardings

A run killed in the middle of a save leaves orbax's temporary directory and,
if it died after finishing a step but before deleting the oldest, more steps
than ``keep``. Opening the directory again cleans both up, unless another
live ``TrainingCheckpoints`` holds it (each holds an advisory lock on
``<directory>/.lazyinit.lock`` while open): a live writer's files are never
touched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

from .. import _match, _paths
from .._spec import Uninitialized
from ..errors import (
    DeletedParamError,
    InvalidTreeError,
    UninitializedParamError,
    WriteCheckpointError,
)

__all__ = ["TrainingCheckpoints"]


def _flat(tree: Any, what: str = "training state") -> dict[str, Any]:
    """``{'/'-joined path: leaf}`` of any pytree (optax states are tuples, not dicts).

    Raises:
      InvalidTreeError: a key is empty or contains ``/``, so that two leaves
        would share one path (``{'a/b': x, 'a': {'b': y}}``).
    """
    try:
        leaves = jax.tree_util.tree_flatten_with_path(
            tree, is_leaf=lambda x: isinstance(x, Uninitialized)
        )[0]
    except (ValueError, TypeError) as e:  # JAX sorts dict keys: 1 and '1' cannot be ordered
        where = _unsortable(tree)
        if where is None:
            raise
        raise InvalidTreeError(
            f"The {what} has a dict at {where!r} whose keys are of different types "
            "(such as 1 and '1'), which JAX cannot order into one tree. Use keys of one type, "
            "e.g. all strings."
        ) from e
    out: dict[str, Any] = {}
    bad: list[str] = []
    for path, leaf in leaves:
        names = [jax.tree_util.keystr((k,), simple=True) for k in path]
        for i, name in enumerate(names):
            if not name or "/" in name:
                bad.append(
                    f"key {name!r} under {_paths.join(tuple(names[:i]))!r}: names must be "
                    "non-empty strings without '/' (it separates path components)"
                )
                break
        else:
            out["/".join(names)] = leaf
    if bad:
        raise InvalidTreeError(
            f"The {what} cannot be addressed by path:\n  " + "\n  ".join(dict.fromkeys(bad))
        )
    if len(out) != len(leaves):  # e.g. the dict keys 0 and '0'
        raise InvalidTreeError(f"The {what} has two leaves at one path; rename one of them.")
    return out


def _unsortable(tree: Any, prefix: str = "") -> str | None:
    """The path of the first dict in ``tree`` whose keys cannot be sorted together, or None."""
    if isinstance(tree, dict):
        try:
            sorted(tree)
        except TypeError:
            return prefix or "<root>"
        children: Iterable[tuple[Any, Any]] = tree.items()
    elif isinstance(tree, (list, tuple)):
        children = enumerate(tree)
    else:
        return None
    for key, value in children:
        if len(prefix.split("/")) < _paths.MAX_DEPTH:
            found = _unsortable(value, f"{prefix}/{key}" if prefix else str(key))
            if found is not None:
                return found
    return None


def _check_savable(flat: dict[str, Any]) -> None:
    holes = [p for p, leaf in flat.items() if isinstance(leaf, Uninitialized)]
    if holes:
        raise UninitializedParamError(
            f"Cannot save a training state that holds placeholders: {', '.join(holes)}. Run "
            "li.dry_run(model, key, sample) first; save lazy states with li.save."
        )
    gone = [p for p, leaf in flat.items() if isinstance(leaf, jax.Array) and leaf.is_deleted()]
    if gone:
        raise DeletedParamError(
            f"Cannot save deleted arrays: {', '.join(gone)}. They were donated to a "
            "jit-compiled call (donate_argnums) or deleted; save the state that call returned."
        )
    empty = [p for p, leaf in flat.items() if np.size(leaf) == 0 and hasattr(leaf, "shape")]
    if empty:
        raise WriteCheckpointError(
            f"Cannot save zero-size arrays with orbax: {', '.join(repr(p) for p in empty)} "
            f"(shapes {', '.join(str(tuple(flat[p].shape)) for p in empty)}); nothing was "
            "written. Leave them out of the training state (they hold no values; rebuild them "
            "after restoring), or save that tree with li.save, which stores them."
        )


def _target(leaf: Any) -> Any:
    """What orbax restores ``leaf`` as: a ShapeDtypeStruct on a sharding."""
    if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic)):
        sharding = getattr(leaf, "sharding", None)
        if sharding is None:
            sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=sharding)
    return leaf


def _hold_lock(directory: str) -> int | None:
    """An open descriptor holding ``directory``'s writer lock, or None if another holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cleanup, nothing is ever deleted
        return None
    fd = os.open(os.path.join(directory, ".lazyinit.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


_ORBAX_TMP = ".orbax-checkpoint-tmp"


def _remove_temporaries(directory: str) -> None:
    """Deletes orbax's temporary step directories (``7.orbax-checkpoint-tmp...``): with the
    directory's lock held, they are what killed saves left."""
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if _ORBAX_TMP in name and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)


class TrainingCheckpoints:
    """A directory of training-state checkpoints, one per step, the last ``keep`` kept.

    Args:
      directory: where the steps go (created if needed).
      keep: how many of the most recent steps to keep; older ones are deleted.
      save_every: save only steps that are a multiple of it (``save(force=True)``
        saves any step).
      async_save: write in the background; :meth:`wait` or :meth:`close` waits.

    The state is any pytree of arrays: typically ``{"params": ..., "opt_state":
    ..., "step": ..., "buffers": ...}`` with optax's state as it is. Use it as a
    context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        keep: int = 3,
        save_every: int = 1,
        async_save: bool = False,
    ):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        os.makedirs(self.directory, exist_ok=True)
        self._lock = _hold_lock(self.directory)  # None: another live writer holds the directory
        if self._lock is not None:
            _remove_temporaries(self.directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            save_interval_steps=save_every,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )
        if self._lock is not None:  # a killed save may have finished a step but not pruned
            for step in self.steps()[: max(0, len(self.steps()) - keep)]:
                self._manager.delete(step)

    def save(self, step: int, state: Any, *, force: bool = False) -> bool:
        """Saves ``state`` as ``step``; returns whether it saved (``save_every``, ``force``).

        Raises:
          InvalidTreeError: a key of ``state`` is empty or contains ``/``.
          UninitializedParamError: ``state`` holds placeholders (listed by path).
          DeletedParamError: ``state`` holds deleted or donated arrays (listed by path).
          WriteCheckpointError: ``state`` holds zero-size arrays, which orbax cannot store.
        """
        _check_savable(_flat(state))
        return bool(
            self._manager.save(int(step), args=self._ocp.args.StandardSave(state), force=force)
        )

    def restore(self, like: Any, *, step: int | None = None) -> Any:
        """The state saved at ``step`` (default: the latest), shaped and sharded like ``like``.

        ``like`` is the state a fresh run would start from, or its abstract
        version (``jax.ShapeDtypeStruct`` leaves, with shardings for sharded
        arrays): every path, shape and dtype is checked against the saved
        metadata first, and arrays come back on ``like``'s shardings.

        Raises:
          FileNotFoundError: there is no checkpoint (at ``step``) in the directory.
          StateMismatchError: the saved state does not fit ``like``; lists every path.
        """
        self.wait()
        steps = self.steps()
        if step is None:
            if not steps:
                raise FileNotFoundError(
                    f"No training checkpoint in {self.directory!r}: nothing to resume. Start "
                    "from a fresh state, or point TrainingCheckpoints at the run's directory."
                )
            step = steps[-1]
        elif step not in steps:
            raise FileNotFoundError(
                f"No training checkpoint for step {step} in {self.directory!r}; it has steps "
                f"{list(steps)} (older ones are deleted beyond keep=...)."
            )
        saved = _flat(self._manager.item_metadata(step))
        want = _flat(like, "like state")
        holes = [p for p, v in want.items() if isinstance(v, Uninitialized)]
        if holes:
            raise UninitializedParamError(
                f"like= holds placeholders: {', '.join(holes)}. Restore against the state a "
                "fresh run starts from (after li.dry_run), or its jax.eval_shape."
            )
        # The load rules, as every entry point applies them (lazyinit._match).
        m = _match.match(
            {
                (p,): _match.Target(tuple(np.shape(w)), getattr(w, "dtype", None))
                for p, w in want.items()
            },
            {(p,): jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for p, v in saved.items()},
            abstract=True,
            cast_hint="restore against a like= state in the saved dtype",
        )
        _match.refuse(
            f"Cannot restore step {step} from {self.directory!r}",
            _match.judge(m, missing=True, unexpected=True),
            "Pass like= the state this run starts from (same model, optimizer and input size).",
        )
        target = jax.tree.map(_target, like)
        return self._manager.restore(step, args=self._ocp.args.StandardRestore(target))

    def steps(self) -> list[int]:
        """The saved steps, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest saved step, or None."""
        return self._manager.latest_step()

    def wait(self) -> None:
        """Waits for a background save to finish."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources and the directory's lock."""
        self._manager.close()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> TrainingCheckpoints:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
