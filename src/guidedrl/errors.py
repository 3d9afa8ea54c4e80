"""The error a run stops with when it cannot go on as asked: one line that names the folder, file, key or row
and says what to do. The CLI prints it as ``error: ...`` and exits 2; nothing already written is lost."""

from __future__ import annotations


class RunError(RuntimeError):
    """A run (or its output folder, or a checkpoint) cannot continue; the message is the whole story."""
