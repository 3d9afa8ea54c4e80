"""The files guidedrl writes and reads back: written atomically (a temporary sibling renamed into place, so a
kill or a full disk leaves the previous file or none, never half of one), read with a one-line error naming a
damaged file, and output paths checked before any work that would be lost if they could not be written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from guidedrl.errors import GuidedError, RunError, storage_fault


class DamagedFile(GuidedError, ValueError):
    """A file guidedrl reads that is not what it should be (not UTF-8, not valid JSON, not the expected shape)."""


class UnwritablePath(GuidedError, ValueError):
    """An output path that cannot be written, found before the work that would be lost."""


def read_text(path: Path) -> str:
    """A UTF-8 text file; a file of other bytes is :class:`DamagedFile` naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DamagedFile(f"{path}: not UTF-8 text (byte {err.start}); the file is damaged") from None


def read_json(path: Path) -> dict:
    """The JSON object of a file; :class:`DamagedFile` naming the file and the place where it is not one."""
    try:
        value = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DamagedFile(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); the file "
                          "is damaged") from None
    if not isinstance(value, dict):
        raise DamagedFile(f"{path}: expected a JSON object, got {type(value).__name__}; the file is damaged")
    return value


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary sibling, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented JSON, atomically."""
    write_text(path, json.dumps(value, indent=1))


@contextmanager
def atomic_dir(path: Path, what: str, advice: str) -> Iterator[Path]:
    """A temporary sibling folder to write ``path``'s contents into, renamed into place (replacing an older
    ``path``) when the block ends; removed if it fails. A full disk or a read-only folder becomes a
    :class:`RunError` naming ``what`` was being written, followed by ``advice``."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        fault = storage_fault(err) if isinstance(err, Exception) and not isinstance(err, GuidedError) else None
        if fault is None:
            raise
        raise RunError(f"{fault} while writing {what} {path}; {advice}") from None
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def move_aside(path: Path) -> Path:
    """Rename ``path`` to a name no other folder has, ``<name>.old-<time>`` (then ``-2``, ``-3``, ...): the name is
    taken by creating it empty, which only one process can, and the rename replaces that empty folder."""
    base = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    for n in range(1, 1000):
        target = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            target.mkdir()
        except FileExistsError:
            continue
        try:
            path.rename(target)
        except OSError:
            target.rmdir()
            raise
        return target
    raise RunError(f"{path}: 999 folders named {base.name}[-N] already exist; remove some")


def check_output_file(path: Path, key: str) -> None:
    """Refuse, before any work, an output file that could not be written: a folder, or a place where no file
    can be created (tried with a temporary file, as the user's permissions alone cannot tell: a read-only file
    system, root). Missing parent folders are created. ``key`` is the option or setting that named it."""
    if path.is_dir():
        raise UnwritablePath(f"{key}: {path} is a folder; give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
        if path.exists():
            path.open("a").close()
    except (FileExistsError, NotADirectoryError):
        raise UnwritablePath(f"{key}: cannot write {path}: a part of its path is a file, not a folder") from None
    except OSError as err:
        raise UnwritablePath(f"{key}: cannot write {path}: {storage_fault(err) or err.strerror}") from None
