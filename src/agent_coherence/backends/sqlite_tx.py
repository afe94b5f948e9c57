"""Small pieces shared by the SQLite backend's modules."""

from __future__ import annotations

import errno

from ..errors import BackendUnavailable
from ..logs import ERROR, log

TYPE_CHECKING = False  # sqlite3 (the package) is not imported at run time: see sqlite.py
if TYPE_CHECKING:
    import sqlite3

_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED (extended codes carry these in the low byte)
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_READONLY, _FULL, _CANTOPEN, _TOOBIG = 8, 13, 14, 18


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


def database_error(path: str, backend: str, error: Exception) -> BackendUnavailable:
    """The typed error for an SQLite error that retrying will not cure, with a hint that fits it.
    ``reason`` is "corrupt" for a damaged file, one that is not a database, or one missing a
    table or column of the schema (created when it was opened), else "error"."""
    code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
    damaged_schema = str(error).startswith(("no such table", "no such column"))
    if code in _CORRUPT_CODES or type(error).__name__ == "DatabaseError" or damaged_schema:
        log("backends.sqlite", ERROR, "the state database %s is damaged: %s", path, error)
        return BackendUnavailable(
            f"the state database {path} is damaged or is not an agent-coherence database: {error}",
            recover=(f"move {path} aside (the files under the root are not affected) and open again to "
                     "start a new record, or restore it from a backup"),
            backend=backend, detail=str(error), reason="corrupt", path=path, errno=None)
    hints = {
        _READONLY: "the database (or its directory) is read-only: check the permissions",
        _FULL: "the disk is full: free space and retry",
        _CANTOPEN: f"cannot open {path}: check that the path is a file and its directory is writable",
        # Retrying the same value fails the same way; the database is fine.
        _TOOBIG: ("the value is larger than SQLite allows in one row (1 GB by default; nothing was stored): "
                  "put large data in a file and send its path instead"),
    }
    return BackendUnavailable(
        f"SQLite error on {path}: {error}", recover=hints.get(code, BackendUnavailable.recover),
        backend=backend, detail=str(error), reason="error", path=path, errno=full_disk_errno(error))


def full_disk_errno(error: Exception) -> int | None:
    """ENOSPC when SQLite failed for lack of space ("database or disk is full"), else None."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return errno.ENOSPC if (code & 0xFF) == _FULL else None
    return errno.ENOSPC if "disk is full" in str(error).lower() else None
