"""What a write does when it cannot finish: undo it, free its key, and say why in a typed error.

A failed or interrupted write puts the old bytes back if they had been replaced, resolves its
intent with a ``write.failed`` entry and raises: a typed error for a failure (``DurabilityError``
naming the step, with the errno), the interruption itself otherwise. An undo that cannot be
recorded now (the disk or the database is full) is handed to a background retry (see
:func:`recovery.undo_later`); the key stays blocked until it is done and the caller still gets its
``DurabilityError``.

The same object deals with another write's intent met on the way: recovered at once if its writer
is dead (:meth:`WriteUndo.unblock`, :meth:`WriteUndo.settle`), waited for otherwise.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any, NoReturn

from . import recovery
from .backends.base import Backend, IntentRecord
from .durable import StepFailed, is_enospc
from .errors import BackendUnavailable, CoherenceError, DurabilityError, ForeignEdit, LeaseHeld
from .paths import ArtifactPath
from .recovery import UNCHANGED
from .rooted import KeyFile


class Progress:
    """How far a write's file step got: the step running and whether the target may have been
    replaced (or removed) already, so an undo must put the old bytes back."""

    __slots__ = ("step", "replaced")

    def __init__(self) -> None:
        self.step = "intent"
        self.replaced = False


class WriteUndo:
    """Undo and unblocking for the writes of one coordinator (``backend``, files under ``root``)."""

    def __init__(self, backend: Backend, root: str) -> None:
        self.backend = backend
        self.root = root

    def fail(self, target: ArtifactPath, file: KeyFile, intent: IntentRecord, old: bytes | None,
             progress: Progress, error: BaseException, claim: recovery.WriteClaim) -> NoReturn:
        """Undo the write after ``error`` (or leave it complete if it committed), then raise: a
        typed error for a failure, ``error`` itself for an interruption or a refusal."""
        failed = error if isinstance(error, StepFailed) else None
        step = failed.step if failed else progress.step
        replaced = progress.replaced and step != "rename" if failed else progress.replaced
        cause: BaseException = failed.error if failed else error
        detail, note = describe(cause), ""
        restore = old if replaced else UNCHANGED
        try:
            recovery.undo(self.backend, file, intent, restore, step, detail)
        except (OSError, StepFailed, CoherenceError):
            recovery.undo_later(self.backend, self.root, intent, restore, step, detail, claim)
            note = "the key is blocked until its undo can be recorded (retried in the background)"
        except BaseException:  # interrupted again while undoing: finish the undo in the background
            recovery.undo_later(self.backend, self.root, intent, restore, step, detail, claim)
            raise
        if isinstance(cause, OSError):
            raise durability_error(target, step, cause, note) from cause
        full = disk_full(target, step, cause, note)
        if full is not None:
            raise full from cause
        raise error

    def abort_unread(self, intent: IntentRecord, step: str, cause: object, claim: recovery.WriteClaim) -> None:
        """Resolve an intent whose file step never started (nothing to put back). If the abort
        cannot be recorded now (or is interrupted), it is retried in the background (see
        :mod:`recovery`)."""
        detail = cause if isinstance(cause, str) else describe(cause)
        try:
            self.backend.abort_write(intent, step, detail)
        except (CoherenceError, OSError):
            recovery.undo_later(self.backend, self.root, intent, UNCHANGED, step, detail, claim)
        except BaseException:
            recovery.undo_later(self.backend, self.root, intent, UNCHANGED, step, detail, claim)
            raise

    def abort_stray(self, key: str, temp: str, cause: BaseException, claim: recovery.WriteClaim) -> None:
        """Abort the intent on ``key`` if it is the one of the write with temp path ``temp``: left
        recorded by a write stopped before its file step (an interruption after ``begin_write``
        committed, before its caller had the record). Nothing to put back; no intent, no work."""
        if claim.deferred:
            return  # its undo is running in the background already
        try:
            intent = self.backend.get_intent(key)
        except (CoherenceError, OSError):
            return  # the database cannot be read now: recovery resolves the intent later
        if intent is not None and intent.temp_path == temp:
            self.abort_unread(intent, "intent", cause, claim)

    def unblock(self, key: str) -> bool:
        """A writer that died mid-write still holds the lease it took for that write: recover its
        intent now rather than leave the key blocked until that lease expires. True if it did."""
        stuck = self.backend.get_intent(key)
        if stuck is not None and recovery.writer_is_dead(self.backend, stuck):
            recovery.resolve(self.backend, self.root, stuck)
            return True
        return False

    def settle(self, intent: IntentRecord, wait: float) -> bool:
        """Deal with another write's intent: recover it if its writer died, else wait up to
        ``wait`` seconds for it to resolve. True once it is resolved."""
        if recovery.writer_is_dead(self.backend, intent):
            recovery.resolve(self.backend, self.root, intent)
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            time.sleep(0.002)
            if self.backend.get_intent(intent.key) != intent:
                return True
        return False


def describe(error: object) -> str:
    """A failure's cause in words, for the journal's ``write.failed`` entry."""
    if isinstance(error, Exception):
        return str(error) or type(error).__name__
    return f"interrupted by {type(error).__name__}"


def in_flight(intent: IntentRecord) -> LeaseHeld:
    """The key is busy: ``intent``'s writer is alive and its write still unresolved."""
    return LeaseHeld(
        f"a write to {intent.key!r} by {intent.holder!r} (pid {intent.pid} on {intent.host}) is still in flight",
        key=intent.key, holder=intent.holder, acquired_at=intent.created_at, expires_at=intent.created_at,
        pid=intent.pid,
    )


def foreign_error(key: str, path: str, recorded: str | None, disk: str | None, version: int) -> ForeignEdit:
    what = "was deleted" if disk is None else "was changed"
    return ForeignEdit(
        f"{key!r} {what} outside agent-coherence since version {version} "
        f"(recorded sha256 {str(recorded)[:12]}, disk {str(disk)[:12]})",
        key=key, path=path, recorded_sha256=recorded, disk_sha256=disk, version=version,
    )


_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def durability_error(target: ArtifactPath, step: str, error: OSError, note: str = "") -> DurabilityError:
    what = "read of" if step == "read" else "write to"
    outcome = "the previous version is intact" + (f"; {note}" if note else "")
    facts: dict[str, Any] = {}
    if step == "directory":
        facts["recover"] = ("a directory on the key's path is missing, not a directory or not accessible: "
                            "fix the path and retry")
    elif step == "read" and not is_enospc(error):
        facts["recover"] = "check the file's permissions and the disk, then retry"
    elif error.errno in _NOT_WRITABLE:  # "free space or fix the disk" would send them the wrong way
        facts["recover"] = ("this process may not write there (permissions, a read-only filesystem): "
                            "fix the permissions of the key's directory and file, then retry")
    return DurabilityError(
        f"{what} {target.key!r} failed at {step}: {error.strerror or error}; {outcome}",
        key=target.key, path=target.path, step=step, errno=error.errno, detail=str(error), **facts,
    )


def disk_full(target: ArtifactPath, step: str, error: BaseException, note: str = "") -> DurabilityError | None:
    """A backend refusal for lack of space (the database's disk is full), as the
    DurabilityError it is for the writer; None for any other error."""
    if isinstance(error, BackendUnavailable) and getattr(error, "errno", None) == errno.ENOSPC:
        full = OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (database: {error.detail})")
        return durability_error(target, step, full, note)
    return None
