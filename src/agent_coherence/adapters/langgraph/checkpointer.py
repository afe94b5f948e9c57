"""``CoherentCheckpointer``: any LangGraph checkpoint saver, with each put a compare-and-set on the
thread's head and fenced against the run's thread lease.

Guarantees, for every process that shares the coordinator's backend:

- a ``put`` commits (becomes the head of its ``(thread_id, checkpoint_ns)``) only if its parent is
  the head, else ``CheckpointConflict`` naming the thread, the parent and the head. Two runs that
  read the same head cannot both extend it: the history never forks silently;
- a deliberate fork is allowed and journaled as ``langgraph.fork``: a run or ``update_state`` that
  addressed an older checkpoint by id (the saver marks the tuple it returns for such a read), and
  LangGraph's own fork checkpoints (``metadata["source"] == "fork"``);
- ``put`` and ``put_writes`` of a run that carries a thread-lease fence (``coherent_graph``) raise
  ``LeaseLost`` and write nothing once that lease expired or was taken over;
- a read without a ``checkpoint_id`` returns the head, never a checkpoint that lost its
  compare-and-set; a head the inner saver no longer has, with no checkpoint of the thread left
  at all (an InMemorySaver after a restart), is dropped, so the thread starts afresh;
- ``delete_thread`` (and ``copy_thread`` / ``prune`` where the inner saver has them) holds the
  threads it changes meanwhile, and raises ``ThreadBusy`` (changing nothing) while a
  ``coherent_graph`` run holds one of them;
- every checkpoint (thread, ns, id, parent, step, fence) is journaled.

Limits: see ``heads.py`` for the one window the two-store sequence leaves (an orphan checkpoint,
never the head). A parentless put on a thread that has a head is accepted outside a thread lease
(``strict_roots=False``, so the conformance suite's clause holds) and journaled as
``langgraph.root``; two runs that both start a *new* thread are serialised only by
``coherent_graph``. Writers that bypass this wrapper are not seen at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Collection

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver, ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple,
    DeltaChannelHistory,
)

from ..offload import in_thread, in_thread_undone
from .errors import require_coordinator
from .extensions import extension_class, implements as overrides
from .heads import Heads, PutTarget
from .keys import FORK_KEY

if TYPE_CHECKING:
    from ...coordinator import Coordinator


def _addressing(config: RunnableConfig, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    """``config`` addressing one checkpoint (the namespace spelled out: some savers return the
    config they were given)."""
    configurable = {**config["configurable"], "checkpoint_ns": checkpoint_ns, "checkpoint_id": checkpoint_id}
    return {**config, "configurable": configurable}  # type: ignore[typeddict-item]


class CoherentCheckpointer(BaseCheckpointSaver[Any]):
    """Wraps ``inner`` (InMemorySaver, SqliteSaver, AsyncSqliteSaver, PostgresSaver, ...).

    Every sync and async method is delegated; the async ones of a sync-only saver run the sync
    method on a worker thread. ``delete_for_runs`` / ``copy_thread`` / ``prune`` exist on the
    instance's class only when the inner saver implements them. Options: ``strict_roots``,
    ``put_lease_wait``, ``durable_head`` (see :class:`~.heads.Heads`).
    """

    def __new__(cls, inner: BaseCheckpointSaver[Any], coordinator: "Coordinator", **options: Any) -> "CoherentCheckpointer":
        return super().__new__(extension_class(cls, inner))

    def __init__(self, inner: BaseCheckpointSaver[Any], coordinator: "Coordinator", *,
                 strict_roots: bool = False, put_lease_wait: float = 10.0, durable_head: bool = True) -> None:
        if isinstance(inner, CoherentCheckpointer):
            raise TypeError("the saver is already a CoherentCheckpointer: wrap the inner saver once")
        if not isinstance(inner, BaseCheckpointSaver):
            # refused here, not at the first run that calls it, far from the cause
            raise TypeError(f"CoherentCheckpointer wraps a LangGraph BaseCheckpointSaver (InMemorySaver, "
                            f"SqliteSaver, ...), not {type(inner).__name__}")
        require_coordinator(coordinator, "CoherentCheckpointer")
        self.inner = inner
        self.coordinator = coordinator
        self.heads = Heads(coordinator, strict_roots=strict_roots, put_lease_wait=put_lease_wait,
                           durable=durable_head)
        self._options: dict[str, Any] = {"strict_roots": strict_roots, "put_lease_wait": put_lease_wait,
                                         "durable_head": durable_head}

    def __repr__(self) -> str:
        return f"CoherentCheckpointer({self.inner!r})"

    # -- delegated attributes ----------------------------------------------------------------

    @property  # type: ignore[override]
    def serde(self) -> Any:
        return self.inner.serde

    @serde.setter
    def serde(self, value: Any) -> None:
        self.inner.serde = value

    @property
    def config_specs(self) -> list:
        return self.inner.config_specs

    def get_next_version(self, current: Any, channel: None) -> Any:
        return self.inner.get_next_version(current, channel)

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> "CoherentCheckpointer":
        """The inner saver gets the new serializer; the wrapper is rebuilt around it."""
        inner = self.inner.with_allowlist(extra_allowlist)
        if inner is self.inner:
            return self
        return type(self)(inner, self.coordinator, **self._options)

    def get_delta_channel_history(self, *, config: RunnableConfig,
                                  channels: Sequence[str]) -> Mapping[str, DeltaChannelHistory]:
        return self.inner.get_delta_channel_history(config=config, channels=channels)

    async def aget_delta_channel_history(self, *, config: RunnableConfig,
                                         channels: Sequence[str]) -> Mapping[str, DeltaChannelHistory]:
        if overrides(self.inner, "get_delta_channel_history"):
            return await asyncio.to_thread(self.get_delta_channel_history, config=config, channels=channels)
        return await self.inner.aget_delta_channel_history(config=config, channels=channels)

    # -- reads -------------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The addressed checkpoint, or without a ``checkpoint_id`` the head (through the
        coordinator, so a checkpoint that lost its compare-and-set is never returned)."""
        configurable = config["configurable"]
        thread_id, ns = configurable.get("thread_id"), configurable.get("checkpoint_ns") or ""
        if thread_id is None:
            return self.inner.get_tuple(config)
        head = self.heads.head(thread_id, ns)
        if configurable.get("checkpoint_id") or head is None:
            return self._marked(self.inner.get_tuple(config), head)
        found = self.inner.get_tuple(_addressing(config, ns, head))
        if found is None:  # the inner saver lost it (deleted, or another process's memory): its latest
            found = self.inner.get_tuple(config)
        if found is None:
            self._drop_stale_head(thread_id, ns, head)
        return self._marked(found, head)

    def _drop_stale_head(self, thread_id: Any, checkpoint_ns: str, head: str) -> None:
        """The inner saver has no checkpoint of the thread at all, not even the head: its history
        is gone (an InMemorySaver after a restart, a deleted database, the inner saver's own
        ``delete_thread``). The head is dropped so the run starts the thread afresh, as it would
        on the stock saver; kept, it would refuse every new run's first put for ever."""
        # Only if still that head: a put that moved it since the reads above stored its checkpoint first.
        self.heads.drop(thread_id, checkpoint_ns, head, "langgraph.stale_head")

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None) -> Iterator[CheckpointTuple]:
        heads: dict[tuple[str, str], str | None] = {}
        for found in self.inner.list(config, filter=filter, before=before, limit=limit):
            yield self._mark(found, self._cached_head(found, heads))

    def _cached_head(self, found: CheckpointTuple, heads: dict[tuple[str, str], str | None]) -> str | None:
        configurable = found.config["configurable"]
        place = (str(configurable["thread_id"]), configurable.get("checkpoint_ns") or "")
        if place not in heads:
            heads[place] = self.heads.head(*place)
        return heads[place]

    @classmethod
    def _marked(cls, found: CheckpointTuple | None, head: str | None) -> CheckpointTuple | None:
        return cls._mark(found, head) if found is not None else None

    @staticmethod
    def _mark(found: CheckpointTuple, head: str | None) -> CheckpointTuple:
        """Mark a tuple that is not the head: a run or update seeded from it forks deliberately.
        LangGraph merges the returned config into every put of such a run. The mark is always
        set (empty for the head), so a stale mark in a caller's config is overwritten."""
        checkpoint_id = found.config["configurable"].get("checkpoint_id")
        mark = checkpoint_id if head is not None and checkpoint_id != head else ""
        config: Any = {**found.config, "configurable": {**found.config["configurable"], FORK_KEY: mark}}
        return found._replace(config=config)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        if overrides(self.inner, "get_tuple") or not overrides(self.inner, "aget_tuple"):
            return await asyncio.to_thread(self.get_tuple, config)
        configurable = config["configurable"]
        thread_id, ns = configurable.get("thread_id"), configurable.get("checkpoint_ns") or ""
        if thread_id is None:
            return await self.inner.aget_tuple(config)
        head = await asyncio.to_thread(self.heads.head, thread_id, ns)
        if configurable.get("checkpoint_id") or head is None:
            return self._marked(await self.inner.aget_tuple(config), head)
        found = await self.inner.aget_tuple(_addressing(config, ns, head))
        found = found or await self.inner.aget_tuple(config)
        if found is None:
            await asyncio.to_thread(self._drop_stale_head, thread_id, ns, head)
        return self._marked(found, head)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        if overrides(self.inner, "list") or not overrides(self.inner, "alist"):
            found = await asyncio.to_thread(lambda: [*self.list(config, filter=filter, before=before, limit=limit)])
            for item in found:
                yield item
            return
        heads: dict[tuple[str, str], str | None] = {}
        async for item in self.inner.alist(config, filter=filter, before=before, limit=limit):
            head = await asyncio.to_thread(self._cached_head, item, heads)
            yield self._mark(item, head)

    # -- writes ------------------------------------------------------------------------------

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        """Store ``checkpoint`` and make it the head, if its parent is the head (see the module
        docstring). Raises CheckpointConflict or LeaseLost, having moved nothing."""
        target = PutTarget(config["configurable"], checkpoint["id"], metadata)
        try:  # begin and end inside: an interrupt landing anywhere must not keep the put's lease
            ticket = self.heads.begin(target)
            stored = self.inner.put(config, checkpoint, metadata, new_versions)
            self.heads.finish(ticket)
            self.heads.end(ticket)
        except BaseException:
            self.heads.abandon(target)
            raise
        return stored

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> RunnableConfig:
        # Cancelled while a step runs in its thread, the put's lease is given back after the step,
        # never beside it: by the begin's thread once it has the lease, or once the step has ended.
        if overrides(self.inner, "put") or not overrides(self.inner, "aput"):
            return await in_thread(self.put, config, checkpoint, metadata, new_versions)
        target = PutTarget(config["configurable"], checkpoint["id"], metadata)
        try:
            ticket = await in_thread_undone(lambda _: self.heads.abandon(target), self.heads.begin, target)
            stored = await self.inner.aput(config, checkpoint, metadata, new_versions)
            await in_thread(self.heads.finish, ticket)
            await in_thread(self.heads.end, ticket)
        except BaseException:
            await in_thread(self.heads.abandon, target)
            raise
        return stored

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        """Delegated after the run's fence check (LeaseLost: nothing written). ``task_path`` is
        declared by name: LangGraph passes it only to savers whose signature has it."""
        self.heads.check_fence(config["configurable"])
        self.inner.put_writes(config, writes, task_id, task_path)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                          task_path: str = "") -> None:
        if overrides(self.inner, "put_writes") or not overrides(self.inner, "aput_writes"):
            return await in_thread(self.put_writes, config, writes, task_id, task_path)
        await in_thread(self.heads.check_fence, config["configurable"])
        await self.inner.aput_writes(config, writes, task_id, task_path)

    def delete_thread(self, thread_id: str) -> None:
        """Delete the thread's checkpoints and heads, holding the thread meanwhile. Raises
        ThreadBusy, deleting nothing, while a ``coherent_graph`` run holds the thread."""
        holder = self.heads.hold_threads([thread_id], "delete")
        try:
            self.inner.delete_thread(thread_id)
            self.heads.forget_thread(thread_id, "langgraph.delete_thread")
        finally:
            self.heads.let_go(holder)

    async def adelete_thread(self, thread_id: str) -> None:
        if overrides(self.inner, "delete_thread") or not overrides(self.inner, "adelete_thread"):
            return await in_thread(self.delete_thread, thread_id)
        holder = await in_thread(self.heads.hold_threads, [thread_id], "delete")
        try:
            await self.inner.adelete_thread(thread_id)
            await in_thread(self.heads.forget_thread, thread_id, "langgraph.delete_thread")
        finally:
            await in_thread(self.heads.let_go, holder)

    # -- used by the extension mixins ----------------------------------------------------------

    def latest_in_inner(self, thread_id: str, checkpoint_ns: str) -> str | None:
        """The inner saver's own latest checkpoint id of (thread, ns)."""
        found = self.inner.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}})
        return found.config["configurable"]["checkpoint_id"] if found is not None else None
