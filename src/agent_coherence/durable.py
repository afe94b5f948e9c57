"""The durable-write primitive and TOCTOU-safe directory scanning.

``replace_durably`` is the physical half of a confirmed write: a temp file in the target's own
directory (rename is only atomic within one filesystem), ``fsync`` of the file, ``rename`` over the
target, ``fsync`` of the directory (the rename is not durable without it). A failure at any step
removes the temp file and leaves the target's old bytes in place. Where the filesystem allows it
the temp file has no name until it is fsynced (``O_TMPFILE``), and ``WrittenAhead`` lets a caller
write it before deciding to go on.

``scan_dir`` lists a directory whose entries may vanish at any moment (a queue being drained by
other processes): a vanished entry is skipped, never raised.
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Literal

from . import faults, stamps

TEMP_MARKER = ".ac-tmp"
NAME_MAX = 255


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temp_path_for(path: str) -> str:
    """A fresh temp name beside ``path``; the pid in it tells recovery whose it was.

    The target's name is shortened as needed so the temp name fits the 255-byte name limit.
    """
    return f"{_temp_prefix(path)}{os.getpid()}.{os.urandom(4).hex()}{TEMP_MARKER}"


_LONGEST_SUFFIX = len(f".{2**64}.{'0' * 8}{TEMP_MARKER}")  # the widest pid any system gives


@lru_cache(maxsize=1024)
def _temp_prefix(path: str) -> str:
    """``<directory>/.<name>.`` with the name shortened to leave room for the suffix."""
    directory, name = os.path.split(path)
    room = NAME_MAX - 1 - _LONGEST_SUFFIX
    stem = os.fsencode(name)[:room].decode("utf-8", "ignore")  # never split a character
    return os.path.join(directory, f".{stem}.")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_MARKER)


class StepFailed(Exception):
    """An OS-level failure at a named step of a durable replace (wrapped by the caller)."""

    def __init__(self, step: str, error: OSError) -> None:
        self.step = step
        self.error = error
        super().__init__(f"{step}: {error}")


def fsync_dir(directory: str) -> None:
    fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    if written == len(data):  # the usual case: one call took it all
        return
    view = memoryview(data)[written:]
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_temp(temp: str, data: bytes, mode: int | None = None, *, dir_fd: int | None = None,
               stamp: bytes | None = None) -> bool:
    """Create ``temp`` exclusively (never through a symlink), write ``data`` and fsync it.
    With ``dir_fd``, ``temp`` is a name in that directory. With ``stamp``, the file carries it
    (see :mod:`stamps`) before the fsync; returns whether it does. Raises StepFailed.

    ``mode``: the file's permission bits, exactly (those of the file it replaces: the umask is
    not applied to them); None for a new file, which gets ``0o644`` less the umask.

    Where the filesystem allows it the file is made without a name (``O_TMPFILE``) and only given
    ``temp`` once it is written, stamped and fsynced: a crash before that leaves nothing in the
    directory, and the fsync has no directory entry to commit (on ext4 the whole durable replace
    is about a tenth faster). Elsewhere it is created under ``temp`` from the start.

    On any failure or interruption (KeyboardInterrupt included) the temp file is removed."""
    if dir_fd is None and _unnamed_files_possible():
        try:
            return _write_temp_by_path(temp, data, mode, stamp)
        except BaseException:  # also one landing as it returned: the file whole, the caller never told
            remove_quietly(temp)
            raise
    # Holds the descriptor from the open's return on (each open stores into it, no call between):
    # one lost to an interrupt would keep the file, unnamed perhaps, open until the process ends.
    held = _Descriptor()
    try:
        faults.check("open_temp")
        unnamed = dir_fd is not None and _unnamed_files_possible() and not _refused_here(dir_fd)
        if unnamed and dir_fd is not None:
            try:
                held.fd = os.open(".", _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, _creation_mode(mode),
                                  dir_fd=dir_fd)
            except OSError as exc:
                _note_refusal(exc, dir_fd)
                unnamed = False
        if not unnamed:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            held.fd = os.open(temp, flags, _creation_mode(mode), dir_fd=dir_fd)
    except OSError as exc:
        raise StepFailed("open_temp", exc) from exc
    except BaseException:
        # Interrupted, perhaps as the open returned: a named file may exist. The name is this
        # call's own (random, and O_EXCL refuses one that exists).
        held.discard()
        remove_quietly(temp, dir_fd=dir_fd)
        raise
    fd = held.fd
    try:
        faults.check("write")
        if mode is not None:  # the open applied the umask to the bits: a replacement keeps them all
            os.fchmod(fd, mode)
        _write_all(fd, data)
    except BaseException as exc:
        held.discard()
        remove_quietly(temp, dir_fd=dir_fd)  # it may have been named just before an interruption
        if isinstance(exc, OSError):
            raise StepFailed("write", exc) from exc
        raise
    try:
        return _stamp_sync_and_name(fd, unnamed, temp, dir_fd, stamp, held)
    except BaseException:  # also one landing as it returned: the file whole, the caller never told
        held.discard()  # an interrupt before the call left the descriptor here
        remove_quietly(temp, dir_fd=dir_fd)
        raise


def _creation_mode(mode: int | None) -> int:
    return NEW_FILE_MODE if mode is None else mode


def _write_temp_by_path(temp: str, data: bytes, mode: int | None, stamp: bytes | None) -> bool:
    """:func:`write_temp` of a path: an unnamed file is named by linkat(2), which takes the
    directory's descriptor, so the directory is opened for the length of the call."""
    directory, name = os.path.split(temp)
    try:
        own_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StepFailed("open_temp", exc) from exc
    try:
        return write_temp(name, data, mode, dir_fd=own_fd, stamp=stamp)
    finally:
        os.close(own_fd)


def _stamp_sync_and_name(fd: int, unnamed: bool, temp: str, dir_fd: int | None, stamp: bytes | None,
                         held: "_Descriptor") -> bool:
    """The end of :func:`write_temp`: stamp, fsync, name the file if it is unnamed, close. Its
    callers remove the temp file if an interruption lands after the name is given. ``held``
    owns ``fd`` until this call takes it (the first statement: no interrupt lands before it)."""
    held.fd = -1
    step = "write"
    try:
        stamped = stamp is not None and stamps.put(fd, stamp)
        step = "fsync"
        faults.check("fsync")
        os.fsync(fd)
        if unnamed:
            step = "open_temp"  # naming the file is the last part of creating it
            os.link(f"{_PROC_FDS}/{fd}", temp, dst_dir_fd=dir_fd, follow_symlinks=True)
    except BaseException as exc:
        _discard(fd, temp, dir_fd)
        if isinstance(exc, OSError):
            raise StepFailed(step, exc) from exc
        raise
    os.close(fd)
    return stamped


def _discard(fd: int, temp: str, dir_fd: int | None) -> None:
    os.close(fd)
    remove_quietly(temp, dir_fd=dir_fd)  # it may have been named just before an interruption


class _Descriptor:
    """A descriptor's one owner (-1: none, or closed)."""

    __slots__ = ("fd",)

    def __init__(self) -> None:
        self.fd = -1

    def discard(self) -> None:
        """Close the descriptor (idempotent)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class WrittenAhead(_Descriptor):
    """A temp file's bytes written before the write they belong to is recorded, so the disk works
    on them while the caller records it: an unnamed file (``O_TMPFILE``) in the key's directory,
    its writeback started. Nothing in the directory changes until :meth:`finish` names it; a
    crash, or :meth:`discard`, leaves nothing behind. :meth:`write` returns False where this cannot
    be done (no unnamed files on this filesystem, or any error: the caller then writes the temp
    file the ordinary way, which meets the same error and reports it).

    Made before :meth:`write` opens the file, so its owner (``rooted.KeyFile``) holds the
    descriptor from the moment the open returns: an interrupt landing anywhere after that leaves
    no unnamed file open (it would hold the whole payload's disk space until the process ends).

    Not durable until :meth:`finish` returns; one use only."""

    __slots__ = ("dir_fd",)

    def __init__(self, dir_fd: int) -> None:
        self.fd, self.dir_fd = -1, dir_fd

    def write(self, data: bytes) -> bool:
        """Write ``data`` to a new unnamed file, made with a new file's bits (``0o644`` less the
        umask; :meth:`finish` sets those of the file it replaces). False if it was not done."""
        if not _unnamed_files_possible():
            return False
        try:
            if _refused_here(self.dir_fd):
                return False
            try:  # stored as the open returns (no call between): see the class's docstring
                fd = self.fd = os.open(".", _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, NEW_FILE_MODE,
                                       dir_fd=self.dir_fd)
            except OSError as exc:
                _note_refusal(exc, self.dir_fd)
                return False
            _write_all(fd, data)
            # Starts the writeback now (it does not drop pages that are dirty or being written).
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                return False
            raise
        return True

    def finish(self, temp_name: str, mode: int | None, stamp: bytes | None) -> bool:
        """What :func:`write_temp` does after the write: stamp (returns whether the filesystem took
        it), fsync and name the file ``temp_name`` in its directory, with permission bits
        ``mode`` exactly (None: a new file's, as made). Raises StepFailed; on any failure or
        interruption the temp file is removed."""
        fd = self.fd  # still this object's (closed by discard) until _stamp_sync_and_name takes it
        step = "open_temp"
        try:
            faults.check("open_temp")
            step = "write"
            faults.check("write")
            if mode is not None:  # the replaced file's bits, all of them (the open applied the umask)
                os.fchmod(fd, mode)
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise StepFailed(step, exc) from exc
            raise
        try:
            return _stamp_sync_and_name(fd, True, temp_name, self.dir_fd, stamp, self)
        except BaseException:  # as in write_temp; an interrupt before the call left fd here
            self.discard()
            remove_quietly(temp_name, dir_fd=self.dir_fd)
            raise


_PROC_FDS = "/proc/self/fd"  # an unnamed file is named by linking its /proc entry (no privilege needed)
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_NO_UNNAMED_FILES = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)  # the filesystem or kernel lacks O_TMPFILE
_unnamed_files: bool | None = None  # whether this system can name an unnamed file: checked on first use
NEW_FILE_MODE = 0o644  # a new file's bits, less the umask
# The filesystems (st_dev) that refused O_TMPFILE: not asked again, so a write there costs no
# failed open. A device number reused by a later mount at worst keeps that mount on named temp
# files (correct, only slower). Replaced whole under the lock, read without it.
_refused_devices: frozenset[int] = frozenset()
_refused_lock = threading.Lock()


def _unnamed_files_possible() -> bool:
    global _unnamed_files
    if _unnamed_files is None:
        _unnamed_files = bool(_O_TMPFILE) and os.path.isdir(_PROC_FDS)
    return _unnamed_files


def unnamed_temp_files_in(directory: str) -> str | None:
    """None if a temp file in ``directory`` is made without a name and then linked (as
    :func:`write_temp` does here); else why not, in words (the probe leaves nothing behind)."""
    if not _O_TMPFILE:
        return "this platform has no O_TMPFILE"
    if not _unnamed_files_possible():
        return f"{_PROC_FDS} is not mounted"
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = os.open(".", _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            return f"O_TMPFILE refused: {exc.strerror or exc}"
        name = f".doctor.{os.getpid()}{TEMP_MARKER}"
        try:
            os.link(f"{_PROC_FDS}/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)
        except OSError as exc:
            return f"an unnamed file cannot be linked: {exc.strerror or exc}"
        finally:
            os.close(fd)
        remove_quietly(name, dir_fd=dir_fd)
        return None
    finally:
        os.close(dir_fd)


def _refused_here(dir_fd: int) -> bool:
    """Whether the filesystem of ``dir_fd`` refused O_TMPFILE before (no fstat until one has)."""
    return bool(_refused_devices) and os.fstat(dir_fd).st_dev in _refused_devices


def _note_refusal(error: OSError, dir_fd: int) -> None:
    """Remember the device of ``dir_fd`` if ``error`` says it has no O_TMPFILE; else re-raise."""
    global _refused_devices
    if error.errno not in _NO_UNNAMED_FILES:
        raise error
    device = os.fstat(dir_fd).st_dev
    with _refused_lock:
        _refused_devices = _refused_devices | {device}


def rename_into_place(temp: str, path: str, *, dir_fd: int | None = None) -> None:
    """Atomically rename ``temp`` over ``path`` and fsync the directory. Raises StepFailed.
    With ``dir_fd``, both are names in that directory and it is the one fsynced.

    If the rename fails the temp file is removed and ``path`` is untouched. If only the directory
    fsync fails, the rename has happened in the namespace but is not known to be durable.
    """
    try:
        faults.check("rename")
        os.rename(temp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as exc:
        remove_quietly(temp, dir_fd=dir_fd)
        raise StepFailed("rename", exc) from exc
    try:
        faults.check("fsync_dir")
        if dir_fd is None:
            fsync_dir(os.path.dirname(path))
        else:
            os.fsync(dir_fd)
    except OSError as exc:
        raise StepFailed("fsync_dir", exc) from exc


def replace_durably(path: str, data: bytes, temp: str | None = None) -> None:
    """Write ``data`` to ``path`` durably: temp + fsync + rename + directory fsync.

    Guarantee: when this returns, the bytes survive a crash or power loss (on a filesystem that
    honours fsync). On StepFailed before the rename, ``path`` keeps its old bytes. On any failure
    or interruption no temp file is left.
    """
    temp = temp or temp_path_for(path)
    try:
        write_temp(temp, data, file_mode(path))
        rename_into_place(temp, path)
    except StepFailed:  # each step removes its temp file (and one O_EXCL refused is not this call's)
        raise
    except BaseException:  # an interruption as write_temp returned, or before the rename: it is named
        remove_quietly(temp)
        raise


def file_mode(path: str) -> int | None:
    """The permission bits of ``path`` (a replacement keeps them), or None if it does not exist
    (a new file's bits, see :func:`write_temp`)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


def read_bytes(path: str) -> bytes | None:
    """The file's bytes, or None if it does not exist (also when a parent is not a directory)."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def file_sha256(path: str) -> str | None:
    data = read_bytes(path)
    return None if data is None else sha256_hex(data)


def remove_quietly(path: str, *, dir_fd: int | None = None) -> bool:
    """Unlink ``path`` (a name in ``dir_fd`` if given); False if it was not there."""
    try:
        os.unlink(path, dir_fd=dir_fd)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False


def ensure_parent(path: str) -> None:
    """Create the missing parents of ``path`` and fsync each new directory's parent."""
    parent = os.path.dirname(path)
    missing: list[str] = []
    while parent and not os.path.isdir(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            pass
        fsync_dir(os.path.dirname(directory))


def is_enospc(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)


# --- scanning -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScanEntry:
    """One directory entry that still existed when it was stat'ed."""

    name: str
    path: str
    size: int
    mtime_ns: int
    inode: int


def scan_dir(
    directory: str,
    *,
    order: Literal["none", "name", "mtime"] = "none",
    limit: int | None = None,
    include_hidden: bool = False,
    files_only: bool = True,
) -> Iterator[ScanEntry]:
    """Yield the entries of ``directory``, skipping any that vanish while being listed.

    ``order="none"`` streams in directory order and never holds the whole listing. With
    ``order="name"`` or ``"mtime"`` and a ``limit``, only the ``limit`` smallest are kept (a heap,
    O(n log limit)), never a sort of the whole directory. A missing directory yields nothing.
    Cost is still O(entries): rotate large directories rather than scan them per operation.
    """
    entries = _live_entries(directory, include_hidden, files_only)
    if order == "none":
        for count, entry in enumerate(entries):
            if limit is not None and count >= limit:
                return
            yield entry
        return
    sort_key = (lambda e: e.name) if order == "name" else (lambda e: (e.mtime_ns, e.name))
    if limit is None:
        yield from sorted(entries, key=sort_key)
    else:
        yield from heapq.nsmallest(limit, entries, key=sort_key)


def _live_entries(directory: str, include_hidden: bool, files_only: bool) -> Iterator[ScanEntry]:
    try:
        iterator = os.scandir(directory)
    except FileNotFoundError:
        return
    with iterator:
        for item in iterator:
            if not include_hidden and item.name.startswith("."):
                continue
            try:
                if files_only and not item.is_file(follow_symlinks=False):
                    continue
                st = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished between listing and stat: normal in a live queue
            yield ScanEntry(item.name, item.path, st.st_size, st.st_mtime_ns, st.st_ino)
