"""CoherentStore over LangGraph's stores: versions on items, expected-version puts, batches applied
in order, and three processes doing read-modify-writes of one key on a SQLite store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.store.sqlite")

from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.store.base import BaseStore, GetOp, PutOp, SearchOp  # noqa: E402
from langgraph.store.memory import InMemoryStore  # noqa: E402
from langgraph.store.sqlite import SqliteStore  # noqa: E402

from agent_coherence import Coordinator, VersionConflict  # noqa: E402
from agent_coherence.adapters.langgraph import (  # noqa: E402
    CheckedPutOp, CoherentStore, VersionedItem, VersionedSearchItem, coherent_graph,
)
from conftest import FORK, wait_for  # noqa: E402
from lg_graphs import LogState, one_node_builder  # noqa: E402

NS = ("counters",)


def test_items_carry_versions_and_puts_check_them(coord: Coordinator) -> None:
    store = CoherentStore(InMemoryStore(), coord)
    assert store.get(NS, "a") is None
    store.put(NS, "a", {"n": 1}, expect_version=0)
    item = store.get(NS, "a")
    assert isinstance(item, VersionedItem) and item.version == 1 and item.value == {"n": 1}
    with pytest.raises(VersionConflict) as conflict:
        store.put(NS, "a", {"n": 99}, expect_version=0)
    assert (conflict.value.expected, conflict.value.actual) == (0, 1)
    assert store.get(NS, "a").value == {"n": 1}  # the refused put changed nothing
    store.put(NS, "a", {"n": 2})  # unconditional, still versioned
    assert store.get(NS, "a").version == 2
    [hit] = store.search(NS)
    assert isinstance(hit, VersionedSearchItem) and hit.version == 2
    store.delete(NS, "a", expect_version=2)
    assert store.get(NS, "a") is None
    store.put(NS, "a", {"n": 3}, expect_version=0)
    assert coord.journal.count(kind="store.put") == 3 and coord.journal.count(kind="store.delete") == 1


def test_two_puts_to_one_key_in_one_batch_apply_in_order(coord: Coordinator) -> None:
    store = CoherentStore(InMemoryStore(), coord)
    results = store.batch([PutOp(NS, "k", {"v": "first"}), GetOp(NS, "k"), PutOp(NS, "k", {"v": "second"}),
                           GetOp(NS, "k")])
    assert results[0] is None and results[2] is None
    assert (results[1].value, results[1].version) == ({"v": "first"}, 1)
    assert (results[3].value, results[3].version) == ({"v": "second"}, 2)
    with pytest.raises(VersionConflict):  # the second expects the version the first replaced
        store.batch([CheckedPutOp(PutOp(NS, "k", {"v": "third"}), 2), CheckedPutOp(PutOp(NS, "k", {"v": "x"}), 2)])
    assert store.get(NS, "k").value == {"v": "third"}

    async def async_side() -> tuple[Any, Any]:
        await store.aput(NS, "k", {"v": "async"}, expect_version=3)
        return await store.aget(NS, "k"), await store.abatch([GetOp(NS, "k")])

    item, [again] = asyncio.run(async_side())
    assert (item.value, item.version, again.version) == ({"v": "async"}, 4, 4)


def test_nodes_get_the_store_through_the_graph(coord: Coordinator) -> None:
    store = CoherentStore(InMemoryStore(), coord)

    def count(state: LogState, store: BaseStore) -> dict[str, list[str]]:
        item = store.get(NS, "runs")
        store.put(NS, "runs", {"n": (item.value["n"] if item else 0) + 1},  # type: ignore[call-arg]
                  expect_version=item.version if isinstance(item, VersionedItem) else 0)
        return {"log": ["counted"]}

    builder = one_node_builder("count", count)
    app = coherent_graph(builder.compile(checkpointer=InMemorySaver(), store=store), coord)
    for run in range(3):
        app.invoke({"log": []}, {"configurable": {"thread_id": f"t{run}"}})
    assert store.get(NS, "runs").value == {"n": 3}


def increments(root: str, db: str, count: int, coherent: bool, barrier: Any) -> None:
    coord = Coordinator.open(root)
    with SqliteStore.from_conn_string(db) as sqlite_store:
        store: Any = CoherentStore(sqlite_store, coord) if coherent else sqlite_store
        barrier.wait()
        for _ in range(count):
            while True:
                item = store.get(NS, "hits")
                value = {"n": (item.value["n"] if item else 0) + 1}
                time.sleep(0.002)  # the work a node does between its read and its write
                if not coherent:
                    store.put(NS, "hits", value)
                    break
                try:
                    store.put(NS, "hits", value, expect_version=item.version if item else 0)
                    break
                except VersionConflict:
                    continue  # someone else's increment landed first: read again
    coord.close()


@pytest.mark.contract  # the coordination also runs on PostgreSQL
@pytest.mark.parametrize("coherent", [False, True], ids=["stock", "coherent"])
def test_three_processes_fifty_read_modify_writes_each(root: Path, coord: Coordinator, coherent: bool) -> None:
    coord.close()
    db = str(root / "store.db")
    with SqliteStore.from_conn_string(db) as setup:
        setup.setup()
    processes, each = 3, 50
    barrier = FORK.Barrier(processes)
    procs = [FORK.Process(target=increments, args=(str(root), db, each, coherent, barrier)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    with SqliteStore.from_conn_string(db) as check:
        hits = check.get(NS, "hits")
        assert hits is not None
        total = hits.value["n"]
    if coherent:
        assert total == processes * each
    else:
        assert total < processes * each  # the stock store lost updates


def test_more_concurrent_async_puts_of_one_key_than_the_default_executor_has_threads(coord: Coordinator) -> None:
    # The puts waiting for the key's lease in the default executor filled it; the holder's version
    # bump could not get a thread, and it failed as LeaseLost once its 10 s lease expired.
    import os

    store = CoherentStore(InMemoryStore(), coord, lease_wait=5)
    puts = min(32, (os.cpu_count() or 1) + 4) + 4

    async def increment() -> None:
        while True:
            item = await store.aget(NS, "k")
            try:
                await store.aput(NS, "k", {"n": (item.value["n"] if item else 0) + 1},
                                 expect_version=item.version if isinstance(item, VersionedItem) else 0)
                return
            except VersionConflict:
                continue

    async def all_puts() -> None:
        await asyncio.gather(*[increment() for _ in range(puts)])

    started = time.monotonic()
    asyncio.run(all_puts())
    item = store.get(NS, "k")
    assert item.value == {"n": puts} and item.version == puts
    assert time.monotonic() - started < 5  # no put waited out lease_wait


class PutBetween(InMemoryStore):
    """An InMemoryStore that, once armed, runs ``between`` right after its next read returns: a
    put by someone else lands between a reader's read of the value and of the version."""

    between: Any = None

    def batch(self, ops: Any) -> list[Any]:
        ops = list(ops)
        found = super().batch(ops)
        if self.between is not None and any(isinstance(op, (GetOp, SearchOp)) for op in ops):
            between, self.between = self.between, None
            between()
        return found

    async def abatch(self, ops: Any) -> list[Any]:
        return self.batch(ops)


@pytest.mark.parametrize("read", ["get", "search", "aget"])
def test_a_put_between_the_value_and_version_reads_is_not_lost(coord: Coordinator, read: str) -> None:
    # The version was read after the value: an old value came back with the new version, and a
    # read-modify-write on it overwrote the other put (a lost update, no VersionConflict).
    inner = PutBetween()
    reader, writer = CoherentStore(inner, coord), CoherentStore(inner, coord)
    writer.put(NS, "k", {"n": 1})
    inner.between = lambda: writer.put(NS, "k", {"n": 100})
    if read == "get":
        item = reader.get(NS, "k")
    elif read == "aget":
        item = asyncio.run(reader.aget(NS, "k"))
    else:
        [item] = reader.search(NS)
    assert item is not None
    try:
        reader.put(NS, "k", {"n": item.value["n"] + 1}, expect_version=item.version)  # type: ignore[attr-defined]
    except VersionConflict:
        pass
    assert writer.get(NS, "k").value in ({"n": 100}, {"n": 101})  # the other put is kept, or built on


@pytest.mark.contract  # the version records also run on PostgreSQL
def test_an_item_the_inner_store_expired_can_be_put_again_as_absent(coord: Coordinator, tmp_path: Path) -> None:
    # The TTL sweep deletes the item without a put through the wrapper, so its version record still
    # said "present": the documented read-modify-write (expect 0 when the read found nothing) was
    # refused for ever, and the hint to re-read and retry could not help.
    with SqliteStore.from_conn_string(str(tmp_path / "store.db"), ttl={"default_ttl": 1 / 60}) as sqlite_store:
        sqlite_store.setup()
        store = CoherentStore(sqlite_store, coord)
        store.put(NS, "a", {"n": 1}, expect_version=0)
        assert wait_for(store.sweep_ttl, timeout=10, interval=0.2) == 1  # expiry has 1 s resolution
        assert store.get(NS, "a") is None
        store.put(NS, "b", {"n": 1}, expect_version=0)
        with pytest.raises(VersionConflict):  # an item that is there is still not "absent"
            store.put(NS, "b", {"n": 2}, expect_version=0)
        store.put(NS, "a", {"n": 2}, expect_version=0)
        item = store.get(NS, "a")
        assert (item.value, item.version) == ({"n": 2}, 2)
        with pytest.raises(VersionConflict):
            store.put(NS, "a", {"n": 3}, expect_version=0)


def test_a_none_value_deletes_and_a_string_namespace_is_refused(coord: Coordinator) -> None:
    # put(ns, key, None) deletes in LangGraph's stores; here it raised "'NoneType' object is not
    # iterable". A string namespace was split into one-letter labels ("users" -> "u", "s", ...),
    # after which InMemoryStore's list_namespaces failed on every call.
    inner = InMemoryStore()
    store = CoherentStore(inner, coord)
    store.put(NS, "a", {"n": 1})
    store.put(NS, "a", None, expect_version=1)  # type: ignore[arg-type]
    assert store.get(NS, "a") is None and inner.get(NS, "a") is None
    with pytest.raises(TypeError, match=r"\('users',\)"):
        store.put("users", "a", {"n": 1})  # type: ignore[arg-type]
    assert ("u", "s", "e", "r", "s") not in store.list_namespaces() and inner.search(("u",)) == []


def test_the_inner_stores_ttl_sweeper_is_reached_through_the_wrapper(coord: Coordinator, tmp_path: Path) -> None:
    with SqliteStore.from_conn_string(str(tmp_path / "store.db"), ttl={"default_ttl": 1 / 60,
                                                                       "sweep_interval_minutes": 1}) as inner:
        inner.setup()
        store = CoherentStore(inner, coord)
        store.start_ttl_sweeper()
        assert store.stop_ttl_sweeper(timeout=5) is True
        assert store.sweep_ttl() == 0
    with pytest.raises(AttributeError, match="InMemoryStore has no start_ttl_sweeper"):
        CoherentStore(InMemoryStore(), coord).start_ttl_sweeper()
