"""The optional checkpointer methods (``delete_for_runs``, ``copy_thread``, ``prune``), as mixins.

LangGraph's conformance suite counts a capability as present when the saver's class defines the
async method itself, so a wrapper that always defined them would claim capabilities a stock inner
saver lacks (none of InMemorySaver, SqliteSaver, AsyncSqliteSaver has them) and fail those suites.
``extension_class`` therefore builds, per set of capabilities, a subclass carrying exactly the
mixins the inner saver supports. After each operation the head refs are brought back in line with
the inner saver's rewritten history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from ..offload import in_thread

if TYPE_CHECKING:
    from .checkpointer import CoherentCheckpointer

    _Base = CoherentCheckpointer
else:
    _Base = object


def implements(inner: object, name: str) -> bool:
    """Whether ``inner``'s class implements ``name`` itself (not the base class's default)."""
    return getattr(type(inner), name, None) is not getattr(BaseCheckpointSaver, name, None)


class DeleteForRuns(_Base):
    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self.inner.delete_for_runs(run_ids)
        self._repair_all_heads("langgraph.delete_for_runs")

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        if not implements(self.inner, "adelete_for_runs"):
            return await in_thread(self.delete_for_runs, run_ids)
        await self.inner.adelete_for_runs(run_ids)
        await in_thread(self._repair_all_heads, "langgraph.delete_for_runs")

    def _repair_all_heads(self, why: str) -> None:
        """A head whose checkpoint the inner saver deleted moves to the inner saver's latest
        (one lookup per thread and namespace)."""
        for thread_id, ns, head in self.heads.all_heads():
            config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": head}}
            if self.inner.get_tuple(config) is None:
                self.heads.reset(thread_id, ns, self.latest_in_inner(thread_id, ns), why)


class CopyThread(_Base):
    """The target thread is held while it is copied into: ThreadBusy, copying nothing, while a run
    holds it (the copy would replace the history under the run)."""

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        holder = self.heads.hold_threads([target_thread_id], "copy into")
        try:
            self.inner.copy_thread(source_thread_id, target_thread_id)
            self._copy_heads(source_thread_id, target_thread_id)
        finally:
            self.heads.let_go(holder)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        if not implements(self.inner, "acopy_thread"):
            return await in_thread(self.copy_thread, source_thread_id, target_thread_id)
        holder = await in_thread(self.heads.hold_threads, [target_thread_id], "copy into")
        try:
            await self.inner.acopy_thread(source_thread_id, target_thread_id)
            await in_thread(self._copy_heads, source_thread_id, target_thread_id)
        finally:
            await in_thread(self.heads.let_go, holder)

    def _copy_heads(self, source_thread_id: str, target_thread_id: str) -> None:
        self.heads.forget_thread(target_thread_id, "langgraph.copy_thread")
        for ns, _ in self.heads.namespaces(source_thread_id):
            self.heads.reset(target_thread_id, ns, self.latest_in_inner(target_thread_id, ns),
                             "langgraph.copy_thread")


class Prune(_Base):
    """Every pruned thread is held meanwhile: ThreadBusy, pruning nothing, while a run holds one
    (its history would be cut under it)."""

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        thread_ids = _thread_list(thread_ids)
        holder = self.heads.hold_threads(thread_ids, "prune")
        try:
            self.inner.prune(thread_ids, strategy=strategy)
            self._after_prune(thread_ids, strategy)
        finally:
            self.heads.let_go(holder)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if not implements(self.inner, "aprune"):
            return await in_thread(self.prune, thread_ids, strategy=strategy)
        thread_ids = _thread_list(thread_ids)
        holder = await in_thread(self.heads.hold_threads, thread_ids, "prune")
        try:
            await self.inner.aprune(thread_ids, strategy=strategy)
            await in_thread(self._after_prune, thread_ids, strategy)
        finally:
            await in_thread(self.heads.let_go, holder)

    def _after_prune(self, thread_ids: Sequence[str], strategy: str) -> None:
        for thread_id in thread_ids:
            if strategy == "delete":
                self.heads.forget_thread(thread_id, "langgraph.prune")
                continue
            for ns, _ in self.heads.namespaces(thread_id):
                self.heads.reset(thread_id, ns, self.latest_in_inner(thread_id, ns), "langgraph.prune")


def _thread_list(thread_ids: Sequence[str]) -> list[str]:
    """The thread ids as a list, read once (a generator would be used up by the hold), and a
    single id refused rather than pruned letter by letter."""
    if isinstance(thread_ids, (str, bytes)):
        raise TypeError(f"thread_ids must be a sequence of thread ids, not one id: {thread_ids!r}; "
                        f"pass [{thread_ids!r}]")
    return list(thread_ids)


_MIXINS: dict[str, type] = {"delete_for_runs": DeleteForRuns, "copy_thread": CopyThread, "prune": Prune}
_CLASSES: dict[tuple[type, tuple[str, ...]], type] = {}


def extension_class(base: type, inner: object) -> Any:
    """``base``, or its subclass with the mixins of the capabilities ``inner`` implements."""
    present = tuple(name for name in _MIXINS
                    if implements(inner, name) or implements(inner, "a" + name))
    if not present:
        return base
    key = (base, present)
    if key not in _CLASSES:
        mixins = tuple(_MIXINS[name] for name in present)
        _CLASSES[key] = type(base.__name__, (*mixins, base), {"__module__": base.__module__})
    return _CLASSES[key]
