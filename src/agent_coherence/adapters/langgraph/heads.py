"""The head of each ``(thread_id, checkpoint_ns)``, kept in the coordinator's backend.

A checkpoint put is a compare-and-set of the head ref (``Backend.set_ref``): it commits only if the
put's parent is the head, checked atomically with the fence of the run's thread lease, for every
process that shares the backend. The inner saver's own write cannot join that transaction, so a put
runs in this order: hold a lease (the run's thread lease, or a short per-put lease on the head ref),
check the parent against the head and the fence, let the inner saver write, then move the head
(compare-and-set, fence-checked again).

The window that order leaves: a writer that stalls after its checks and before the inner write, and
loses its lease meanwhile, writes one checkpoint into the inner saver that never becomes the head
(its compare-and-set is refused and it gets the error). Reads without a ``checkpoint_id`` resolve
the latest checkpoint through the head, so such an orphan is never read as the thread's state; it
is visible only to ``list`` / ``get_state_history``.

This module knows nothing of LangGraph's classes: it reads plain config dicts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping
from urllib.parse import unquote

from ...arguments import wait_seconds
from ...errors import LeaseHeld, VersionConflict
from .errors import CheckpointConflict, ThreadBusy
from .keys import (
    FENCE_KEY, FORK_KEY, HEADS_PREFIX, HOLDER_KEY, head_ref_name, run_holder, thread_effects_prefix,
    thread_heads_prefix, thread_lease_key,
)

if TYPE_CHECKING:
    from ...coordinator import Coordinator
    from ...models import Lease


PUT_LEASE_TTL = 10.0  # a put takes milliseconds; a dead putter's lease blocks its thread this long


class PutTarget:
    """What one checkpoint put is about, read from its config, checkpoint and metadata."""

    __slots__ = ("thread_id", "checkpoint_ns", "checkpoint_id", "parent", "step", "source",
                 "holder", "fence", "fork_of", "ref", "put_holder")

    def __init__(self, configurable: Mapping[str, Any], checkpoint_id: str,
                 metadata: Mapping[str, Any]) -> None:
        self.thread_id = str(configurable["thread_id"])
        self.checkpoint_ns = str(configurable.get("checkpoint_ns") or "")
        self.checkpoint_id = checkpoint_id
        self.parent: str | None = configurable.get("checkpoint_id") or None
        self.step = metadata.get("step")
        self.source = metadata.get("source")
        fence = configurable.get(FENCE_KEY)
        self.fence: int | None = int(fence) if fence is not None else None
        self.holder: str | None = configurable.get(HOLDER_KEY) if self.fence is not None else None
        self.fork_of: str | None = configurable.get(FORK_KEY) or None
        self.ref = head_ref_name(self.thread_id, self.checkpoint_ns)
        # An unfenced put's own lease holder, unique to this put (see ``Heads.abandon``).
        self.put_holder: str | None = run_holder("langgraph-put") if self.fence is None else None

    def facts(self) -> dict[str, Any]:
        return {"thread_id": self.thread_id, "checkpoint_ns": self.checkpoint_ns,
                "checkpoint_id": self.checkpoint_id, "parent": self.parent, "step": self.step,
                "source": self.source}


class PutTicket:
    """A put between its checks and its head move: the head it was checked against, how the move
    is journaled, and the per-put lease to release (None under a run's thread lease)."""

    __slots__ = ("target", "expected", "kind", "holder", "lease_key", "fence", "put_lease")

    def __init__(self, target: PutTarget, expected: str | None, kind: str, holder: str,
                 lease_key: str, fence: int, put_lease: "Lease | None") -> None:
        self.target = target
        self.expected = expected
        self.kind = kind
        self.holder = holder
        self.lease_key = lease_key
        self.fence = fence
        self.put_lease = put_lease


class Heads:
    """Head refs over one coordinator (thread-safe; shared by every process on the backend).

    ``strict_roots``: refuse a parentless put on a thread that already has a head even outside a
    run's thread lease (a fenced run is always strict). ``put_lease_wait``: how long an unfenced
    put waits for the per-put lease. ``durable``: flush each head move so it survives power loss.
    """

    def __init__(self, coordinator: "Coordinator", *, strict_roots: bool = False,
                 put_lease_wait: float = 10.0, durable: bool = True) -> None:
        self.coordinator = coordinator
        self.backend = coordinator.backend
        self.strict_roots = strict_roots
        self.put_lease_wait = wait_seconds(put_lease_wait, "put_lease_wait")
        self.durable = durable

    def head(self, thread_id: Any, checkpoint_ns: str = "") -> str | None:
        return self._value(head_ref_name(thread_id, checkpoint_ns))

    def _value(self, name: str) -> str | None:
        ref = self.backend.get_ref(name)
        return ref.value if ref is not None else None

    def check_fence(self, configurable: Mapping[str, Any]) -> None:
        """Raise LeaseLost if the config carries a run's fence that is no longer live."""
        fence = configurable.get(FENCE_KEY)
        if fence is not None:
            self.backend.check_fence(thread_lease_key(configurable["thread_id"]),
                                     str(configurable.get(HOLDER_KEY)), int(fence))

    # -- a put, in three steps ---------------------------------------------------------------

    def begin(self, target: PutTarget) -> PutTicket:
        """Hold the lease and check the parent against the head. Raises CheckpointConflict or
        LeaseLost (or LeaseHeld when the per-put lease stays busy); nothing is written then."""
        if target.fence is not None:
            holder, fence, lease_key = str(target.holder), target.fence, thread_lease_key(target.thread_id)
            ref = self.backend.get_fenced_ref(target.ref, lease_key=lease_key, holder=holder, fence=fence)
            current = ref.value if ref is not None else None
            return PutTicket(target, current, self._classify(target, current), holder, lease_key, fence, None)
        self._refuse_if_held(target.thread_id, "put")
        put_lease = self.coordinator.acquire(target.ref, str(target.put_holder), PUT_LEASE_TTL,
                                             wait=self.put_lease_wait)
        current = self._value(target.ref)  # a refusal or an interrupt from here on: ``abandon``
        kind = self._classify(target, current)
        return PutTicket(target, current, kind, put_lease.holder, put_lease.key, put_lease.fence, put_lease)

    def _refuse_if_held(self, thread_id: str, doing: str) -> None:
        """An unfenced put or a delete on a thread that a run holds (``coherent_graph``) is refused
        up front: ThreadBusy, naming the run."""
        held = self.backend.get_lease(thread_lease_key(thread_id))
        if held is not None:
            raise ThreadBusy(
                f"thread {thread_id!r} is held by run {held.holder!r} until {time.ctime(held.expires_at)}: "
                f"this {doing} does not belong to that run", key=held.key, holder=held.holder,
                expires_at=held.expires_at, acquired_at=held.acquired_at, thread_id=thread_id)

    def hold_threads(self, thread_ids: "Iterable[str]", doing: str) -> str:
        """Take the leases of ``thread_ids`` for a new holder, returned (give them back with
        ``let_go``), while the threads' histories are deleted, copied into or pruned: ThreadBusy,
        holding none of them, while a run holds one, whose next put would otherwise undo the change
        or fail on it; and no run starts on them until the change is done. Threads are taken in
        sorted order, so two such calls over overlapping threads cannot wait on each other."""
        holder = run_holder(f"langgraph-{doing.replace(' ', '-')}")
        try:
            for thread_id in sorted(set(thread_ids)):
                self._refuse_if_held(thread_id, doing)
                try:
                    self.coordinator.acquire(thread_lease_key(thread_id), holder, PUT_LEASE_TTL)
                except LeaseHeld:  # a run took the thread between the look and the acquire
                    self._refuse_if_held(thread_id, doing)
                    raise
        except BaseException:
            self.let_go(holder)
            raise
        return holder

    def let_go(self, holder: str) -> None:
        """Give back every thread ``hold_threads`` took for ``holder``."""
        self.backend.release_holder(holder)

    def finish(self, ticket: PutTicket) -> None:
        """Move the head to the put's checkpoint: compare-and-set, fence-checked. Raises
        CheckpointConflict or LeaseLost (the inner checkpoint then stays an orphan)."""
        target = ticket.target
        data = target.facts()
        if ticket.kind != "langgraph.checkpoint":
            data["head_was"] = ticket.expected
        try:
            self.backend.set_ref(target.ref, target.checkpoint_id, expect=ticket.expected,
                                 holder=ticket.holder, kind=ticket.kind, data=data,
                                 lease_key=ticket.lease_key, fence=ticket.fence, durable=self.durable)
        except VersionConflict as conflict:
            raise self._conflict(target, conflict.facts.get("actual")) from None

    def end(self, ticket: PutTicket) -> None:
        """Release the per-put lease, if the put took one."""
        if ticket.put_lease is not None:
            self.coordinator.release(ticket.put_lease)

    def abandon(self, target: PutTarget) -> None:
        """Give back whatever per-put lease the put holds, on any way out of it but the normal
        one: an error, or an interrupt wherever it landed (perhaps right after the grant
        committed, its result lost; or in ``end`` itself). By the put's holder, its alone."""
        if target.put_holder is not None:
            self.backend.release_holder(target.put_holder)

    def _classify(self, target: PutTarget, current: str | None) -> str:
        """The journal kind of an allowed put; raises CheckpointConflict for a refused one."""
        if current is None or target.parent == current or target.checkpoint_id == current:
            return "langgraph.checkpoint"  # (the last: the head put again, e.g. a retried put)
        if target.parent is None and target.fence is None and not self.strict_roots:
            return "langgraph.root"  # a second root on the thread: allowed (see docs), recorded
        if target.parent is not None and (target.source == "fork" or target.fork_of == target.parent):
            return "langgraph.fork"  # time travel: the run addressed an older checkpoint by id
        self.backend.journal_append("conflict.checkpoint", target.ref, target.holder,
                                    {**target.facts(), "head": current})
        raise self._conflict(target, current)

    @staticmethod
    def _conflict(target: PutTarget, actual: str | None) -> CheckpointConflict:
        return CheckpointConflict(
            f"checkpoint {target.checkpoint_id} on thread {target.thread_id!r} "
            f"(ns {target.checkpoint_ns!r}) builds on {target.parent!r}, but the head is {actual!r}: "
            "another run moved the thread on",
            key=target.ref, expected=target.parent, actual=actual, thread_id=target.thread_id,
            checkpoint_ns=target.checkpoint_ns, checkpoint_id=target.checkpoint_id,
        )

    def seal_and_release(self, thread_id: Any, lease: "Lease") -> None:
        """End a run: make every head move so far survive power loss and give the thread lease
        back, in one flushed transaction that re-sets the thread's root head to its current value
        (journaled ``langgraph.run_end``) and releases the lease. Run by ``coherent_graph`` when a
        run ends, so heads moved without a flush each (``durable=False``) are durable before the
        run returns. With ``durable`` every move was flushed already: only the release."""
        if self.durable:
            self.coordinator.release(lease)
            return
        self.backend.seal_ref_and_release(head_ref_name(thread_id), holder=lease.holder, kind="langgraph.run_end",
                                          data={"thread_id": str(thread_id)}, lease_key=lease.key,
                                          fence=lease.fence)

    # -- maintenance -------------------------------------------------------------------------

    def forget_thread(self, thread_id: Any, why: str) -> int:
        """Drop the thread's heads and the receipts its nodes recorded."""
        self.backend.delete_refs(thread_effects_prefix(thread_id), holder="langgraph", kind=why)
        return self.backend.delete_refs(thread_heads_prefix(thread_id), holder="langgraph", kind=why)

    def namespaces(self, thread_id: Any) -> list[tuple[str, str]]:
        """(checkpoint_ns, head checkpoint id) of every namespace of the thread."""
        prefix = thread_heads_prefix(thread_id)
        return [(ref.name[len(prefix):], ref.value) for ref in self.backend.list_refs(prefix)]

    def all_heads(self) -> list[tuple[str, str, str]]:
        """(thread_id, checkpoint_ns, head checkpoint id) of every thread and namespace."""
        found = []
        for ref in self.backend.list_refs(HEADS_PREFIX):
            quoted, _, ns = ref.name[len(HEADS_PREFIX):].partition("/")
            found.append((unquote(quoted), ns, ref.value))
        return found

    def drop(self, thread_id: Any, checkpoint_ns: str, head: str, why: str) -> bool:
        """Drop the head if it is still ``head`` (False: a put moved it meanwhile, and it stays)."""
        return self.backend.delete_ref(head_ref_name(thread_id, checkpoint_ns), holder="langgraph", kind=why,
                                       expect=head)

    def reset(self, thread_id: Any, checkpoint_ns: str, value: str | None, why: str) -> None:
        """Point the head at ``value`` unconditionally (or drop it): after maintenance that
        rewrote the inner saver's history (copy, prune, delete of runs)."""
        name = head_ref_name(thread_id, checkpoint_ns)
        if value is None:
            self.backend.delete_ref(name, holder="langgraph", kind=why)
            return
        self.backend.set_ref(name, value, expect=None, force=True, holder="langgraph", kind=why,
                             data={"thread_id": str(thread_id), "checkpoint_ns": checkpoint_ns})
