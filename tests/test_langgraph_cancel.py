"""A cancelled async call of the LangGraph adapter (the task awaiting it cancelled, as
``asyncio.timeout`` or a cancelled ``ainvoke`` does) while its step still runs in a worker thread,
which cannot be stopped: what the step takes is given back after the step, never beside it, and a
step that writes has ended when the ``CancelledError`` comes out.

A clean-up run beside the step gives a lease back before the step has taken it. So a
``CoherentStore.aput`` cancelled while its thread waits for the item's lease gives back nothing
(there is nothing yet), the step then gets the lease, and nobody releases it: the next put of the
item is refused ``LeaseHeld`` until the lease's ttl runs out. A hooked node's ``awrite`` cancelled
mid-write gives the node's leases back while the write is still in flight: the ``CancelledError``
comes out with the write's intent pending and its outcome (committed, or refused at commit and
undone) still open. And a give-back left to the event loop, for when the step ends, never happens
when the loop ends first (``asyncio.run`` cancels the waiting task as it finishes): the lease of a
run waiting for its busy thread (``on_busy="wait"``), or of a hooked node waiting for its
artifacts, is then renewed for good.

Steps that wait for a lease let the cancellation out at once and give back what they get in their
own thread; the others let it out once they have ended.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

pytest.importorskip("langgraph")

from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.store.base import BaseStore  # noqa: E402
from langgraph.store.memory import InMemoryStore  # noqa: E402

from agent_coherence import Coordinator, faults  # noqa: E402
from agent_coherence.adapters.langgraph import (  # noqa: E402
    CoherentStore, NodeHandle, VersionedItem, coherent_graph, coherent_node, thread_lease_key,
)
from agent_coherence.adapters.langgraph.store import version_key  # noqa: E402
from conftest import wait_for_offloaded_steps  # noqa: E402
from lg_graphs import LogState, one_node_builder, two_step_builder  # noqa: E402

NS = ("counters",)


def assert_store_settled(coord: Coordinator, store: CoherentStore) -> None:
    """No lease left, and the item's value and version agree (each put that ran bumped it once)."""
    wait_for_offloaded_steps()  # a step still waiting in its thread has taken the lease by now
    assert coord.leases() == []
    item = store.get(NS, "k")
    version = item.version if isinstance(item, VersionedItem) else 0
    assert item is None or item.value == {"n": version}
    store.put(NS, "k", {"n": version + 1}, expect_version=version)  # lease_wait=0: refused if held
    assert store.get(NS, "k").value == {"n": version + 1}


async def cancel_while_the_step_waits(coord: Coordinator, call: Any) -> None:
    """Start ``call`` while another holder has the item's lease, cancel it while its thread waits
    for the lease, then let the lease go."""
    other = coord.acquire(version_key(NS, "k"), "another-writer", ttl=60)
    task = asyncio.ensure_future(call)
    await asyncio.sleep(0.3)  # the put's thread is waiting for the lease
    task.cancel()
    await asyncio.sleep(0.2)  # a clean-up that does not wait for the step has run by now
    coord.release(other)  # the step gets the lease
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_cancelled_store_aput_gives_the_lease_back_after_its_step_ends(quiet_coord: Coordinator) -> None:
    coord = quiet_coord
    waiting = CoherentStore(InMemoryStore(), coord, lease_wait=5)
    asyncio.run(cancel_while_the_step_waits(coord, waiting.aput(NS, "k", {"n": 1})))
    assert_store_settled(coord, CoherentStore(waiting.inner, coord, lease_wait=0))


def test_a_cancelled_graph_run_leaves_its_nodes_store_put_settled(quiet_coord: Coordinator) -> None:
    coord = quiet_coord
    inner = InMemoryStore()

    async def put_item(state: LogState, *, store: BaseStore) -> dict[str, list[str]]:
        await store.aput(NS, "k", {"n": 1})
        return {"log": ["put"]}

    store = CoherentStore(inner, coord, lease_wait=5)
    graph = coherent_graph(one_node_builder("put_item", put_item).compile(checkpointer=InMemorySaver(), store=store),
                           coord, ttl=600)
    config = {"configurable": {"thread_id": "t"}}
    asyncio.run(cancel_while_the_step_waits(coord, graph.ainvoke({"log": ["A"]}, config)))
    assert_store_settled(coord, CoherentStore(inner, coord, lease_wait=0))


def test_a_cancelled_node_write_has_ended_when_the_cancellation_comes_out(quiet_coord: Coordinator, root: Any) -> None:
    coord = quiet_coord
    writing = threading.Event()

    @coherent_node(writes=["out.log"], lease_wait=0)
    async def work(state: LogState, coherence: NodeHandle) -> dict[str, list[str]]:
        await coherence.awrite("out.log", b"the node's output\n")
        return {"log": ["worked"]}

    graph = coherent_graph(one_node_builder("work", work).compile(checkpointer=InMemorySaver()), coord, ttl=600)
    config = {"configurable": {"thread_id": "t"}}

    def slow_commit(step: str) -> None:
        writing.set()
        time.sleep(0.5)

    async def cancel_mid_write() -> None:
        task = asyncio.ensure_future(graph.ainvoke({"log": ["A"]}, config))
        await asyncio.to_thread(writing.wait, 5)  # the write's thread is at its commit
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert coord.backend.get_intent("out.log") is None  # no write of the node still in flight
        assert coord.leases() == []

    with faults.inject("commit", slow_commit):
        asyncio.run(cancel_mid_write())
    info = coord.version("out.log")
    on_disk = (root / "out.log").read_bytes() if (root / "out.log").exists() else None
    assert (info.version if info else 0, on_disk) in ((0, None), (1, b"the node's output\n"))
    again = None if graph.get_state(config).next else {"log": ["B"]}
    assert asyncio.run(graph.ainvoke(again, config))["log"][-1] == "worked"  # the node runs again at once
    assert coord.version("out.log").version >= 1 and coord.leases() == []


def cancel_and_finish(coord: Coordinator, call: Any, held: Any) -> None:
    """Cancel ``call`` while its thread waits for the lease ``held``, and end the event loop at
    once; the lease goes a moment later."""

    async def cancel_while_waiting() -> None:
        task = asyncio.ensure_future(call)
        await asyncio.sleep(0.3)  # the call's thread waits for the lease
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    release = threading.Timer(0.5, coord.release, [held])  # while asyncio.run winds down, or after
    release.start()
    asyncio.run(cancel_while_waiting())
    release.join()
    wait_for_offloaded_steps()


def test_a_run_cancelled_while_waiting_for_its_busy_thread_does_not_keep_it(quiet_coord: Coordinator) -> None:
    coord = quiet_coord
    graph = coherent_graph(two_step_builder(0).compile(checkpointer=InMemorySaver()), coord,
                           on_busy="wait", wait_timeout=5)
    config = {"configurable": {"thread_id": "t"}}
    other = coord.acquire(thread_lease_key("t"), "another-run", ttl=60)
    cancel_and_finish(coord, graph.ainvoke({"log": ["A"]}, config), other)
    assert coord.leases() == []  # the cancelled run's lease is not kept (nor renewed)
    assert graph.invoke({"log": ["B"]}, config)["log"] == ["B", "step1", "step2"]


def test_a_node_cancelled_while_waiting_for_its_leases_does_not_keep_them(quiet_coord: Coordinator) -> None:
    coord = quiet_coord

    @coherent_node(writes=["out.log"], lease_wait=5)
    async def work(state: LogState, coherence: NodeHandle) -> dict[str, list[str]]:
        await coherence.awrite("out.log", b"the node's output\n")
        return {"log": ["worked"]}

    graph = coherent_graph(one_node_builder("work", work).compile(checkpointer=InMemorySaver()), coord, ttl=600)
    config = {"configurable": {"thread_id": "t"}}
    other = coord.acquire("out.log", "another-writer", ttl=60)
    cancel_and_finish(coord, graph.ainvoke({"log": ["A"]}, config), other)
    assert coord.leases() == []
    again = None if graph.get_state(config).next else {"log": ["B"]}
    assert asyncio.run(graph.ainvoke(again, config))["log"][-1] == "worked"
