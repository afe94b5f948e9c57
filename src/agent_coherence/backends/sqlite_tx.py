"""Small pieces shared by the SQLite backend's modules."""

from __future__ import annotations

import errno

TYPE_CHECKING = False  # sqlite3 (the package) is not imported at run time: see sqlite.py
if TYPE_CHECKING:
    import sqlite3

_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED (extended codes carry these in the low byte)
_SQLITE_FULL = 13


class Deferred:
    """An error decided inside a transaction whose journal entry must still be committed: the
    transaction commits, then the error is raised."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _BUSY_CODES
    text = str(error).lower()
    return "locked" in text or "busy" in text


def full_disk_errno(error: sqlite3.Error) -> int | None:
    """ENOSPC when SQLite failed for lack of space ("database or disk is full"), else None."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return errno.ENOSPC if (code & 0xFF) == _SQLITE_FULL else None
    return errno.ENOSPC if "disk is full" in str(error).lower() else None
