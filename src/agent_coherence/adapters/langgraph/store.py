"""``CoherentStore``: a LangGraph ``BaseStore`` whose puts can require the version they read.

LangGraph's stores have no version or if-match (``PutOp`` has none, ``Item`` carries timestamps
only, the SQLite store writes with ``INSERT OR REPLACE``), so concurrent read-modify-writes of one
key lose updates. Here each item's version is a coordinator version record of the key
``store:<namespace>/<key>`` (labels percent-quoted). A put holds that key's lease while it checks
the expected version, lets the inner store write, and bumps the version (fence-checked), so the
check, the write and the bump are one step for every process sharing the coordinator.

- ``get`` / ``search`` return :class:`VersionedItem` / :class:`VersionedSearchItem` with
  ``.version`` (0 for a key never put through this wrapper, or deleted), read before the value
  (a search reads its hits again after their versions): a value is never older than the version
  it comes with, so a read-modify-write on it is refused rather than applied over a lost update;
- ``put(..., expect_version=v)`` raises ``VersionConflict`` (facts key, expected, actual) unless
  the version is ``v``; without it, a put is unconditional but still serialised and versioned;
- ``batch`` / ``abatch`` apply ops in order: two puts to one key in one batch are both applied, in
  order (or the second refused by its own expected version), never collapsed into one.

Limits: writes that go to the inner store directly are not seen (their items keep the version of
the last put through this wrapper). A delete makes the version read 0 again, so an expectation of
"absent" matches a key that was created and deleted meanwhile; so does an item the inner store
expired itself (TTL), which a put expecting 0 finds gone from the inner store.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, NamedTuple
from urllib.parse import quote

from langgraph.store.base import (
    NOT_PROVIDED, BaseStore, GetOp, Item, NotProvided, Op, PutOp, Result, SearchItem, SearchOp,
)

from ...arguments import wait_seconds
from ...errors import VersionConflict
from ..offload import in_thread, in_thread_undone
from .errors import require_coordinator
from .keys import run_holder

if TYPE_CHECKING:
    from ...backends.base import VersionRecord
    from ...coordinator import Coordinator


STORE_LEASE_TTL = 10.0  # a put takes milliseconds; a dead putter's lease blocks its key this long


class VersionedItem(Item):
    """An ``Item`` with the ``version`` its key had when it was read."""

    __slots__ = ("version",)

    def __init__(self, item: Item, version: int) -> None:
        super().__init__(value=item.value, key=item.key, namespace=item.namespace,
                         created_at=item.created_at, updated_at=item.updated_at)
        self.version = version

    def dict(self) -> dict:
        return {**super().dict(), "version": self.version}


class VersionedSearchItem(SearchItem):
    """A ``SearchItem`` with the ``version`` its key had when it was read."""

    __slots__ = ("version",)

    def __init__(self, item: SearchItem, version: int) -> None:
        super().__init__(item.namespace, item.key, item.value, item.created_at, item.updated_at, item.score)
        self.version = version

    def dict(self) -> dict:
        return {**super().dict(), "version": self.version}


class CheckedPutOp(NamedTuple):
    """A put that commits only if the key's version is ``expect_version`` (None: unchecked)."""

    op: PutOp
    expect_version: int | None = None


def version_key(namespace: tuple[str, ...], key: str) -> str:
    labels = "/".join(quote(label, safe="") for label in namespace)
    return f"store:{labels}/{quote(key, safe='')}"


def current_version(record: "VersionRecord | None") -> int:
    """The version an item reads as: 0 when never put or deleted."""
    return record.version if record is not None and record.sha256 is not None else 0


class CoherentStore(BaseStore):
    """Wraps any ``BaseStore`` (InMemoryStore, SqliteStore, PostgresStore, ...). ``lease_wait``:
    how long a put waits for another put of the same key to finish (``LeaseHeld`` after that)."""

    def __init__(self, inner: BaseStore, coordinator: "Coordinator", *, lease_wait: float = 10.0) -> None:
        if isinstance(inner, CoherentStore):
            raise TypeError("the store is already a CoherentStore: wrap the inner store once")
        if not isinstance(inner, BaseStore):
            raise TypeError(f"CoherentStore wraps a LangGraph BaseStore (InMemoryStore, SqliteStore, ...), "
                            f"not {type(inner).__name__}")
        require_coordinator(coordinator, "CoherentStore")
        self.inner = inner
        self.coordinator = coordinator
        self.lease_wait = wait_seconds(lease_wait, "lease_wait")
        self.supports_ttl = inner.supports_ttl
        self.ttl_config = inner.ttl_config

    def __repr__(self) -> str:
        return f"CoherentStore({self.inner!r})"

    # -- the inner store's TTL sweeper (SqliteStore, PostgresStore and their async forms) -------
    # Passed through as they are (a coroutine from an async store): the sweep deletes expired
    # items in the inner store, and a put expecting version 0 finds them absent.

    def sweep_ttl(self, *args: Any, **kwargs: Any) -> Any:
        return self._sweeper_method("sweep_ttl")(*args, **kwargs)

    def start_ttl_sweeper(self, *args: Any, **kwargs: Any) -> Any:
        return self._sweeper_method("start_ttl_sweeper")(*args, **kwargs)

    def stop_ttl_sweeper(self, *args: Any, **kwargs: Any) -> Any:
        return self._sweeper_method("stop_ttl_sweeper")(*args, **kwargs)

    def _sweeper_method(self, name: str) -> Any:
        method = getattr(self.inner, name, None)
        if method is None:
            raise AttributeError(f"{type(self.inner).__name__} has no {name}: its items expire on its own terms, "
                                 "or not at all")
        return method

    # -- the convenience methods that take an expected version ---------------------------------

    def put(self, namespace: tuple[str, ...], key: str, value: Mapping[str, Any],
            index: Literal[False] | list[str] | None = None, *, ttl: float | None | NotProvided = NOT_PROVIDED,
            expect_version: int | None = None) -> None:
        self.batch([CheckedPutOp(self._put_op(namespace, key, _value(value), index, ttl), expect_version)])

    async def aput(self, namespace: tuple[str, ...], key: str, value: Mapping[str, Any],
                   index: Literal[False] | list[str] | None = None, *,
                   ttl: float | None | NotProvided = NOT_PROVIDED, expect_version: int | None = None) -> None:
        await self.abatch([CheckedPutOp(self._put_op(namespace, key, _value(value), index, ttl), expect_version)])

    def delete(self, namespace: tuple[str, ...], key: str, *, expect_version: int | None = None) -> None:
        self.batch([CheckedPutOp(PutOp(namespace, str(key), None, ttl=None), expect_version)])

    async def adelete(self, namespace: tuple[str, ...], key: str, *, expect_version: int | None = None) -> None:
        await self.abatch([CheckedPutOp(PutOp(namespace, str(key), None, ttl=None), expect_version)])

    def _put_op(self, namespace: tuple[str, ...], key: str, value: dict[str, Any] | None,
                index: Literal[False] | list[str] | None, ttl: float | None | NotProvided) -> PutOp:
        if isinstance(namespace, str):
            # a string is a sequence of labels to the inner store: "users" would become ("u", "s", ...)
            raise TypeError(f"a namespace is a tuple of labels, not a string: ({namespace!r},)")
        if not namespace or any(not isinstance(label, str) or not label or "." in label for label in namespace):
            raise ValueError(f"invalid namespace {namespace!r}: non-empty string labels without '.'")
        if ttl not in (NOT_PROVIDED, None) and not self.supports_ttl:
            raise NotImplementedError(f"TTL is not supported by {type(self.inner).__name__}")
        if isinstance(ttl, NotProvided):
            ttl = (self.ttl_config or {}).get("default_ttl")
        return PutOp(namespace, str(key), value, index=index, ttl=ttl)

    # -- batch: reads pass through with versions, puts one by one in order ---------------------

    def batch(self, ops: Iterable[Op | CheckedPutOp]) -> list[Result]:
        ops = list(ops)
        results: list[Result] = [None] * len(ops)
        reads: list[int] = []
        for index, op in enumerate(ops):
            if isinstance(op, (PutOp, CheckedPutOp)):
                self._read_into(results, ops, reads)
                self._put(_checked(op))
            else:
                reads.append(index)
        self._read_into(results, ops, reads)
        return results

    def _read_into(self, results: list[Result], ops: list[Any], reads: list[int]) -> None:
        if reads:
            batch = [ops[i] for i in reads]  # reads only
            before = self._versions(_gets(batch))
            found = self.inner.batch(batch)
            hits = _hits(batch, found)
            versions = {**before, **self._versions(hits)}
            fresh = self.inner.batch(_refetch(hits)) if hits else []
            for index, item in zip(reads, _versioned(batch, found, versions, dict(zip(hits, fresh)))):
                results[index] = item
            reads.clear()

    async def abatch(self, ops: Iterable[Op | CheckedPutOp]) -> list[Result]:
        ops = list(ops)
        results: list[Result] = [None] * len(ops)
        reads: list[int] = []

        async def flush() -> None:
            if reads:
                batch = [ops[i] for i in reads]
                before = await asyncio.to_thread(self._versions, _gets(batch))
                found = await self.inner.abatch(batch)  # type: ignore[arg-type]
                hits = _hits(batch, found)
                versions = {**before, **await asyncio.to_thread(self._versions, hits)}
                fresh = await self.inner.abatch(_refetch(hits)) if hits else []
                for index, item in zip(reads, _versioned(batch, found, versions, dict(zip(hits, fresh)))):
                    results[index] = item
                reads.clear()

        for index, op in enumerate(ops):
            if isinstance(op, (PutOp, CheckedPutOp)):
                await flush()
                await self._aput(_checked(op))
            else:
                reads.append(index)
        await flush()
        return results

    def _versions(self, places: Iterable["Place"]) -> dict["Place", int]:
        """The current version of each (namespace, key). Read before the value it goes with: a put
        writes the value, then bumps the version, so a value read after its version is that
        version's or a newer one's (a put expecting that version is then refused, never applied
        over a lost update); read after, an old value could pair with a new version."""
        backend = self.coordinator.backend
        return {place: current_version(backend.get_version(version_key(*place))) for place in places}

    def _put(self, checked: CheckedPutOp) -> None:
        # The holder is this put's alone: whatever raised, wherever an interrupt landed (even
        # right after the grant committed, its result lost), the lease is given back by holder.
        holder = run_holder("langgraph-store")
        try:
            lease, actual = self._begin(checked, holder)
            self.inner.batch([checked.op])
            self._commit(checked.op, lease, actual)
            self.coordinator.release(lease)
        except BaseException:
            self.coordinator.backend.release_holder(holder)
            raise

    async def _aput(self, checked: CheckedPutOp) -> None:
        # Given back by holder on any failure, as in _put. A cancellation while a step runs in its
        # thread: the lease the begin then gets is given back there; the commit and the release
        # end before the cancellation comes out. Given back beside a step still running, the
        # lease would be taken afterwards and stay held by a put nobody runs any more.
        holder = run_holder("langgraph-store")
        release = self.coordinator.backend.release_holder
        try:
            lease, actual = await in_thread_undone(lambda _: release(holder), self._begin, checked, holder)
            await self.inner.abatch([checked.op])
            await in_thread(self._commit, checked.op, lease, actual)
            await in_thread(self.coordinator.release, lease)
        except BaseException:
            await in_thread(release, holder)
            raise

    def _begin(self, checked: CheckedPutOp, holder: str) -> tuple[Any, int]:
        """Take the key's lease for ``holder`` and check the expected version. Raises
        VersionConflict (the lease given back, nothing written) or LeaseHeld."""
        op = checked.op
        key = version_key(op.namespace, op.key)
        lease = self.coordinator.acquire(key, holder, STORE_LEASE_TTL, wait=self.lease_wait)
        record = self.coordinator.backend.get_version(key)
        actual = current_version(record)
        if checked.expect_version == 0 and actual != 0 and self._gone_from_inner(op):
            actual = 0  # the inner store dropped the item itself (its TTL ran out): it reads as absent
        if checked.expect_version is not None and checked.expect_version != actual:
            self.coordinator.release(lease)
            self.coordinator.backend.journal_append("conflict.version", key, lease.holder,
                                                    {"expected": checked.expect_version, "actual": actual})
            raise VersionConflict(
                f"store item {op.namespace!r}/{op.key!r} is at version {actual}, not the expected "
                f"{checked.expect_version}", key=key, expected=checked.expect_version, actual=actual,
                namespace=op.namespace, item_key=op.key)
        return lease, record.version if record is not None else 0

    def _gone_from_inner(self, op: PutOp) -> bool:
        """Whether the inner store no longer has the item, which its version record says is
        present. A TTL expiry deletes the item without a put through this wrapper; a reader then
        gets nothing, expects "absent" (0), and would be refused for ever. Asked only under the
        key's lease, so no put through the wrapper can land between this read and the put."""
        return self.inner.batch([GetOp(op.namespace, op.key, refresh_ttl=False)])[0] is None

    def _commit(self, op: PutOp, lease: Any, recorded: int) -> None:
        encoded = json.dumps(op.value, sort_keys=True, default=str).encode() if op.value is not None else None
        self.coordinator.backend.record_version(
            lease.key, lease.holder, hashlib.sha256(encoded).hexdigest() if encoded is not None else None,
            len(encoded or b""), fence=lease.fence, expect_version=recorded,
            kind="store.put" if op.value is not None else "store.delete")


def _value(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The value a put stores; None deletes the item, as in LangGraph's own stores."""
    return dict(value) if value is not None else None


def _checked(op: PutOp | CheckedPutOp) -> CheckedPutOp:
    return op if isinstance(op, CheckedPutOp) else CheckedPutOp(op, None)


Place = tuple[tuple[str, ...], str]


def _gets(ops: list[Any]) -> list[Place]:
    return [(tuple(op.namespace), str(op.key)) for op in ops if isinstance(op, GetOp)]


def _hits(ops: list[Any], found: list[Result]) -> list[Place]:
    """The (namespace, key) of every item the searches among ``ops`` found, each once."""
    hits: dict[Place, None] = {}
    for op, result in zip(ops, found):
        if isinstance(op, SearchOp) and isinstance(result, list):
            hits.update(((tuple(item.namespace), item.key), None) for item in result if isinstance(item, SearchItem))
    return list(hits)


def _refetch(hits: list[Place]) -> list[Op]:
    """Gets of the search hits, run after their versions were read (see ``_versions``); they do
    not refresh TTLs, which the search itself did if asked to."""
    return [GetOp(namespace, key, refresh_ttl=False) for namespace, key in hits]


def _versioned(ops: list[Any], found: list[Result], versions: dict[Place, int],
               fresh: dict[Place, Result]) -> list[Result]:
    """``found`` with versions: a got item with the version read before it; a search hit with its
    value read again after its version (dropped if it was deleted meanwhile)."""
    out: list[Result] = []
    for op, result in zip(ops, found):
        if isinstance(op, GetOp) and isinstance(result, Item):
            out.append(VersionedItem(result, versions[(tuple(op.namespace), str(op.key))]))
        elif isinstance(op, SearchOp) and isinstance(result, list):
            out.append(_fresh_hits(result, versions, fresh))  # type: ignore[arg-type]
        else:
            out.append(result)
    return out


def _fresh_hits(hits: list[Any], versions: dict[Place, int], fresh: dict[Place, Result]) -> list[SearchItem]:
    out: list[SearchItem] = []
    for hit in hits:
        place = (tuple(hit.namespace), hit.key)
        now = fresh.get(place)
        if isinstance(hit, SearchItem) and isinstance(now, Item):
            item = SearchItem(now.namespace, now.key, now.value, now.created_at, now.updated_at, hit.score)
            out.append(VersionedSearchItem(item, versions[place]))
    return out
