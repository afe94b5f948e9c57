"""The typed error hierarchy.

Every error carries the facts needed to decide what to do next (who holds a lease, which versions
disagree, which path was refused) and a ``recover`` hint in plain words. Nothing here imports
anything heavy: this module sits on the Claude Code hook path.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: this module is on the hook path
if TYPE_CHECKING:
    from typing import Any


class CoherenceError(Exception):
    """Base class of every error raised by agent-coherence.

    ``facts`` holds the structured details (also exposed as attributes); ``recover`` says what a
    caller can do about it.
    """

    recover: str = "see the error message"

    def __init__(self, message: str, *, recover: str | None = None, **facts: Any) -> None:
        self.message = message
        if recover is not None:
            self.recover = recover
        self.facts = facts
        for name, value in facts.items():
            setattr(self, name, value)
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} (recover: {self.recover})"


class LeaseHeld(CoherenceError):
    """Another holder has a live lease on the artifact.

    Facts: ``key``, ``holder`` (the current holder), ``expires_at`` (backend clock, epoch seconds),
    ``acquired_at``.
    """

    key: str
    holder: str
    expires_at: float
    acquired_at: float

    recover = "wait for the lease to be released or to expire, or retry with wait=<seconds>"


class LeaseLost(CoherenceError):
    """The caller's lease expired or was taken over (fenced) before the operation committed.

    Facts: ``key``, ``holder``, ``fence`` (the caller's token), ``current_holder``,
    ``current_fence``.
    """

    key: str
    holder: str
    fence: int
    current_holder: str | None
    current_fence: int | None

    recover = "stop writing; acquire a new lease, re-read the artifact and redo the work"


class VersionConflict(CoherenceError):
    """The artifact's version is not the one the caller expected.

    Facts: ``key``, ``expected``, ``actual``.
    """

    key: str
    expected: int
    actual: int

    recover = "re-read the artifact, re-apply your change to the new version and retry"


class ForeignEdit(CoherenceError):
    """The bytes on disk changed outside the layer since the last recorded version.

    Facts: ``key``, ``path``, ``recorded_sha256``, ``disk_sha256`` (None if the file is gone),
    ``version``.
    """

    key: str
    path: str
    recorded_sha256: str | None
    disk_sha256: str | None
    version: int

    recover = (
        "inspect the file; accept the bytes on disk with coord.adopt(key) "
        "(or on_foreign_edit='adopt'), or restore the recorded version"
    )


class DurabilityError(CoherenceError):
    """A durable write could not be confirmed (ENOSPC, EIO, failed fsync or rename, read-back
    mismatch).

    Facts: ``key``, ``path``, ``step`` (where it failed), ``errno`` (if an OS error), ``detail``.
    The target keeps its previous bytes and version unless ``detail`` says otherwise.
    """

    key: str
    path: str
    step: str
    errno: int | None
    detail: str

    recover = "free space or fix the disk, then retry; the previous version is intact"


class PathOutsideRoot(CoherenceError):
    """A key was refused: it resolves outside the workspace root, into the state directory, through
    a symlink that escapes, or is malformed (NUL byte, over-long, empty).

    Facts: ``key`` (as given), ``root``, ``reason``. Nothing was written.
    """

    key: object
    root: str
    reason: str

    recover = "use a path inside the workspace root (relative to it, without '..' or escaping symlinks)"


class NotARegularFile(CoherenceError):
    """The key names something other than a regular file: a directory, a FIFO, a socket or a
    device. Refused at once (it is never opened for blocking I/O, so it cannot hang the caller or
    block the key); nothing was read or written.

    Facts: ``key``, ``path``, ``kind`` ("directory", "FIFO", "socket", "character device",
    "block device").
    """

    key: str
    path: str
    kind: str

    recover = "move the non-file away (agent-coherence reads and writes only regular files) and retry"


class KeyIsADirectory(PathOutsideRoot, NotARegularFile):  # type: ignore[misc]  # key: as given, as PathOutsideRoot
    """The key names a directory. Refused when the key is resolved, before anything is touched;
    both a PathOutsideRoot (a refused key) and a NotARegularFile (``kind`` "directory"), as the
    docs name either for it.

    Facts: ``key`` (as given), ``root``, ``reason``, ``path``, ``kind``.
    """

    recover = "name a file, not a directory (agent-coherence reads and writes only regular files)"


class ChannelError(CoherenceError):
    """A channel operation was refused (stale receipt handle, unknown message, bad argument).

    Facts for a bad argument or setting: ``setting`` (its name) and ``value``; nothing was changed.
    """

    recover = "receive the message again and retry with the new delivery"


class StaleReceipt(ChannelError):
    """The delivery's receipt handle is no longer valid: the message timed out and was redelivered,
    or it was already acknowledged.

    Facts: ``channel``, ``message_id``, ``receipt``.
    """

    recover = (
        "do not ack this delivery; the message was redelivered (or already acked). "
        "Make the work idempotent (see Channel.process) and receive again"
    )
    channel: str
    message_id: str
    receipt: str


class SlotOccupied(ChannelError):
    """``materialize`` refused: the file still holds an unconsumed message.

    Facts: ``path``, ``existing_message_id`` (in the file), ``message_id`` (the refused one).
    """

    recover = "wait until the file is consumed (consume_materialized), or pass force=True"
    path: str
    existing_message_id: str
    message_id: str


class JournalCorrupt(CoherenceError):
    """The hash chain of the journal is broken: an entry was altered, deleted, inserted or
    reordered.

    Facts: ``seq`` (first bad entry), ``reason`` ("gap", "broken link", "hash mismatch",
    "encoding", or "unreadable" for an entry that cannot be read at all: bad types, data that is
    not JSON, damaged database pages).
    """

    recover = "treat the record from the first bad entry on as untrusted; restore the state directory from a backup"
    seq: int
    reason: str

    def __init__(self, message: str, *, recover: str | None = None, **facts: Any) -> None:
        if recover is None and isinstance(facts.get("seq"), int):
            # The hint is printed as it is (the CLI, logs): it names the entry, not the attribute.
            recover = (f"treat the record from entry {facts['seq']} on as untrusted; restore the state "
                       "directory from a backup")
        super().__init__(message, recover=recover, **facts)


class BackendUnavailable(CoherenceError):
    """The backend could not be reached or used: it stayed busy past the operation's deadline, its
    database is damaged or was created by a newer release, or the state directory cannot be made.

    Facts: ``backend``, ``detail``, ``errno`` (ENOSPC when the database's disk is full, else
    None), and for the embedded backend ``reason`` ("busy", "corrupt", "newer", "state directory",
    "error") and ``path``. ``reason="missing"`` (either backend): the state does not exist yet and
    the caller asked not to create it (``Coordinator.open(create=False)``).
    """

    backend: str
    detail: str
    errno: int | None

    recover = "check the database (disk space, permissions, server) and retry"

    def __init__(self, message: str, *, recover: str | None = None, **facts: Any) -> None:
        facts.setdefault("errno", None)  # a fact of every one, as documented: None unless an OS error says more
        super().__init__(message, recover=recover, **facts)


__all__ = [
    "BackendUnavailable",
    "ChannelError",
    "CoherenceError",
    "DurabilityError",
    "ForeignEdit",
    "JournalCorrupt",
    "KeyIsADirectory",
    "LeaseHeld",
    "LeaseLost",
    "NotARegularFile",
    "PathOutsideRoot",
    "SlotOccupied",
    "StaleReceipt",
    "VersionConflict",
]
