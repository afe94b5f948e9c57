"""The public value types, as immutable pydantic models.

These are what the Coordinator returns. The backend layer below uses plain dataclasses instead, so
the Claude Code hook path never imports pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from .backends.base import JournalRecord, LeaseRecord, VersionRecord


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Lease(_Frozen):
    """A single-writer lease on one artifact.

    ``fence`` only grows per artifact; a write under this lease is refused (LeaseLost) once a
    later fence exists or the lease expired. ``expires_at`` is the backend's clock (epoch seconds)
    as of the last acquire or renew.
    """

    key: str
    holder: str
    fence: int
    acquired_at: float
    expires_at: float
    ttl: float

    @classmethod
    def from_record(cls, record: "LeaseRecord", ttl: float) -> "Lease":
        return cls(key=record.key, holder=record.holder, fence=record.fence,
                   acquired_at=record.acquired_at, expires_at=record.expires_at, ttl=ttl)


class WriteReceipt(_Frozen):
    """Proof of a confirmed write: the bytes were fsynced, renamed into place, the directory
    fsynced, the version committed, and the file read back with this hash."""

    key: str
    path: str
    version: int
    sha256: str
    size: int
    fence: int
    holder: str
    durable: bool = True
    committed_at: float


class Snapshot(_Frozen):
    """The bytes of an artifact and the version they belong to, read together.

    ``exists`` is False for a missing file (``data`` is then empty). ``foreign_edit`` is True when
    the bytes on disk are not the ones the layer last recorded (a write around the layer);
    ``recorded_sha256`` is then the hash the layer expected.
    """

    key: str
    path: str
    data: bytes
    version: int
    sha256: str
    exists: bool = True
    foreign_edit: bool = False
    recorded_sha256: str | None = None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


class VersionInfo(_Frozen):
    """The version record of an artifact (no bytes)."""

    key: str
    version: int
    sha256: str | None
    size: int
    writer: str
    fence: int
    updated_at: float

    @classmethod
    def from_record(cls, record: "VersionRecord") -> "VersionInfo":
        return cls(key=record.key, version=record.version, sha256=record.sha256, size=record.size,
                   writer=record.writer, fence=record.fence, updated_at=record.updated_at)


class Event(_Frozen):
    """One journal entry."""

    seq: int
    ts: float
    kind: str
    key: str | None
    holder: str | None
    data: dict[str, Any]
    hash: str

    @classmethod
    def from_record(cls, record: "JournalRecord") -> "Event":
        return cls(seq=record.seq, ts=record.ts, kind=record.kind, key=record.key,
                   holder=record.holder, data=record.data, hash=record.hash)


class Message(_Frozen):
    """A message as stored in a channel."""

    id: str
    channel: str
    payload: Any
    key: str | None = None
    attempts: int = 0
    enqueued_at: float
    available_at: float
    deadline: float | None = None


class Delivery(_Frozen):
    """A message handed to one consumer. ``receipt`` is valid until the visibility timeout
    passes; after that the message may be redelivered and this receipt is stale."""

    message_id: str
    channel: str
    payload: Any
    attempt: int
    receipt: str
    consumer: str
    key: str | None = None
    visible_at: float
    group: str | None = None


class Anomaly(_Frozen):
    """Something the liveness checks found wrong with the work (not with a process)."""

    kind: Literal[
        "zero_work", "overdue_delivery", "stale_channel", "lease_expired_in_flight",
        "missed_heartbeat", "overdue_assignment", "clock_step",
    ]
    subject: str
    detail: str
    since: float
    facts: dict[str, Any] = {}
