"""A run folder belongs to one run: claimed with a lock, refused when it already holds another run, and
resumed only from a checkpoint that loads.

``--overwrite`` never deletes: it renames the old folder to ``<dir>.old-<time>``. The lock (``.lock``,
``flock``) is held for the whole run, so a second run into the same folder stops at once. Every metrics
record carries the run's id (``run.json``), which a resume keeps.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
import uuid
from pathlib import Path

from guidedrl.distributed import Ranks
from guidedrl.errors import RunError
from guidedrl.trainer.checkpoint import checkpoints, is_complete

LOCK, RUN_FILE = ".lock", "run.json"


class RunDir:
    """The claimed output folder of a run."""

    def __init__(self, path: Path, resume: bool = False, overwrite: bool = False) -> None:
        self.path = path
        if path.exists() and not path.is_dir():
            raise RunError(f"output_dir: {path} is a file, not a folder")
        if overwrite and not resume and _holds_files(path):
            moved = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(moved)
            self.moved_to: Path | None = moved
        else:
            self.moved_to = None
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._lock = os.open(path / LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as err:
            raise RunError(f"output_dir: cannot write to {path}: {err.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            os.close(self._lock)
            raise RunError(f"output_dir: {path} is in use by another run (its lock {path / LOCK} is held)") from None
        os.ftruncate(self._lock, 0)
        os.write(self._lock, str(os.getpid()).encode())
        self.checkpoint = self._claim(resume)
        self.run_id = self._run_id()

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
        path = self.path / RUN_FILE
        if self.checkpoint is not None and path.exists():
            return json.loads(path.read_text())["run_id"]
        run_id = uuid.uuid4().hex[:12]
        path.write_text(json.dumps({"run_id": run_id, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}))
        return run_id

    def release(self) -> None:
        """Give the folder back (the lock file stays; an unlocked one does not block the next run)."""
        if self._lock >= 0:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = -1


def _holds_files(path: Path) -> bool:
    """Whether a folder holds anything but a stale lock file."""
    return path.is_dir() and any(p.name != LOCK for p in path.iterdir())


class FollowerRunDir:
    """What a rank other than 0 knows of the run folder rank 0 claimed: the checkpoint and the run id."""

    def __init__(self, checkpoint: Path | None, run_id: str) -> None:
        self.checkpoint, self.run_id, self.moved_to = checkpoint, run_id, None

    def release(self) -> None:
        """Rank 0 holds the lock."""


def claim_run_dir(ranks: Ranks, path: Path, resume: bool, overwrite: bool) -> RunDir | FollowerRunDir:
    """Rank 0 claims the folder; every rank learns the checkpoint to resume from (or rank 0's error)."""
    claimed: RunDir | None = None
    error = None
    if ranks.main:
        try:
            claimed = RunDir(path, resume, overwrite)
        except RunError as err:
            error = str(err)
    shared = ranks.broadcast((error, None if claimed is None else (claimed.checkpoint, claimed.run_id)))
    if shared[0] is not None:
        raise RunError(shared[0])
    return claimed if claimed is not None else FollowerRunDir(*shared[1])
