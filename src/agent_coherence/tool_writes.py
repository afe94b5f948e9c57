"""Bytes a framework's own tool wrote, confirmed on disk and recorded under the writer's lease.

Some writes can't go through :meth:`Coordinator.write`: Claude Code's Write tool, a CrewAI tool
that opens the file itself. An adapter then holds the file's lease around the tool call and, once
the tool returns, confirms what landed: the file is read back after an fsync of it and of its
directory, hashed, and recorded as the next version under that lease (``record_tool_bytes``), so
the journal and every later writer see the write.

Limits, stated plainly: the confirmation comes after the fact. The bytes are whatever the tool
left (a tool that writes in place is not atomic, and a crash mid-call can leave a torn file, which
the next access reports as a foreign edit); the lease only keeps out writers that use the layer.

This module sits on the Claude Code hook path: standard library only, no typing at run time.
"""

from __future__ import annotations

import os
import stat

from .errors import LeaseLost
from .hashing import sha256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .backends.base import Backend
    from .backends.records import VersionRecord

CHUNK = 1 << 20

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def special_file(path: str) -> str | None:
    """What the file at ``path`` is when it is neither a regular file nor a directory ("a FIFO
    (named pipe)", "a socket", ...), else None. Looked at with ``lstat``: never opened, so a FIFO
    can't block and a device can't react."""
    try:
        mode = os.lstat(path).st_mode
    except (OSError, ValueError):
        return None
    for test, name in _SPECIAL_KINDS:
        if test(mode):
            return name
    return None


def open_regular(path: str) -> int | None:
    """A descriptor of the regular file at ``path``, or None (missing, a directory, a FIFO or
    device). Special files are turned away by ``lstat`` before any open; the open is non-blocking
    as well, so a FIFO swapped in between can't hang the caller either; a symlink is not followed."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
        fd = os.open(path, _OPEN_FLAGS)
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return fd
    os.close(fd)
    return None


def file_sha256(path: str) -> tuple[str | None, int]:
    """(sha256, size) of the regular file at ``path``; (None, 0) if there is none."""
    fd = open_regular(path)
    if fd is None:
        return None, 0
    with os.fdopen(fd, "rb") as handle:
        digest, size = sha256(size_hint=os.fstat(fd).st_size), 0
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def read_synced(path: str) -> bytes | None:
    """The file's bytes after fsyncing it and its directory; None if it does not exist.

    Raises OSError if the bytes can't be confirmed durable (fsync failed).
    """
    fd = open_regular(path)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read()
        os.fsync(handle.fileno())
    directory = os.open(os.path.dirname(path) or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return data


def record_tool_bytes(
    backend: Backend, key: str, writer: str, sha: str | None, size: int, *, fence: int | None,
    kind: str,
) -> tuple[VersionRecord, LeaseLost | None]:
    """Record the bytes now on disk (``sha`` None: the file is gone) as the next version of ``key``.

    With ``fence`` the record is checked against the writer's lease. If that lease was lost while
    the tool ran, the bytes are on disk all the same: they are recorded without the fence (so the
    record matches the disk) and the ``LeaseLost`` comes back beside the record for the caller to
    report. Never raises LeaseLost.
    """
    try:
        return backend.record_version(key, writer, sha, size, fence=fence, expect_version=None, kind=kind), None
    except LeaseLost as lost:
        if fence is None:
            raise  # pragma: no cover - record_version only checks a lease when given a fence
        record = backend.record_version(key, writer, sha, size, fence=None, expect_version=None, kind=kind)
        return record, lost
