"""A key's file, reached from the workspace root through directory file descriptors.

``resolve_file_key`` checks a key once, by path; another process can swap a directory on that path
for a symlink a moment later. Every file operation here therefore walks from the root again, one
component at a time, opening each directory relative to its parent with
``O_DIRECTORY | O_NOFOLLOW``; the file itself is opened, created (``O_EXCL | O_NOFOLLOW``),
renamed, removed and its directory fsynced relative to the last directory's descriptor. A symlink
met on the way is refused (``PathOutsideRoot``), never followed, so no byte is read from or written
to a place the walk did not reach inside the root. Missing directories are created the same way
(``mkdir`` relative to the parent's descriptor, then opened ``O_NOFOLLOW``).

Reads open with ``O_NONBLOCK`` and check ``fstat`` before reading: a FIFO, socket, device or
directory at the key is refused with ``NotARegularFile`` at once, never waited on.

Limits: the root directory itself (and the path above it) is trusted, as resolved at open. A
directory that is *moved* (renamed, not replaced by a symlink) while a write holds its descriptor
takes that write with it: the descriptor follows the directory. Hard links are not checked.
"""

from __future__ import annotations

import errno
import os
import stat

from . import faults, stamps
from .durable import StepFailed, WrittenAhead, remove_quietly, rename_into_place, write_temp
from .errors import NotARegularFile, PathOutsideRoot
from .stamps import Stamp

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
          (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "special file")


_CHUNK = 1 << 16


def _read_to_end(fd: int, size: int) -> bytes:
    """Read ``fd`` to its end; ``size`` (from ``fstat``) sizes the first read.

    The first read asks for one byte more than ``size``. When it returns exactly ``size`` bytes
    the file had no more at that moment (a file that grew gives the extra byte), so those bytes
    are returned without a second, EOF-confirming read: they are what a read a moment earlier
    would have given, never a part of the file. A read that comes back shorter than ``size``
    (allowed on some FUSE and network filesystems) or longer is continued to an empty read."""
    data = os.read(fd, size + 1)
    if len(data) == size:  # the usual case: all of it, and nothing beyond (also an empty file)
        return data
    step = size if size > _CHUNK else _CHUNK
    chunk = os.read(fd, step)
    if not chunk:
        return data
    chunks = [data, chunk]
    while True:
        chunk = os.read(fd, step)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class KeyFile:
    """The file of one key (``key`` relative to ``root``; ``path`` only for messages).

    The directory descriptor is opened on first use and kept until :meth:`close`, so one write's
    steps all happen in the one directory the walk reached. Not thread-safe: one per operation.
    """

    __slots__ = ("root", "key", "path", "name", "_dirs", "_fd", "_mode", "_ahead")

    def __init__(self, root: str, key: str, path: str | None = None) -> None:
        self.root = root
        self.key = key
        self.path = path or os.path.join(root, key)
        if "/" in key:
            *self._dirs, self.name = key.split("/")
        else:  # a key at the top of the root (no list to unpack into)
            self._dirs, self.name = [], key
        self._fd: int | None = None
        self._mode: int | None = None
        self._ahead: WrittenAhead | None = None

    def __enter__(self) -> "KeyFile":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the directory, and drop bytes written ahead that were not used (no call before
        their close: an interrupt landing at one would keep the unnamed file open)."""
        ahead, self._ahead = self._ahead, None
        fd, self._fd = self._fd, None
        try:
            if ahead is not None and ahead.fd >= 0:
                ahead_fd, ahead.fd = ahead.fd, -1
                os.close(ahead_fd)
        finally:
            if fd is not None:
                os.close(fd)

    # -- the walk ---------------------------------------------------------------------------

    def directory(self, create: bool = False) -> int | None:
        """The descriptor of the key's directory; None if it is missing (or a file is in the way)
        and ``create`` is False. Raises PathOutsideRoot (a symlink on the path) and, when
        creating, StepFailed("directory") (a file in the way, a directory removed meanwhile)."""
        if self._fd is None:
            self._fd = self._walk(create)
        return self._fd

    def _walk(self, create: bool) -> int | None:
        current: int | None = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if not self._dirs:  # a key at the top of the root: its directory is the root
            return current
        try:
            for part in self._dirs:
                assert current is not None
                child = self._open_child(current, part, create)
                parent, current = current, child  # one step: no interrupt lands between the two
                os.close(parent)
                if current is None:
                    return None
            found, current = current, None
            return found
        finally:
            if current is not None:
                os.close(current)

    def _open_child(self, parent: int, name: str, create: bool) -> int | None:
        for _ in range(8):  # another process may remove what it just made: look again
            try:
                return os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    return None
            except OSError as error:  # ENOTDIR: a symlink (O_NOFOLLOW) or a file is in the way
                if self._is_symlink(parent, name):
                    raise self._swapped(name) from None
                if error.errno == errno.ENOTDIR and not create:
                    return None
                raise StepFailed("directory", error) from error
            try:
                os.mkdir(name, 0o777, dir_fd=parent)
            except FileExistsError:
                continue
            except OSError as error:
                raise StepFailed("directory", error) from error
            os.fsync(parent)  # the new directory's entry is durable before anything goes in it
        raise StepFailed("directory", OSError(errno.EAGAIN, f"{name!r} keeps vanishing"))

    @staticmethod
    def _is_symlink(parent: int, name: str) -> bool:
        try:
            return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def _swapped(self, name: str) -> PathOutsideRoot:
        reason = f"a symlink appeared on the path ({name!r}) after the key was checked; not followed"
        return PathOutsideRoot(f"refused key {self.key!r}: {reason}", key=self.key, root=self.root,
                               reason=reason)

    # -- operations on the file -------------------------------------------------------------

    def read(self) -> bytes | None:
        """The file's bytes, or None if it does not exist. Raises NotARegularFile, PathOutsideRoot
        (the file was replaced by a symlink), OSError (EACCES, EIO)."""
        directory = self.directory()
        if directory is None:
            return None
        try:
            fd = os.open(self.name, _READ_FLAGS, dir_fd=directory)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise self._swapped(self.name) from None
            if error.errno == errno.ENXIO:  # a socket (or a device without a driver)
                raise self._not_regular("socket") from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise self._not_regular(kind_of(info.st_mode))
            self._mode = info.st_mode & 0o7777
            return _read_to_end(fd, info.st_size)
        finally:
            os.close(fd)

    def _not_regular(self, kind: str) -> NotARegularFile:
        return NotARegularFile(f"{self.key!r} is a {kind}, not a regular file", key=self.key,
                               path=self.path, kind=kind)

    def mode(self) -> int | None:
        """The permission bits of the file (a replacement keeps them), or None if there is none
        (a new file's bits, see durable.write_temp). Those seen by the last :meth:`read` of this
        object if it found a file."""
        if self._mode is not None:
            return self._mode
        directory = self.directory()
        if directory is None:
            return None
        try:
            return os.stat(self.name, dir_fd=directory, follow_symlinks=False).st_mode & 0o7777
        except OSError:
            return None

    def write_temp(self, temp_name: str, data: bytes, mode: int | None, stamp: bytes | None = None) -> bool:
        """Create ``temp_name`` beside the file (making missing directories), write and fsync it;
        with ``stamp``, stamped first (returns whether the filesystem took the stamp)."""
        return write_temp(temp_name, data, mode, dir_fd=self.directory(create=True), stamp=stamp)

    def write_ahead(self, data: bytes) -> WrittenAhead | None:
        """Start ``data``'s temp file before the write is recorded (see durable.WrittenAhead), in
        the directory the walk reaches now. None if that directory does not exist yet (a write
        that is refused must not create it), or on any error (the ordinary path reports it).
        This object owns the file until :meth:`close`, which drops it if it was not used."""
        try:
            directory = self.directory()
            if directory is None:
                return None
            # Stored before it opens anything: a result lost to an interrupt is still closed.
            ahead = self._ahead = WrittenAhead(directory)
            # A new file's bits, not a stat: finishing sets those the read under the intent sees.
            return ahead if ahead.write(data) else None
        except (OSError, StepFailed, PathOutsideRoot):
            return None

    def clear_stamp(self) -> None:
        """Remove the file's stamp if it has one (best effort: never raises)."""
        try:
            directory = self.directory()
            if directory is None:
                return
            fd = os.open(self.name, _READ_FLAGS, dir_fd=directory)
        except (OSError, PathOutsideRoot):
            return
        try:
            stamps.remove(fd)
        finally:
            os.close(fd)

    def read_stamp(self) -> Stamp | None:
        """The file's stamp (see :mod:`stamps`); None if it has none or cannot be opened."""
        directory = self.directory()
        if directory is None:
            return None
        try:
            fd = os.open(self.name, _READ_FLAGS, dir_fd=directory)
        except OSError:
            return None
        try:
            return stamps.get(fd) if stat.S_ISREG(os.fstat(fd).st_mode) else None
        finally:
            os.close(fd)

    def rename_into_place(self, temp_name: str) -> None:
        """Rename ``temp_name`` over the file and fsync the directory. Raises StepFailed."""
        rename_into_place(temp_name, self.name, dir_fd=self.directory(create=True))

    def replace(self, data: bytes, temp_name: str) -> None:
        """Write ``data`` over the file durably (temp, fsync, rename, directory fsync)."""
        self.write_temp(temp_name, data, self.mode())
        self.rename_into_place(temp_name)

    def remove(self) -> bool:
        """Unlink the file and fsync its directory; False if there was nothing to remove."""
        directory = self.directory()
        if directory is None or not remove_quietly(self.name, dir_fd=directory):
            return False
        faults.check("fsync_dir")
        os.fsync(directory)
        return True

    def remove_temp(self, temp_name: str) -> None:
        """Remove a temp file beside the file, if there is one; never raises OSError (a stray temp
        file is harmless, and recovery removes it later)."""
        try:
            directory = self.directory()
            if directory is not None:
                remove_quietly(temp_name, dir_fd=directory)
        except (OSError, PathOutsideRoot):
            pass
