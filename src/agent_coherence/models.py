"""The public value types: what the Coordinator, channels, the journal and liveness return.

Immutable, compared by type and fields, cheap to make (no validation: the package makes them from
values it has checked). ``Lease``, ``VersionInfo`` and ``Event`` are the very objects the backend
returns (see :mod:`agent_coherence.backends.records`); the others are made here. Importing this
module imports neither pydantic nor ``typing``.
"""

from __future__ import annotations

from .backends.records import Event, Lease, Record, VersionInfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Anomaly", "Delivery", "Event", "Lease", "Message", "Snapshot", "VersionInfo", "WriteReceipt"]


class WriteReceipt(Record):
    """Proof of a confirmed write: the bytes were fsynced, renamed into place, the directory
    fsynced, the version committed, and the file read back with this hash."""

    __slots__ = ("key", "path", "version", "sha256", "size", "fence", "holder", "durable", "committed_at")
    _defaults = {"durable": True}
    if TYPE_CHECKING:
        key: str
        path: str
        version: int
        sha256: str
        size: int
        fence: int
        holder: str
        durable: bool
        committed_at: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) == 9 and not kwargs:  # the coordinator's write: every field, in order (its hot path)
            key, path, version, sha256, size, fence, holder, durable, committed_at = args
            _set_receipt_key(self, key)
            _set_receipt_path(self, path)
            _set_receipt_version(self, version)
            _set_receipt_sha256(self, sha256)
            _set_receipt_size(self, size)
            _set_receipt_fence(self, fence)
            _set_receipt_holder(self, holder)
            _set_durable(self, durable)
            _set_committed_at(self, committed_at)
            return
        super().__init__(*args, **kwargs)


# A receipt is made on every write: the slots' own setters (see Lease in backends/records).
(_set_receipt_key, _set_receipt_path, _set_receipt_version, _set_receipt_sha256, _set_receipt_size,
 _set_receipt_fence, _set_receipt_holder, _set_durable, _set_committed_at) = (
    WriteReceipt.__dict__[name].__set__ for name in WriteReceipt.__slots__)


class Snapshot(Record):
    """The bytes of an artifact and the version they belong to, read together.

    ``exists`` is False for a missing file (``data`` is then empty). ``foreign_edit`` is True when
    the bytes on disk are not the ones the layer last recorded (a write around the layer);
    ``recorded_sha256`` is then the hash the layer expected.
    """

    __slots__ = ("key", "path", "data", "version", "sha256", "exists", "foreign_edit", "recorded_sha256")
    _defaults = {"exists": True, "foreign_edit": False, "recorded_sha256": None}
    if TYPE_CHECKING:
        key: str
        path: str
        data: bytes
        version: int
        sha256: str
        exists: bool
        foreign_edit: bool
        recorded_sha256: str | None

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


class Message(Record):
    """A message as stored in a channel."""

    __slots__ = ("id", "channel", "payload", "key", "attempts", "enqueued_at", "available_at", "deadline")
    _defaults = {"key": None, "attempts": 0, "deadline": None}
    if TYPE_CHECKING:
        id: str
        channel: str
        payload: Any
        key: str | None
        attempts: int
        enqueued_at: float
        available_at: float
        deadline: float | None


class Delivery(Record):
    """A message handed to one consumer. ``receipt`` is valid until the visibility timeout
    passes; after that the message may be redelivered and this receipt is stale."""

    __slots__ = ("message_id", "channel", "payload", "attempt", "receipt", "consumer", "key", "visible_at",
                 "group")
    _defaults = {"key": None, "group": None}
    if TYPE_CHECKING:
        message_id: str
        channel: str
        payload: Any
        attempt: int
        receipt: str
        consumer: str
        key: str | None
        visible_at: float
        group: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) == 9 and not kwargs:  # the channel's receive: every field, in order (its hot path)
            message_id, channel, payload, attempt, receipt, consumer, key, visible_at, group = args
            _set_message_id(self, message_id)
            _set_channel(self, channel)
            _set_payload(self, payload)
            _set_attempt(self, attempt)
            _set_receipt(self, receipt)
            _set_consumer(self, consumer)
            _set_key(self, key)
            _set_visible_at(self, visible_at)
            _set_group(self, group)
            return
        super().__init__(*args, **kwargs)


# A delivery is made on every receive: the slots' own setters (see Lease in backends/records).
(_set_message_id, _set_channel, _set_payload, _set_attempt, _set_receipt, _set_consumer, _set_key,
 _set_visible_at, _set_group) = (Delivery.__dict__[name].__set__ for name in Delivery.__slots__)


ANOMALY_KINDS = (
    "zero_work", "overdue_delivery", "stale_channel", "lease_expired_in_flight",
    "missed_heartbeat", "overdue_assignment", "clock_step",
)


class Anomaly(Record):
    """Something the liveness checks found wrong with the work (not with a process).

    ``kind`` is one of ``ANOMALY_KINDS`` (another is a ValueError: anomalies can be reported by
    callers too, and a misspelt kind would never match a filter)."""

    __slots__ = ("kind", "subject", "detail", "since", "facts")
    _defaults = {"facts": dict}
    if TYPE_CHECKING:
        kind: str
        subject: str
        detail: str
        since: float
        facts: dict[str, Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.kind not in ANOMALY_KINDS:
            raise ValueError(f"unknown anomaly kind {self.kind!r}; known: {', '.join(ANOMALY_KINDS)}")
