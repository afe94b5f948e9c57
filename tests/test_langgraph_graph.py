"""coherent_graph and CoherentCheckpointer in one process: every entry point under every durability
mode, fail-stop, release of the thread lease on every exit, time travel, subgraphs, delegation."""

from __future__ import annotations

import asyncio
import inspect
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("langgraph.checkpoint.sqlite")

from langgraph.checkpoint.base import BaseCheckpointSaver  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: E402
from langgraph.config import get_config  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402

from agent_coherence import Coordinator, LeaseLost  # noqa: E402
from agent_coherence.adapters.langgraph import (  # noqa: E402
    CheckpointConflict, CoherentCheckpointer, ThreadBusy, coherent_graph, thread_lease_key,
)
from agent_coherence.adapters.langgraph.renewal import renewer_for  # noqa: E402
from lg_graphs import History, LogState, one_node_builder, step_node, two_step_builder  # noqa: E402

CONFIG: Any = {"configurable": {"thread_id": "t"}}
KEY = thread_lease_key("t")


@pytest.fixture
def saver(tmp_path: Path) -> Iterator[SqliteSaver]:
    with SqliteSaver.from_conn_string(str(tmp_path / "checkpoints.db")) as stock:
        yield stock


def run_entry(app: Any, entry: str, payload: Any, config: dict, **kwargs: Any) -> list[str]:
    if entry == "invoke":
        return app.invoke(payload, config, **kwargs)["log"]
    if entry == "ainvoke":
        return asyncio.run(app.ainvoke(payload, config, **kwargs))["log"]
    if entry == "stream":
        return [c for c in app.stream(payload, config, stream_mode="values", **kwargs)][-1]["log"]

    async def consume() -> list[Any]:
        return [c async for c in app.astream(payload, config, stream_mode="values", **kwargs)]

    return asyncio.run(consume())[-1]["log"]


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
@pytest.mark.parametrize("entry", ["invoke", "ainvoke", "stream", "astream"])
def test_entry_points_hold_the_thread_under_every_durability(
        coord: Coordinator, saver: SqliteSaver, tmp_path: Path, entry: str, durability: str) -> None:
    seen: list[str | None] = []

    def watch(state: LogState) -> dict[str, list[str]]:
        lease = coord.backend.get_lease(KEY)
        seen.append(lease.holder if lease else None)
        return {"log": ["watched"]}

    builder = two_step_builder(0)
    builder.add_node("watch", watch)
    builder.add_edge("step2", "watch")
    app = coherent_graph(builder.compile(checkpointer=saver), coord)
    first = run_entry(app, entry, {"log": ["one"]}, CONFIG, durability=durability)
    second = run_entry(app, entry, {"log": ["two"]}, CONFIG, durability=durability)
    assert first == ["one", "step1", "step2", "watched"]
    assert second == first + ["two", "step1", "step2", "watched"]
    assert len(seen) == 2 and all(h and h.startswith("langgraph-run:") for h in seen)
    assert coord.leases() == []  # released after each run
    assert History(str(tmp_path / "checkpoints.db"), "t").is_one_chain()
    assert app.get_state(CONFIG).values["log"] == second
    assert coord.journal.count(kind="langgraph.checkpoint") >= 2


def stealing_builder(ran: list[str]) -> StateGraph:
    """a -> b -> c, where node a hands the thread lease to another holder (a takeover)."""

    def a(state: LogState) -> dict[str, list[str]]:
        configurable = get_config()["configurable"]
        coord = configurable["__coherence_coordinator"]
        coord.release(coord.leases(configurable["coherence_holder"])[0])
        coord.acquire(KEY, "intruder")
        ran.append("a")
        return {"log": ["a"]}

    def later(name: str) -> Any:
        def node(state: LogState) -> dict[str, list[str]]:
            ran.append(name)  # a side effect a fenced-off run must not reach
            return {"log": [name]}
        return node

    builder = StateGraph(LogState)
    builder.add_node("a", a)
    builder.add_node("b", later("b"))
    builder.add_node("c", later("c"))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    return builder


def test_fenced_runs_stop_before_the_next_step_by_default(coord: Coordinator, saver: SqliteSaver) -> None:
    ran: list[str] = []
    app = coherent_graph(stealing_builder(ran).compile(checkpointer=saver), coord)
    with pytest.raises(LeaseLost):
        app.invoke({"log": []}, CONFIG)
    assert ran == ["a"]  # durability="sync" by default: the refused put stops the run


def test_async_durability_only_detects_a_lost_lease_at_the_end(coord: Coordinator, saver: SqliteSaver) -> None:
    ran: list[str] = []
    app = coherent_graph(stealing_builder(ran).compile(checkpointer=saver), coord)
    with pytest.raises(LeaseLost):
        app.invoke({"log": []}, CONFIG, durability="async")
    assert ran == ["a", "b", "c"]  # later nodes ran before the refusal surfaced (see docs)


def test_the_lease_is_released_on_error_close_and_cancellation(coord: Coordinator, saver: SqliteSaver) -> None:
    def boom(state: LogState) -> dict[str, list[str]]:
        raise ValueError("node failed")

    builder = two_step_builder(0)
    builder.add_node("boom", boom)
    builder.add_edge("step2", "boom")
    app = coherent_graph(builder.compile(checkpointer=saver), coord)
    with pytest.raises(ValueError):
        app.invoke({"log": ["x"]}, CONFIG)
    assert coord.leases() == []

    slow = coherent_graph(two_step_builder(0.2).compile(checkpointer=saver), coord)
    stream = slow.stream({"log": ["y"]}, {"configurable": {"thread_id": "s"}})
    next(stream)
    assert coord.backend.get_lease(thread_lease_key("s")) is not None
    stream.close()
    assert coord.leases() == []

    async def cancel_midway() -> None:
        task = asyncio.ensure_future(slow.ainvoke({"log": ["z"]}, {"configurable": {"thread_id": "c"}}))
        await asyncio.sleep(0.1)
        assert coord.backend.get_lease(thread_lease_key("c")) is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    assert coord.leases() == []


def test_update_state_and_batch_take_the_lease(coord: Coordinator, saver: SqliteSaver) -> None:
    app = coherent_graph(two_step_builder(0.3).compile(checkpointer=saver), coord)
    app.invoke({"log": ["seed"]}, CONFIG)
    runner = threading.Thread(target=app.invoke, args=({"log": ["long"]}, CONFIG))
    runner.start()
    time.sleep(0.15)
    with pytest.raises(ThreadBusy) as busy:
        app.update_state(CONFIG, {"log": ["edit"]})
    assert busy.value.holder.startswith("langgraph-run:") and busy.value.expires_at > time.time()
    raw = two_step_builder(0).compile(checkpointer=CoherentCheckpointer(saver, coord))  # no thread lease
    with pytest.raises(ThreadBusy):
        raw.invoke({"log": ["outsider"]}, CONFIG)
    runner.join()
    app.update_state(CONFIG, {"log": ["edit"]})
    assert app.get_state(CONFIG).values["log"][-1] == "edit"

    same_thread = app.batch([{"log": ["p"]}, {"log": ["q"]}], CONFIG, return_exceptions=True)
    assert sorted(type(r).__name__ for r in same_thread) == ["ThreadBusy", "dict"]
    configs = [{"configurable": {"thread_id": f"b{i}"}} for i in range(3)]
    assert [r["log"] for r in asyncio.run(app.abatch([{"log": [i]} for i in range(3)], configs))] == [
        [i, "step1", "step2"] for i in range(3)]


def test_time_travel_forks_deliberately(coord: Coordinator, saver: SqliteSaver) -> None:
    app = coherent_graph(two_step_builder(0).compile(checkpointer=saver), coord)
    app.invoke({"log": ["one"]}, CONFIG)
    app.invoke({"log": ["two"]}, CONFIG)
    after_first = next(s for s in app.get_state_history(CONFIG) if s.values.get("log") == ["one", "step1", "step2"])
    forked = app.invoke({"log": ["fork"]}, after_first.config)
    assert forked["log"] == ["one", "step1", "step2", "fork", "step1", "step2"]
    assert app.get_state(CONFIG).values["log"] == forked["log"]  # the fork is the head now
    app.update_state(after_first.config, {"log": ["edited"]})
    assert app.get_state(CONFIG).values["log"] == ["one", "step1", "step2", "edited"]
    assert coord.journal.count(kind="langgraph.fork") == 2

    # the same non-head parent without the deliberate address is a race, and refused
    cp: CoherentCheckpointer = app.checkpointer
    old_id = after_first.config["configurable"]["checkpoint_id"]
    plain: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": old_id}}
    stale = saver.get_tuple(plain)
    assert stale is not None
    checkpoint = {**stale.checkpoint, "id": "1ffffffff-0000-6000-8000-000000000000"}
    with pytest.raises(CheckpointConflict) as conflict:
        cp.put(plain, checkpoint, {"source": "loop", "step": 9}, {})
    assert conflict.value.expected == old_id
    assert conflict.value.thread_id == "t"


def test_subgraph_namespaces_have_their_own_heads(coord: Coordinator, saver: SqliteSaver) -> None:
    inner = StateGraph(LogState)
    inner.add_node("inner_step", step_node("inner_step", 0))
    inner.add_edge(START, "inner_step")
    inner.add_edge("inner_step", END)
    outer = StateGraph(LogState)
    outer.add_node("sub", inner.compile())
    outer.add_node("after", step_node("after", 0))
    outer.add_edge(START, "sub")
    outer.add_edge("sub", "after")
    outer.add_edge("after", END)
    app = coherent_graph(outer.compile(checkpointer=saver), coord)
    assert app.invoke({"log": ["x"]}, CONFIG)["log"] == ["x", "x", "inner_step", "after"]
    second = app.invoke({"log": ["y"]}, CONFIG)["log"]
    assert second[:4] == ["x", "x", "inner_step", "after"] and second[-2:] == ["inner_step", "after"]
    namespaces = [ns for ns, _ in app.checkpointer.heads.namespaces("t")]
    assert "" in namespaces and any(ns.startswith("sub:") for ns in namespaces)
    assert app.get_state(CONFIG, subgraphs=True).values["log"][:2] == ["x", "x"]


def test_delegation_of_what_langgraph_inspects(coord: Coordinator, saver: SqliteSaver, tmp_path: Path) -> None:
    cp = CoherentCheckpointer(saver, coord)
    assert "task_path" in inspect.signature(cp.put_writes).parameters
    assert cp.get_next_version(None, None).split(".")[0] == saver.get_next_version(None, None).split(".")[0]
    assert isinstance(cp.get_next_version(None, None), str)  # the inner saver's string versions, not ints
    assert cp.serde is saver.serde
    assert type(cp).adelete_for_runs is BaseCheckpointSaver.adelete_for_runs  # not claimed: inner lacks it
    assert type(cp).acopy_thread is BaseCheckpointSaver.acopy_thread
    clone = cp.with_allowlist([("mymodule", "MyType")])
    assert isinstance(clone, CoherentCheckpointer) and clone.inner.serde is not None

    builder = StateGraph(LogState)  # parallel tasks: their writes must keep their task_path
    builder.add_node("b1", step_node("b1", 0))
    builder.add_node("b2", step_node("b2", 0))
    builder.add_edge(START, "b1")
    builder.add_edge(START, "b2")
    builder.add_edge("b1", END)
    builder.add_edge("b2", END)
    app = coherent_graph(builder.compile(checkpointer=saver), coord)
    assert sorted(app.invoke({"log": []}, CONFIG)["log"]) == ["b1", "b2"]
    conn = sqlite3.connect(tmp_path / "checkpoints.db")
    try:
        paths = {row[0] for row in conn.execute("SELECT task_path FROM writes")}
    finally:
        conn.close()
    assert any(p and "b1" in p for p in paths)


class CopyingSaver(InMemorySaver):
    """An inner saver that implements copy_thread (none of the stock ones does)."""

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        for found in reversed(list(self.list({"configurable": {"thread_id": source_thread_id}}))):
            config: Any = {"configurable": {"thread_id": target_thread_id, "checkpoint_ns": "",
                                       "checkpoint_id": (found.parent_config or {}).get("configurable", {}).get("checkpoint_id")}}
            self.put(config, found.checkpoint, found.metadata, found.checkpoint["channel_versions"])


def test_extended_methods_exist_only_when_the_inner_saver_has_them(coord: Coordinator) -> None:
    plain = CoherentCheckpointer(InMemorySaver(), coord)
    copying = CoherentCheckpointer(CopyingSaver(), coord)
    assert not hasattr(type(plain), "acopy_thread") or type(plain).acopy_thread is BaseCheckpointSaver.acopy_thread
    assert type(copying).acopy_thread is not BaseCheckpointSaver.acopy_thread
    assert isinstance(copying, CoherentCheckpointer)
    app = coherent_graph(two_step_builder(0).compile(checkpointer=copying), coord)
    app.invoke({"log": ["src"]}, {"configurable": {"thread_id": "src"}})
    copying.copy_thread("src", "dst")
    assert app.get_state({"configurable": {"thread_id": "dst"}}).values["log"] == ["src", "step1", "step2"]
    assert app.invoke({"log": ["more"]}, {"configurable": {"thread_id": "dst"}})["log"][-1] == "step2"


class PruningSaver(CopyingSaver):
    """An inner saver that implements copy_thread and prune (none of the stock ones does)."""

    def prune(self, thread_ids: Any, *, strategy: str = "keep_latest") -> None:
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            for checkpoints in self.storage[thread_id].values():
                for old in sorted(checkpoints)[:-1]:
                    del checkpoints[old]


def checkpoint_count(app: Any, thread_id: str) -> int:
    return len(list(app.get_state_history({"configurable": {"thread_id": thread_id}})))


def test_copy_and_prune_refuse_a_thread_a_run_holds_and_change_nothing(coord: Coordinator) -> None:
    # Copied into or pruned under a run, the thread's history changed beneath the run: its next
    # put failed on a head that had moved, or the run's parent checkpoint was gone.
    saver = PruningSaver()
    checkpointer = CoherentCheckpointer(saver, coord)
    app = coherent_graph(two_step_builder(0).compile(checkpointer=checkpointer), coord)
    for thread_id in ("a", "b", "src"):
        app.invoke({"log": [thread_id]}, {"configurable": {"thread_id": thread_id}})
    before = {thread_id: checkpoint_count(app, thread_id) for thread_id in ("a", "b")}
    assert before["a"] > 1
    run = coord.acquire(thread_lease_key("b"), "langgraph-run:elsewhere", 30)

    with pytest.raises(ThreadBusy, match="copy into") as busy:
        checkpointer.copy_thread("src", "b")
    assert busy.value.holder == "langgraph-run:elsewhere" and busy.value.thread_id == "b"
    assert app.get_state({"configurable": {"thread_id": "b"}}).values["log"][0] == "b"
    with pytest.raises(ThreadBusy, match="prune"):
        checkpointer.prune(["a", "b"])  # "a" is taken first, then given back
    assert {thread_id: checkpoint_count(app, thread_id) for thread_id in ("a", "b")} == before
    assert coord.backend.get_lease(thread_lease_key("a")) is None
    with pytest.raises(ThreadBusy):
        asyncio.run(checkpointer.aprune(["a", "b"], strategy="delete"))
    assert checkpoint_count(app, "b") == before["b"]

    coord.release(run)
    checkpointer.copy_thread("src", "b")
    assert app.get_state({"configurable": {"thread_id": "b"}}).values["log"][0] == "src"
    checkpointer.prune(iter(["a"]))
    assert checkpoint_count(app, "a") == 1
    assert app.invoke({"log": ["more"]}, {"configurable": {"thread_id": "a"}})["log"][-1] == "step2"
    with pytest.raises(TypeError, match=r"pass \['a'\]"):
        checkpointer.prune("a")
    assert [coord.backend.get_lease(thread_lease_key(t)) for t in ("a", "b", "src")] == [None] * 3


def test_importing_the_adapter_imports_no_langgraph() -> None:
    code = ("import sys, agent_coherence, agent_coherence.adapters.langgraph as lg; "
            "assert not [m for m in sys.modules if m.startswith(('langgraph', 'langchain'))], 'eager'; "
            "lg.ThreadBusy; assert 'langgraph' not in sys.modules; "
            "lg.CoherentCheckpointer; assert 'langgraph.checkpoint.base' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_thread_lease_is_renewed_while_a_long_run_runs(coord: Coordinator) -> None:
    busy: list[str] = []
    app: Any = None

    def long(state: LogState) -> dict[str, list[str]]:
        time.sleep(0.9)  # three times the lease's ttl: only renewal keeps the thread
        try:
            app.invoke({"log": ["rival"]}, {"configurable": {"thread_id": "t"}})
        except ThreadBusy as error:
            busy.append(error.holder)
        return {"log": ["long"]}

    builder = one_node_builder("long", long)
    app = coherent_graph(builder.compile(checkpointer=InMemorySaver()), coord, ttl=0.3)
    assert app.invoke({"log": []}, CONFIG)["log"] == ["long"]
    assert len(busy) == 1 and busy[0].startswith("langgraph-run:")
    assert coord.leases() == []


def test_a_short_lease_given_while_the_renewer_sleeps_on_a_long_one_is_renewed(coord: Coordinator) -> None:
    """The renewal thread, asleep until a 30 s lease falls due, is woken for a 0.3 s one."""
    renewer = renewer_for(coord)
    long = renewer.hold(coord.acquire("long", "run-long", 30.0))
    time.sleep(0.05)  # the thread is now asleep until the long lease's renewal (10 s away)
    short_lease = coord.acquire("short", "run-short", 0.3)
    short = renewer.hold(short_lease)
    try:
        time.sleep(0.9)  # three times the short lease's ttl
        coord.backend.check_fence("short", "run-short", short_lease.fence)  # LeaseLost if not renewed
        assert short.lost is None and short.lease.expires_at > short_lease.expires_at
    finally:
        renewer.drop(short)
        renewer.drop(long)


def test_async_sqlite_saver_and_with_config(coord: Coordinator, tmp_path: Path) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async def runs() -> tuple[list[str], list[str]]:
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "async.db")) as saver:
            app = coherent_graph(two_step_builder(0).compile(checkpointer=saver), coord).with_config(
                {"configurable": {"thread_id": "a"}})
            first = (await app.ainvoke({"log": ["one"]}))["log"]
            second = [c async for c in app.astream({"log": ["two"]}, stream_mode="values")][-1]["log"]
            return first, second

    first, second = asyncio.run(runs())
    assert first == ["one", "step1", "step2"]
    assert second == first + ["two", "step1", "step2"]
    assert coord.journal.count(kind="langgraph.checkpoint") >= 6
    assert coord.journal.count(kind="lease.acquire", key=thread_lease_key("a")) == 2  # the bound thread was held


def test_interrupt_and_resume_through_coherent_graph(coord: Coordinator, saver: SqliteSaver) -> None:
    from langgraph.types import Command, interrupt

    def ask(state: LogState) -> dict[str, list[str]]:
        answer = interrupt("approve?")
        return {"log": [f"approved={answer}"]}

    builder = one_node_builder("ask", ask)
    app = coherent_graph(builder.compile(checkpointer=saver), coord)
    paused = app.invoke({"log": ["draft"]}, CONFIG)
    assert "__interrupt__" in paused
    assert coord.leases() == []  # the pause ends the run: the thread is free for the human's answer
    assert app.invoke(Command(resume="yes"), CONFIG)["log"] == ["draft", "approved=yes"]
    assert coord.journal.count(kind="conflict.checkpoint") == 0


def test_abatch_keeps_to_max_concurrency_as_batch_does(coord: Coordinator) -> None:
    # abatch started every run at once whatever max_concurrency said (LangGraph's own abatch
    # and this wrapper's batch keep to it), e.g. past an LLM rate limit.
    running, peak = [0], [0]

    async def node(state: LogState) -> dict[str, list[str]]:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(0.05)
        running[0] -= 1
        return {"log": ["n"]}

    app = coherent_graph(one_node_builder("n", node).compile(checkpointer=InMemorySaver()), coord)
    configs = [{"configurable": {"thread_id": f"c{i}"}, "max_concurrency": 2} for i in range(6)]
    results = asyncio.run(app.abatch([{"log": []}] * 6, configs))
    assert results == [{"log": ["n"]}] * 6 and peak[0] == 2
