"""The errors a run or command stops with when it cannot go on as asked: one line that names the folder, file,
key or row and says what to do. The CLI prints it as ``error: ...`` and exits 2; nothing already written is lost.

Every such error derives from :class:`GuidedError`: the CLI tells a fault of the input or the environment from
a bug in guidedrl by that base (and by :func:`storage_fault` for the operating system's own errors).
"""

from __future__ import annotations

import errno

# what torch's C++ writer says when a write fails (it drops the errno): a full disk, mostly
_TORCH_WRITE_FAILURES = ("PytorchStreamWriter failed writing", "file write failed", "unexpected pos",
                         "iostream error")
_FAULTS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
           errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "permission denied"}


class GuidedError(Exception):
    """A fault of the input or the environment, described in one line; never a bug of guidedrl."""


class RunError(GuidedError, RuntimeError):
    """A run (or its output folder, or a checkpoint) cannot continue; the message is the whole story."""


class UserCodeError(GuidedError, RuntimeError):
    """A user's function (a reward, a plugin) raised or returned something it may not; names the function."""


def storage_fault(err: BaseException) -> str | None:
    """What an error of writing a file is (``no space left on device``, ``read-only file system``,
    ``permission denied``), from its errno or, for torch's writer which drops the errno, its message; None when
    it is none of these."""
    code = getattr(err, "errno", None)
    if isinstance(err, OSError) and code in _FAULTS:
        return _FAULTS[code]
    text = str(err)
    if "No space left" in text or any(s in text for s in _TORCH_WRITE_FAILURES):
        return "no space left on device"
    if "Read-only file system" in text:
        return "read-only file system"
    if "Permission denied" in text:
        return "permission denied"
    return None
