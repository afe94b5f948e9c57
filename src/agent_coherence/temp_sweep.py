"""The sweep of leftover temp files: the temp file of a write that never reached its rename, left
beside its target by a power loss (or a killed process whose write had no intent, such as a spool
delivery), which nothing else ever removes.

A temp file is removed only when **all** of these hold, each for a reason:

1. It is a regular file (never a directory, symlink, FIFO, socket or device: a name that merely
   looks like ours is not proof that the file is) and its name parses as one of ours
   (``durable.temp_path_for``: ``.<name>.<pid>.<8 hex>.ac-tmp``, or the probes'
   ``.<name>.<pid>.ac-tmp``), which gives the pid of the process that made it.
2. No intent in the backend names it. An intent's temp file belongs to that write until the write
   commits or is resolved (``Coordinator.recover`` removes it then); a writer on another host
   cannot be judged by its pid here. The intents are listed *after* the directory is read, so a
   write whose intent was recorded before its temp file got its name is always seen.
3. No process with that pid is alive on this host. A writer's temp file can exist with no intent
   naming it, for a moment or for good: a spool delivery or a probe has none, and a write's bytes
   may be on disk before its intent is (the write-ahead path). Only the process tells whether such
   a file is still being written. A pid reused (after a reboot, say) keeps a dead writer's file
   as if it were live: the safe side. A zombie has exited and writes nothing.
4. It is not this process's: its pid is alive (condition 3 keeps it), and its claimed writes
   (``recovery._WRITING``) are kept by name besides, so a claimed write stays safe even if this
   process's own pid were ever judged otherwise.

The file is looked at again just before its removal (reached from the root without following a
symlink, still a regular file). A file swapped for a symlink in the instant between that look and
the unlink would lose that symlink, never what it points to.

Each removal is journalled (``recover.temp``: the path, the pid, the size). A removal is not
fsynced: a power loss that brings a file back leaves it for the next sweep.

Cost: the sweep walks the whole root (``.agent-coherence/`` excluded), one directory at a time,
through descriptors opened ``O_NOFOLLOW`` relative to their parent (as :mod:`rooted` does), so a
symlinked directory is never entered. Run it when an operator asks, not per operation.

Limit: the pid is judged on this host. On a root shared by several hosts (a network filesystem
with the PostgreSQL backend) a temp file with no intent made by a live process on another host
(a spool delivery there) looks dead here: sweep such a root from one host while the others are
not writing, or not at all.
"""

from __future__ import annotations

import errno
import os
import posixpath
import re
import stat
from dataclasses import dataclass, field
from typing import Iterator

from . import recovery
from .backends.base import Backend, IntentRecord
from .durable import TEMP_MARKER, is_temp_name
from .paths import STATE_DIR

JOURNAL_KIND = "recover.temp"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MARKER = re.escape(TEMP_MARKER)
# The write's form first: its 8 hex digits must not be read as the pid of the probes' form.
_NAMES = (re.compile(rf"\.(.+)\.([1-9][0-9]*)\.[0-9a-f]{{8}}{_MARKER}", re.DOTALL),
          re.compile(rf"\.(.+)\.([1-9][0-9]*){_MARKER}", re.DOTALL))


def temp_pid(name: str) -> int | None:
    """The pid in one of our temp names, None if ``name`` is not one."""
    if not is_temp_name(name):
        return None
    for pattern in _NAMES:
        match = pattern.fullmatch(name)
        if match:
            return int(match.group(2))
    return None


@dataclass
class TempSweep:
    """What a sweep did: paths relative to the root, "/"-separated."""

    dry_run: bool = False
    removed: list[str] = field(default_factory=list)  # or, in a dry run, that would be
    kept: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, the error)


def sweep(backend: Backend, root: str, *, dry_run: bool = False) -> TempSweep:
    """Remove the leftover temp files under ``root`` (see the module docstring for when)."""
    report = TempSweep(dry_run=dry_run)
    found = list(_walk(root))
    if not found:
        return report
    # After the walk (condition 2): a write names its temp file only once its intent is recorded,
    # so the intent of any file the walk saw is in this list, unless that write has ended since.
    claimed = {_intent_temp(intent) for intent in backend.list_intents()}
    own_pid = os.getpid()
    writing = {os.path.basename(temp) for temp in recovery._WRITING}  # fresh random names: unique
    for relative, pid in found:
        if relative in claimed:
            report.kept.append((relative, "a pending write's (its intent names it)"))
        elif pid == own_pid and posixpath.basename(relative) in writing:
            report.kept.append((relative, "this process is writing it"))
        elif recovery.process_start(pid):
            report.kept.append((relative, f"pid {pid} is alive on this host"))
        else:
            _remove(backend, root, relative, pid, report)
    return report


def _intent_temp(intent: IntentRecord) -> str:
    """The intent's temp file relative to the root: from its key, so another spelling of the root
    (another mount point, another host) still matches."""
    return posixpath.join(posixpath.dirname(intent.key), recovery.temp_name(intent))


def _walk(root: str) -> list[tuple[str, int]]:
    """(path, pid) of every regular file under ``root`` with one of our temp names. Depth first,
    holding one descriptor per level (not one per directory waiting its turn)."""
    found: list[tuple[str, int]] = []
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stack: list[tuple[int, str, Iterator[str]]] = []
    try:
        stack.append((top, "", iter(_list(top, "", found))))
        while stack:
            fd, relative, subdirs = stack[-1]
            name = next(subdirs, None)
            if name is None:
                stack.pop()
                os.close(fd)
                continue
            child = _open_dir(fd, name)
            if child is not None:
                path = posixpath.join(relative, name) if relative else name
                stack.append((child, path, iter(_list(child, path, found))))
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    return found


def _list(fd: int, relative: str, found: list[tuple[str, int]]) -> list[str]:
    """Add the directory's temp-named regular files to ``found``; return its subdirectories (not
    symlinks to directories, and not the state directory)."""
    try:
        with os.scandir(fd) as entries:
            listed = list(entries)
    except OSError:
        return []  # removed or unreadable meanwhile: nothing of ours can be swept there
    subdirs = []
    for entry in listed:
        try:
            if entry.is_dir(follow_symlinks=False):
                if relative or entry.name != STATE_DIR:
                    subdirs.append(entry.name)
            elif entry.is_file(follow_symlinks=False):
                pid = temp_pid(entry.name)
                if pid is not None:
                    found.append((posixpath.join(relative, entry.name) if relative else entry.name, pid))
        except OSError:
            continue  # vanished meanwhile
    return subdirs


def _open_dir(parent: int, name: str) -> int | None:
    """The directory ``name`` in ``parent``, never through a symlink (one swapped in since the
    listing is refused by the kernel); None if it is not a directory now."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EACCES):
            return None
        raise


def _remove(backend: Backend, root: str, relative: str, pid: int, report: TempSweep) -> None:
    """Check that the file is still a regular one, reached without following a symlink, then
    remove and journal it (or only note it, in a dry run)."""
    directory, name = posixpath.split(relative)
    fd: int | None = None
    try:
        fd = _dir_of(root, directory)
        if fd is None:
            return
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return  # its writer renamed or removed it meanwhile
        if not stat.S_ISREG(info.st_mode):  # swapped since the walk: not ours to judge
            report.kept.append((relative, "no longer a regular file"))
            return
        if not report.dry_run:
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                return
            backend.journal_append(JOURNAL_KIND, None, None, {"path": relative, "pid": pid, "size": info.st_size})
        report.removed.append(relative)
    except OSError as error:
        report.failed.append((relative, f"{type(error).__name__}: {error.strerror or error}"))
    finally:
        if fd is not None:
            os.close(fd)


def _dir_of(root: str, directory: str) -> int | None:
    """The descriptor of ``directory`` (relative to ``root``), walked one component at a time
    without following a symlink; None if it is gone or no longer a directory."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for part in directory.split("/") if directory else ():
        try:
            child = _open_dir(fd, part)
        finally:
            os.close(fd)
        if child is None:
            return None
        fd = child
    return fd
