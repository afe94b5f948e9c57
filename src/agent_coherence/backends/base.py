"""The Backend protocol: the one seam between coordination policy and storage.

Each method is one atomic transaction that a SQL database can run the same way (SQLite with
``BEGIN IMMEDIATE``, PostgreSQL with row locks), and each state change appends its journal entry in
that same transaction, so the record and the effect can never disagree.

Records are plain frozen dataclasses (no pydantic): the Claude Code hook path uses the backend
directly and must start fast. All times are the backend's clock, in epoch seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    key: str
    holder: str
    fence: int
    acquired_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class VersionRecord:
    key: str
    version: int
    sha256: str | None  # None: the artifact was deleted through the layer
    size: int
    writer: str
    fence: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class IntentRecord:
    """A write in flight: recorded before the file is touched, resolved at commit or recovery."""

    key: str
    intent_id: str
    holder: str
    fence: int
    base_version: int
    base_sha256: str | None  # the recorded hash the disk must still have (None: no record or deleted)
    new_version: int
    new_sha256: str | None  # None: a delete
    size: int
    temp_path: str
    host: str
    pid: int
    pid_start: str
    created_at: float
    auto_lease: bool  # the lease was taken for this write alone and is released at commit


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """What ``begin_write`` checks and records.

    With ``fence`` set, the caller's lease (holder, fence) must be live. Without it, the backend
    takes the lease for the write (``ttl``) or reuses a live lease of the same holder.
    ``expect_version`` (if not None) must equal the recorded version (0 = no record yet).
    """

    key: str
    holder: str
    new_sha256: str | None
    size: int
    temp_path: str
    host: str
    pid: int
    pid_start: str
    fence: int | None = None
    ttl: float = 30.0
    expect_version: int | None = None


@dataclass(frozen=True, slots=True)
class JournalRecord:
    seq: int
    ts: float
    kind: str
    key: str | None
    holder: str | None
    data: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = ""
    hash: str = ""


class IntentPending(Exception):
    """Raised by ``begin_write`` when an earlier write to the key is still unresolved.

    Not a public error: the coordinator decides whether the intent's writer is dead (recover it and
    retry) or alive (the key is busy).
    """

    def __init__(self, intent: IntentRecord) -> None:
        self.intent = intent
        super().__init__(f"write {intent.intent_id} to {intent.key!r} is unresolved")


@runtime_checkable
class Backend(Protocol):
    """Storage for leases, version records, intents, channels and the journal."""

    name: str

    def now(self) -> float: ...

    def close(self) -> None: ...

    # -- leases -----------------------------------------------------------------------------
    def acquire_lease(self, key: str, holder: str, ttl: float) -> LeaseRecord:
        """Take the lease, or renew it if ``holder`` already holds it live (same fence).

        A free or expired lease gets a fence strictly greater than any before it for this key.
        Raises LeaseHeld when another holder's lease is live.
        """
        ...

    def renew_lease(self, key: str, holder: str, fence: int, ttl: float) -> LeaseRecord:
        """Extend a live lease. Raises LeaseLost if it expired or was taken over."""
        ...

    def release_lease(self, key: str, holder: str, fence: int) -> bool:
        """Release if still held by (holder, fence); False if it was already gone."""
        ...

    def release_holder(self, holder: str) -> list[str]:
        """Release every lease of ``holder``; returns the keys."""
        ...

    def get_lease(self, key: str) -> LeaseRecord | None:
        """The live lease on ``key``, or None."""
        ...

    def list_leases(self, holder: str | None = None) -> list[LeaseRecord]:
        """Live leases, optionally of one holder."""
        ...

    def check_fence(self, key: str, holder: str, fence: int) -> None:
        """Raise LeaseLost unless (holder, fence) is the live lease on ``key`` (read-only)."""
        ...

    # -- versions and writes ----------------------------------------------------------------
    def get_version(self, key: str) -> VersionRecord | None: ...

    def list_versions(self, limit: int = 100) -> list[VersionRecord]:
        """Most recently updated first."""
        ...

    def begin_write(self, request: WriteRequest) -> IntentRecord:
        """Check lease/fence and expected version, then record the intent.

        Raises LeaseHeld, LeaseLost, VersionConflict, or IntentPending.
        """
        ...

    def commit_write(self, intent: IntentRecord) -> VersionRecord:
        """Bump the version to the intent's, atomically with the fence check; resolve the intent;
        release an auto lease. Raises LeaseLost (the intent stays for the caller to abort)."""
        ...

    def abort_write(self, intent: IntentRecord, step: str, detail: str) -> None:
        """Resolve a failed write: drop the intent, release an auto lease, journal the failure."""
        ...

    def list_intents(self) -> list[IntentRecord]: ...

    def get_intent(self, key: str) -> IntentRecord | None: ...

    def resolve_intent(self, intent: IntentRecord, roll_forward: bool) -> VersionRecord | None:
        """Recovery: commit the intent's version (forward) or drop it (back), if still present."""
        ...

    def record_version(
        self,
        key: str,
        holder: str,
        sha256: str | None,
        size: int,
        *,
        fence: int | None,
        expect_version: int | None,
        kind: str,
    ) -> VersionRecord:
        """Record bytes that reached disk by another path (an adopted foreign edit, a write made by
        a tool under the holder's lease) as a new version. Raises LeaseLost / VersionConflict."""
        ...

    # -- journal ----------------------------------------------------------------------------
    def journal_append(
        self, kind: str, key: str | None, holder: str | None, data: dict[str, Any]
    ) -> JournalRecord: ...

    def journal_entries(
        self, key: str | None = None, after: int = 0, limit: int | None = None
    ) -> Iterator[JournalRecord]:
        """Entries in sequence order (optionally of one key)."""
        ...

    def journal_count(self, kind: str | None = None, key: str | None = None) -> int: ...
