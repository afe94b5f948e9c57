"""Small pieces shared by the SQLite backend's modules."""

from __future__ import annotations

TYPE_CHECKING = False  # sqlite3 (the package) is not imported at run time: see sqlite.py
if TYPE_CHECKING:
    import sqlite3

_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED (extended codes carry these in the low byte)


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
