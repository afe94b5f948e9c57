"""The Backend protocol: the one seam between coordination policy and storage.

Each method is one atomic transaction that a SQL database can run the same way (SQLite with
``BEGIN IMMEDIATE``, PostgreSQL with row locks), and each state change appends its journal entry in
that same transaction, so the record and the effect can never disagree.

The records (``records.py``, re-exported here) are light immutable value objects, not pydantic
models or dataclasses, and the public API returns the same objects (``Lease``, ``VersionInfo``,
``Event``): the Claude Code hook path uses the backend directly and must start fast, so
it imports ``records`` and ``sqlite`` but never this module. All times are the backend's clock,
in epoch seconds, except channel time: ``available_at`` and dedup and effect expiry are judged by
the backend's clock made monotonic across a step back (see ``sqlite_channels``). Every backend
should do the same: a server's ``now()`` can step back too.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, TypeVar, runtime_checkable

from ..retention import CompactionReport, Retention

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..journal import ChainWalk

from .records import (  # re-exported: the records live apart so the hook path skips this module
    AssignmentRecord, ChannelConfig, IntentPending, IntentRecord, JournalRecord, LeaseRecord,
    MessageRecord, Record, RefRecord, VersionRecord, WorkerRecord, WriteRequest,
)

D = TypeVar("D")

__all__ = [
    "AssignmentRecord", "Backend", "ChannelConfig", "IntentPending", "IntentRecord", "JournalRecord",
    "LeaseRecord", "MessageRecord", "Record", "RefRecord", "VersionRecord", "WorkerRecord", "WriteRequest",
]


@runtime_checkable
class Backend(Protocol):
    """Storage for leases, version records, intents, channels and the journal."""

    name: str
    closes: int
    """How many times ``close()`` was called. Background work started before a close (lease
    renewal) stops at it; the backend itself reopens on its next use."""

    def now(self) -> float: ...

    def close(self) -> None: ...

    # -- leases -----------------------------------------------------------------------------
    def acquire_lease(self, key: str, holder: str, ttl: float, *, record_conflict: bool = True,
                      waited: float = 0.0) -> LeaseRecord:
        """Take the lease, or renew it if ``holder`` already holds it live (same fence).

        A free or expired lease gets a fence strictly greater than any before it for this key.
        Raises LeaseHeld when another holder's lease is live; the refusal is journaled
        (``conflict.lease``, with ``waited`` seconds if given) unless ``record_conflict`` is False
        (a caller that will try again journals only its last refusal). The lease returned
        carries ``ttl`` as asked (renewal reuses it).
        """
        ...

    def renew_lease(self, key: str, holder: str, fence: int, ttl: float) -> LeaseRecord:
        """Extend a live lease to ``ttl`` from now (the lease returned carries that ``ttl``).
        Raises LeaseLost if it expired or was taken over."""
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

    def sync_intent(self, intent: IntentRecord) -> None:
        """Make the intent durable (it survives power loss). Raises LeaseLost if it was resolved
        meanwhile. Runs while the caller writes and fsyncs its temp file, so the two flushes overlap."""
        ...

    def commit_write(self, intent: IntentRecord, durable: bool = True) -> VersionRecord:
        """Bump the version to the intent's, atomically with the fence check; resolve the intent;
        release an auto lease. Raises LeaseLost (the intent stays for the caller to abort).

        ``durable=False`` may skip the flush when the intent was synced: after a power loss,
        recovery rolls the durable intent forward to the same version."""
        ...

    def abort_write(self, intent: IntentRecord, step: str, detail: str, *, journal: bool = True) -> None:
        """Resolve a failed write: drop the intent, release an auto lease, journal the failure
        (``write.failed``) if the intent was still there. ``journal=False`` drops it silently: the
        write is not failing but starting over (after adopting a foreign edit)."""
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
        refuse_pending: bool = False,
    ) -> VersionRecord:
        """Record bytes that reached disk by another path (an adopted foreign edit, a write made by
        a tool under the holder's lease) as a new version. Raises LeaseLost / VersionConflict;
        with ``refuse_pending``, IntentPending when a write to the key is unresolved (its commit
        would take the same version number), checked in the same transaction."""
        ...

    # -- refs: named pointers with compare-and-set ------------------------------------------
    def get_ref(self, name: str) -> RefRecord | None:
        """The ref ``name``, or None if it was never set (or was deleted)."""
        ...

    def get_fenced_ref(self, name: str, *, lease_key: str, holder: str, fence: int) -> RefRecord | None:
        """``get_ref(name)`` after the check of ``check_fence(lease_key, holder, fence)``, in one
        call: raises LeaseLost (nothing read) unless (holder, fence) is the live lease."""
        ...

    def list_refs(self, prefix: str, limit: int | None = None) -> list[RefRecord]:
        """Refs whose name starts with ``prefix``, in name order."""
        ...

    def set_ref(
        self,
        name: str,
        value: str,
        *,
        expect: str | None,
        holder: str,
        kind: str,
        data: dict[str, Any],
        force: bool = False,
        lease_key: str | None = None,
        fence: int | None = None,
        durable: bool = True,
    ) -> RefRecord:
        """Point ``name`` at ``value`` if it now points at ``expect`` (None: the ref must not exist),
        or unconditionally with ``force``. With ``fence``, (holder, fence) must be the live lease
        on ``lease_key`` (default: ``name``), checked in the same transaction. The change is
        journaled as ``kind`` (key ``name``) with ``data`` plus value, previous, version and fence;
        a refused compare is journaled as ``conflict.ref``.

        Raises VersionConflict (facts: key, expected, actual: the values) or LeaseLost; the ref is
        then unchanged. ``durable=True`` commits with a flush that survives power loss."""
        ...

    def seal_ref_and_release(self, name: str, *, holder: str, kind: str, data: dict[str, Any],
                             lease_key: str, fence: int) -> bool:
        """End a holder's work in one commit flushed to survive power loss: re-set the ref ``name``
        to its own value, if it exists (journaled as ``kind`` with ``data`` plus value, previous,
        version and fence, as ``set_ref``), and release the lease (``lease_key``, ``holder``,
        ``fence``) if still held (journaled ``lease.release``). The flush makes every change
        committed before it durable too, including ``set_ref(durable=False)`` moves. Returns
        whether the lease was still held (False: it was lost; the ref is re-set all the same)."""
        ...

    def delete_ref(self, name: str, *, holder: str, kind: str, expect: str | None = None) -> bool:
        """Delete the ref ``name`` (journaled as ``kind``); False if there was none. With
        ``expect``, only while its value is ``expect`` (False, nothing changed, if it moved)."""
        ...

    def delete_refs(self, prefix: str, *, holder: str, kind: str) -> int:
        """Delete every ref whose name starts with ``prefix`` (one journal entry ``kind`` each);
        returns how many."""
        ...

    # -- channels ---------------------------------------------------------------------------
    def channel_config(self, name: str, update: ChannelConfig | None = None) -> ChannelConfig:
        """The stored config of channel ``name`` (created with defaults), replaced by ``update``."""
        ...

    def configure_channel(self, name: str, changes: dict[str, Any]) -> ChannelConfig:
        """Apply ``changes`` (field -> value) to the stored config in one transaction."""
        ...

    def add_group(self, channel: str, group: str) -> None:
        """Register a consumer group: messages sent from now on are fanned out to it."""
        ...

    def send_messages(
        self, channel: str, items: list[tuple[bytes, str, str | None, float, float | None]]
    ) -> list[tuple[int, bool]]:
        """Append (payload, encoding, key, delay, deadline) items in one transaction; return
        (message id, newly enqueued) per item. A key seen within the dedup TTL is not enqueued
        again: its original id comes back with False."""
        ...

    def receive_messages(
        self, channel: str, group: str, consumer: str, visibility_timeout: float, limit: int
    ) -> list[MessageRecord]:
        """Lease up to ``limit`` visible messages to ``consumer``; messages past max_attempts go
        to the dead-letter channel instead."""
        ...

    def receive_one(
        self, channel: str, group: str, consumer: str,
        build: Callable[[int, str | None, bytes, str, int, str, str, float], D],
    ) -> D | None:
        """``receive_messages(channel, group, consumer, <the channel's visibility timeout>, 1)``,
        with the message handed to ``build`` as (id, key, payload, encoding, attempt, receipt,
        consumer, visible until) instead of as a MessageRecord: a single receive makes the one
        object its caller returns. None when nothing is visible."""
        ...

    def ack_messages(
        self, channel: str, acks: list[tuple[int, str, str]], effect_ttl: float | None = None,
        effect_scope: str | None = None,
    ) -> list[bool]:
        """Acknowledge (message id, group, receipt) items; False for a stale receipt. With
        ``effect_ttl``, record each message's effect key (``records.effect_key``: its key and id)
        under ``effect_scope`` (default: the channel) in the same transaction, also for a stale
        receipt whose message is still unacknowledged (the work is done); the record expires
        after ``effect_ttl`` seconds."""
        ...

    def nack_message(self, channel: str, message_id: int, group: str, receipt: str, delay: float) -> bool: ...

    def extend_message(self, channel: str, message_id: int, group: str, receipt: str, seconds: float) -> bool: ...

    def effect_seen(self, scope: str, effect_key: str) -> bool: ...

    def channel_stats(self, channel: str) -> dict[str, Any]:
        """depth, in_flight, oldest_ready_age, overdue (deadline passed), per group."""
        ...

    def list_channels(self) -> list[ChannelConfig]: ...

    def overdue_messages(self, limit: int = 100) -> list[MessageRecord]:
        """Unacknowledged messages whose deadline (backend clock) has passed, in any channel."""
        ...

    def expired_deliveries(self, limit: int = 100) -> list[MessageRecord]:
        """Delivered, unacknowledged messages whose visibility timeout ran out (channel time)."""
        ...

    # -- what a holder last read ------------------------------------------------------------
    def put_view(self, holder: str, key: str, version: int, sha256: str | None) -> None:
        """Remember that ``holder`` has seen ``version`` of ``key``."""
        ...

    def get_view(self, holder: str, key: str) -> tuple[int, str | None] | None:
        """(version, sha256) that ``holder`` last saw of ``key``, or None."""
        ...

    def drop_views(self, holder: str) -> int: ...

    # -- liveness ---------------------------------------------------------------------------
    def worker_start(self, worker: str, info: dict[str, Any]) -> WorkerRecord:
        """(Re)start a worker session: work count back to zero."""
        ...

    def worker_beat(self, worker: str, work: int = 0) -> WorkerRecord:
        """Mark ``worker`` alive now and add ``work`` to its count (starts a session if none)."""
        ...

    def worker_end(self, worker: str) -> WorkerRecord | None: ...

    def list_workers(self, include_ended: bool = False) -> list[WorkerRecord]: ...

    def assign(self, task_id: str, worker: str, deadline: float | None, info: dict[str, Any]) -> AssignmentRecord: ...

    def complete_assignment(self, task_id: str) -> bool: ...

    def list_assignments(self, worker: str | None = None, open_only: bool = True) -> list[AssignmentRecord]: ...

    # -- journal ----------------------------------------------------------------------------
    def journal_append(
        self, kind: str, key: str | None, holder: str | None, data: dict[str, Any]
    ) -> JournalRecord: ...

    def journal_entries(
        self, key: str | None = None, after: int = 0, limit: int | None = None
    ) -> Iterator[JournalRecord]:
        """Entries in sequence order (optionally of one key)."""
        ...

    def journal_count(self, kind: str | None = None, key: str | None = None) -> int:
        """Entries (of ``kind``, about ``key``), from indexes or maintained bounds: never a scan
        of the whole journal for the total or for the kinds ``status`` counts."""
        ...

    def journal_verify(
        self, on_entry: Callable[[int], None] | None = None, anchor: str | None = None
    ) -> ChainWalk:
        """Check every hash chain the backend keeps (one in SQLite, several in PostgreSQL), each
        from its first kept entry against its newest ``journal.checkpoint``; return the finished
        walk (``count``: entries checked, ``head``: what ``Journal.head()`` anchors). ``anchor``
        must still be in the journal. ``on_entry(count)`` is called after each verified entry.
        Raises JournalCorrupt, also for an unreadable entry."""
        ...

    def journal_tail(self, count: int) -> list[JournalRecord]:
        """The newest ``count`` entries, oldest first."""
        ...

    # -- retention (see retention.py) -------------------------------------------------------
    def retention(self, update: Retention | None = None) -> Retention:
        """The stored retention policy (the default if none); ``update`` stores a new one."""
        ...

    def compact(
        self, policy: Retention | None = None, *, before: float | None = None, keep: int | None = None,
        dry_run: bool = False,
    ) -> CompactionReport:
        """One bounded retention step in one transaction: removes what the policy lets go
        (never what a live lease, an unresolved intent, an unacked message, a dedup or effect
        window or an open assignment needs), journal entries oldest first behind a
        ``journal.checkpoint`` entry; ``dry_run`` counts what a full pass would remove."""
        ...
