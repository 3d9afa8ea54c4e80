"""A run folder belongs to one run: locked first, refused when it already holds another run, resumed only from
a checkpoint that loads, and written to only once every start-up check has passed.

The lock (``.lock``, ``flock``) is taken before anything else and held for the whole run, so a second run into
the same folder stops at once, and ``--overwrite`` never moves a live run's folder. ``--overwrite`` never
deletes: at :meth:`RunDir.commit` it renames the old folder to ``<dir>.old-<time>`` (a name no other folder has).
Until then a failed start leaves the folder as it was (a new one holds only its lock file). Every metrics record
carries the run's id (``run.json``), which a resume keeps.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from guidedrl.distributed import Ranks
from guidedrl.errors import RunError, storage_fault
from guidedrl.files import DamagedFile, move_aside, read_json, write_json
from guidedrl.trainer.checkpoint import checkpoints, is_complete

LOCK, RUN_FILE = ".lock", "run.json"
T = TypeVar("T")


class RunDir:
    """The locked output folder of a run; :meth:`commit` makes it the run's."""

    def __init__(self, path: Path, resume: bool = False, overwrite: bool = False) -> None:
        self.path, self.moved_to = path, None
        if path.exists() and not path.is_dir():
            raise RunError(f"output_dir: {path} is a file, not a folder")
        self._move_old = overwrite and not resume and _holds_files(path)
        self._lock = _take_lock(path)  # before anything is read or moved: a live run's folder is never touched
        try:
            self.checkpoint = None if self._move_old else self._claim(resume)
            self.run_id = self._run_id()
        except BaseException:
            self.release()
            raise

    def _claim(self, resume: bool) -> Path | None:
        """The checkpoint to resume from (None for a new run); refuses a folder that holds another run."""
        found = checkpoints(self.path / "checkpoints")
        if not resume:
            if _holds_files(self.path):
                raise RunError(f"output_dir: {self.path} already holds a run; pass --resume to continue it or "
                               "--overwrite to move it aside (it is renamed, never deleted)")
            return None
        for candidate in reversed(found):  # the newest checkpoint that loads; a torn newest one falls back
            if is_complete(candidate):
                return candidate
        raise RunError(f"--resume: {self.path / 'checkpoints'} holds no complete checkpoint"
                       + (f" ({len(found)} unreadable)" if found else "") + "; start the run without --resume")

    def _run_id(self) -> str:
        """The resumed run's id (from ``run.json``), or a new one."""
        path = self.path / RUN_FILE
        if self.checkpoint is None or not path.exists():
            return uuid.uuid4().hex[:12]
        try:
            run_id = read_json(path).get("run_id")
        except DamagedFile as err:
            raise RunError(f"--resume: {err} (restore it, or start anew with --overwrite)") from None
        if not isinstance(run_id, str) or not run_id:
            raise RunError(f"--resume: {path} has no run_id; the file is damaged (restore it, or start anew with "
                           "--overwrite)")
        return run_id

    def commit(self) -> None:
        """Make the folder this run's, once every start-up check has passed: with ``--overwrite`` the previous run
        is renamed aside (its lock held until the new folder's is), and ``run.json`` records the run's id."""
        try:
            if self._move_old:
                old_lock = self._lock
                self.moved_to = move_aside(self.path)
                try:
                    self._lock = _take_lock(self.path)
                finally:
                    _unlock(old_lock)
                self._move_old = False
            if self.checkpoint is None or not (self.path / RUN_FILE).exists():
                write_json(self.path / RUN_FILE, {"run_id": self.run_id, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        except OSError as err:
            raise RunError(f"output_dir: cannot write to {self.path}: {storage_fault(err) or err.strerror}") from None

    def release(self) -> None:
        """Give the folder back (the lock file stays; an unlocked one does not block the next run)."""
        if self._lock >= 0:
            _unlock(self._lock)
            self._lock = -1


def _take_lock(path: Path) -> int:
    """The folder's lock, taken (the folder is created if missing); a held one is a :class:`RunError`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as err:
        raise RunError(f"output_dir: cannot write to {path}: {storage_fault(err) or err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        raise RunError(f"output_dir: {path} is in use by another run (its lock {path / LOCK} is held)") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _holds_files(path: Path) -> bool:
    """Whether a folder holds anything but a stale lock file."""
    return path.is_dir() and any(p.name != LOCK for p in path.iterdir())


class FollowerRunDir:
    """What a rank other than 0 knows of the run folder rank 0 claimed: the checkpoint and the run id."""

    def __init__(self, checkpoint: Path | None, run_id: str) -> None:
        self.checkpoint, self.run_id, self.moved_to = checkpoint, run_id, None

    def commit(self) -> None:
        """Rank 0 writes the folder."""

    def release(self) -> None:
        """Rank 0 holds the lock."""


def on_main(ranks: Ranks, action: Callable[[], T]) -> T | None:
    """``action()`` on rank 0, its :class:`RunError` raised on every rank (so none waits for a rank that
    stopped); returns rank 0's result there and None on the others."""
    result, error = None, None
    if ranks.main:
        try:
            result = action()
        except RunError as err:
            error = str(err)
    error = ranks.broadcast(error)
    if error is not None:
        raise RunError(error)
    return result


def claim_run_dir(ranks: Ranks, path: Path, resume: bool, overwrite: bool) -> RunDir | FollowerRunDir:
    """Rank 0 locks the folder; every rank learns the checkpoint to resume from (or rank 0's error)."""
    claimed = on_main(ranks, lambda: RunDir(path, resume, overwrite))
    shared = ranks.broadcast(None if claimed is None else (claimed.checkpoint, claimed.run_id))
    return claimed if claimed is not None else FollowerRunDir(*shared)
