"""Writing a file atomically: a locked temporary beside it, fsynced, renamed over it.

The bytes go to a unique temporary file ``.<name>.<random>.tmp`` in the target's
directory, created with the process's umask (which is never changed) and held
under an exclusive ``flock`` while it is written; it is fsynced, renamed over
the target (``os.replace``, or a hard link when replacing is not allowed) and the
directory fsynced. A process killed at any point leaves either the previous file
or the new one, never a mix. Its temporary file, whose lock died with it, is
deleted by the next save of that name; a live writer's temporary is locked and
never touched.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import secrets
import stat
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import OverwriteCheckpointError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, no stale-file cleanup
    fcntl = None  # type: ignore[assignment]

__all__ = ["writing", "remove_stale", "exists_error"]


@contextlib.contextmanager
def writing(path: str, overwrite: bool) -> Iterator[BinaryIO]:
    """A locked temporary file beside ``path``, opened for writing; on a clean exit of the block
    it is fsynced and renamed over ``path`` and the directory fsynced. Temporaries left by
    killed saves of ``path`` are deleted first; on an error the temporary is deleted."""
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale(path)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if overwrite:
                os.replace(tmp, path)
            else:
                _link(tmp, path)  # fails rather than replace a file created meanwhile
    finally:  # the lock is released with the file, after the rename
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(directory)


def exists_error(path: str) -> OverwriteCheckpointError:
    return OverwriteCheckpointError(
        f"{path!r} already exists; li.save does not replace files unless asked. Pass "
        "overwrite=True to replace it (atomically), or choose another name."
    )


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _lock(fd: int, *, wait: bool) -> bool:
    """Takes the exclusive lock that marks a temporary file as a live writer's."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _temporaries(path: str) -> list[str]:
    directory, name = os.path.split(os.path.abspath(path))
    return glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(name)}.*.tmp"))


def remove_stale(path: str) -> list[str]:
    """Deletes the temporaries of saves of ``path`` that were killed; returns them.

    A writer holds its temporary under an exclusive lock until it is renamed,
    and the lock dies with the process, so a temporary that can be locked has
    no live writer. Unless advisory locks are unavailable (then nothing is
    deleted), a live writer's file is never touched.
    """
    if fcntl is None:
        return []
    removed = []
    for tmp in _temporaries(path):
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # gone meanwhile, a symlink, unreadable: not ours to judge
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode) and _lock(fd, wait=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)  # under the lock: no writer can hold this file now
                    removed.append(tmp)
        finally:
            os.close(fd)
    return removed


def _create_temporary(path: str) -> tuple[int, str]:
    """A new, locked temporary file beside ``path``, with the usual mode for the umask."""
    directory, name = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
        # Mode 0o666 and the process's umask apply, as for open(): the umask is never changed.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        _lock(fd, wait=True)
        if os.fstat(fd).st_nlink > 0:
            return fd, tmp
        os.close(fd)  # a cleaner judged it stale between creation and lock: take another name


def _link(tmp: str, path: str) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise exists_error(path) from None
    except OSError:  # a filesystem without hard links: check, then rename
        if os.path.exists(path):
            raise exists_error(path) from None
        os.replace(tmp, path)
