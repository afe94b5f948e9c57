"""Node hooks with real LangGraph: retried and resumed nodes write once, concurrent runs on many
threads keep every update of one declared artifact, fence checks before the body, zero work."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.checkpoint.sqlite")

from langchain_core.runnables import RunnableConfig  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: E402
from langgraph.config import get_config  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.types import RetryPolicy  # noqa: E402

from agent_coherence import Coordinator, LeaseLost, faults  # noqa: E402
from agent_coherence.adapters.langgraph import (  # noqa: E402
    NodeHandle, coherent_graph, coherent_node, coherent_nodes, current_node, thread_lease_key,
)
from conftest import FORK  # noqa: E402
from lg_graphs import LogState, one_node_builder, step_node  # noqa: E402

NO_WAIT = RetryPolicy(initial_interval=0.01, jitter=False, max_attempts=3)


def one_node_graph(node: Any, saver: Any = None, retry: RetryPolicy | None = None) -> Any:
    builder = one_node_builder("work", node, retry_policy=retry)
    return builder.compile(checkpointer=saver if saver is not None else InMemorySaver())


def append_line(old: bytes) -> bytes:
    return old + b"line\n"


def flaky(attempts: list[int]) -> None:
    """Fail the first attempt after its side effect, the way a dropped connection would."""
    attempts.append(1)
    if len(attempts) == 1:
        raise ConnectionError("transient")


def test_stock_retried_node_applies_its_side_effect_twice(root: Path) -> None:
    attempts: list[int] = []
    target = root / "out.log"

    def work(state: LogState) -> dict[str, list[str]]:
        with open(target, "ab") as handle:
            handle.write(b"line\n")
        flaky(attempts)
        return {"log": ["done"]}

    one_node_graph(work, retry=NO_WAIT).invoke({"log": []}, {"configurable": {"thread_id": "t"}})
    assert len(attempts) == 2
    assert target.read_bytes() == b"line\nline\n"  # the retry wrote it again


def test_hooked_retried_node_writes_once(root: Path, coord: Coordinator) -> None:
    attempts: list[int] = []

    @coherent_node(writes=["out.log"])
    def work(state: LogState, coherence: NodeHandle) -> dict[str, list[str]]:
        coherence.update("out.log", append_line)
        flaky(attempts)
        return {"log": [f"replayed={len(coherence.replayed)}"]}

    app = coherent_graph(one_node_graph(work, retry=NO_WAIT), coord)
    out = app.invoke({"log": []}, {"configurable": {"thread_id": "t"}})
    assert len(attempts) == 2
    assert (root / "out.log").read_bytes() == b"line\n"
    assert out["log"] == ["replayed=1"]  # the second attempt got the first attempt's receipt
    assert coord.journal.count(kind="write", key="out.log") == 1
    assert coord.leases() == []


def test_a_replayed_receipt_names_the_file_under_the_root_the_run_resumed_in(tmp_path: Path) -> None:
    # The receipt kept the path of the root its first attempt ran in: resumed on another host, or
    # after the project directory moved, the node was handed a path to a file that is not there.
    first, moved = tmp_path / "project", tmp_path / "renamed"
    first.mkdir()
    attempts: list[int] = []
    receipts: list[Any] = []

    @coherent_node(writes=["out.log"])
    def work(state: LogState, coherence: NodeHandle) -> dict[str, list[str]]:
        receipts.append(coherence.update("out.log", append_line))
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("stopped after the write")
        return {"log": ["done"]}

    graph = one_node_graph(work)
    config: Any = {"configurable": {"thread_id": "t"}}
    with Coordinator.open(first) as coord, pytest.raises(RuntimeError):
        coherent_graph(graph, coord).invoke({"log": []}, config)
    os.rename(first, moved)
    with Coordinator.open(moved) as coord:
        assert coherent_graph(graph, coord).invoke(None, config)["log"] == ["done"]
    assert receipts[0].path == str(first / "out.log")
    assert receipts[1].path == str(moved / "out.log") and receipts[1].version == receipts[0].version
    assert (moved / "out.log").read_bytes() == b"line\n"


def crashing_run(root: str, db: str) -> None:
    """Write, then die (SIGKILL) before the write's receipt is recorded."""
    coord = Coordinator.open(root)

    @coherent_node(writes=["out.log"], ttl=0.5)
    def work(state: LogState, coherence: NodeHandle) -> dict[str, list[str]]:
        coherence.update("out.log", append_line)
        return {"log": ["done"]}

    with SqliteSaver.from_conn_string(db) as saver:
        app = coherent_graph(one_node_graph(work, saver), coord, ttl=0.5)
        with faults.inject("langgraph.effect", lambda step: os.kill(os.getpid(), signal.SIGKILL)):
            app.invoke({"log": []}, {"configurable": {"thread_id": "t"}})


@pytest.mark.contract  # the coordination also runs on PostgreSQL
def test_a_node_resumed_after_a_crash_recognises_its_committed_write(root: Path, coord: Coordinator) -> None:
    coord.close()
    db = str(root / "checkpoints.db")
    proc = FORK.Process(target=crashing_run, args=(str(root), db))
    proc.start()
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL
    assert (root / "out.log").read_bytes() == b"line\n"
    replays: list[int] = []

    @coherent_node(writes=["out.log"], lease_wait=10)
    def work(state: LogState, coherence: NodeHandle) -> dict[str, list[str]]:
        coherence.update("out.log", append_line)
        replays.append(len(coherence.replayed))
        return {"log": ["done"]}

    with SqliteSaver.from_conn_string(db) as saver:
        app = coherent_graph(one_node_graph(work, saver), coord, on_busy="wait", wait_timeout=10)
        app.invoke(None, {"configurable": {"thread_id": "t"}})  # resume the interrupted run
    assert replays == [1]  # recognised from the version record: no second write
    assert (root / "out.log").read_bytes() == b"line\n"
    assert coord.journal.count(kind="write", key="out.log") == 1


def counting_runs(root: str, worker: int, runs: int, hooked: bool, barrier: Any) -> None:
    coord = Coordinator.open(root)
    path = os.path.join(root, "count.txt")

    def bump(old: bytes) -> bytes:
        time.sleep(0.001)  # the work a node does between its read and its write
        return str(int(old or b"0") + 1).encode()

    @coherent_node(writes=["count.txt"])
    def hooked_work(state: LogState, coherence: NodeHandle) -> dict[str, list[str]]:
        coherence.update("count.txt", bump)
        return {"log": ["+1"]}

    def naive_work(state: LogState) -> dict[str, list[str]]:
        try:
            with open(path, "rb") as handle:
                old = handle.read()
        except FileNotFoundError:
            old = b""
        with open(path, "wb") as handle:
            handle.write(bump(old))
        return {"log": ["+1"]}

    graph = one_node_graph(hooked_work if hooked else naive_work)
    app = coherent_graph(graph, coord) if hooked else graph
    barrier.wait()
    for run in range(runs):
        app.invoke({"log": []}, {"configurable": {"thread_id": f"w{worker}-r{run}"}})
    coord.close()


@pytest.mark.contract  # the coordination also runs on PostgreSQL
@pytest.mark.parametrize("hooked", [False, True], ids=["stock", "coherent_node"])
def test_four_processes_fifty_runs_each_on_one_declared_artifact(root: Path, coord: Coordinator, hooked: bool) -> None:
    coord.close()
    processes, runs = 4, 50
    barrier = FORK.Barrier(processes)
    procs = [FORK.Process(target=counting_runs, args=(str(root), i, runs, hooked, barrier)) for i in range(processes)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    total = int((root / "count.txt").read_bytes())
    if hooked:
        assert total == processes * runs
        assert coord.journal.count(kind="write", key="count.txt") == processes * runs
    else:
        assert total < processes * runs  # lost updates: concurrent runs overwrote each other


def test_the_fence_is_checked_before_a_node_body_even_under_async_durability(root: Path, coord: Coordinator) -> None:
    ran: list[str] = []

    @coherent_node()
    def first(state: LogState) -> dict[str, list[str]]:
        configurable = get_config()["configurable"]
        coord.release(coord.leases(configurable["coherence_holder"])[0])
        coord.acquire(thread_lease_key("t"), "intruder")  # another run takes the thread
        ran.append("first")
        return {"log": ["first"]}

    @coherent_node()
    def second(state: LogState) -> dict[str, list[str]]:
        ran.append("second")  # must not run: this run no longer holds the thread
        return {"log": ["second"]}

    builder = StateGraph(LogState)
    builder.add_node("first", first)
    builder.add_node("second", second)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", END)
    app = coherent_graph(builder.compile(checkpointer=InMemorySaver()), coord)
    with pytest.raises(LeaseLost):
        app.invoke({"log": []}, {"configurable": {"thread_id": "t"}}, durability="async")
    assert ran == ["first"]


def test_declared_writes_never_made_are_a_zero_work_anomaly(coord: Coordinator) -> None:
    seen: list[Any] = []
    coord.liveness.on_anomaly = seen.append

    @coherent_node(writes=["plan.md"])
    def lazy(state: LogState) -> dict[str, list[str]]:
        return {"log": ["nothing written"]}

    coherent_graph(one_node_graph(lazy), coord).invoke({"log": []}, {"configurable": {"thread_id": "t"}})
    assert [a.kind for a in seen] == ["zero_work"]
    assert seen[0].facts["node"] == "lazy" and seen[0].facts["declared"] == ["plan.md"]
    assert coord.journal.count(kind="anomaly.zero_work") == 1


def test_undeclared_writes_are_refused_and_signatures_kept(root: Path, coord: Coordinator) -> None:
    def original(state: LogState, config: RunnableConfig) -> dict[str, list[str]]:
        current_node().write("other.md", "x")
        return {"log": []}

    hooked = coherent_node(writes=["plan.md"])(original)
    assert inspect.signature(hooked) == inspect.signature(original)
    with pytest.raises(ValueError, match="did not declare"):
        coherent_graph(one_node_graph(hooked), coord).invoke({"log": []}, {"configurable": {"thread_id": "t"}})
    assert not (root / "other.md").exists()


def test_writes_given_as_one_key_are_refused_when_declaring(root: Path, coord: Coordinator) -> None:
    # A string is iterable: writes="plan.md" declared the files "p", "l", "a", ..., and the run
    # then failed on the key "." (or, for a key without a dot, refused the node's own write).
    with pytest.raises(TypeError, match=r"writes=\['plan.md'\]"):
        coherent_node(writes="plan.md")
    with pytest.raises(TypeError, match="artifact keys"):
        coherent_node(writes=[5])  # type: ignore[list-item]
    builder = one_node_builder("plan", step_node("plan", 0))
    with pytest.raises(TypeError, match="node 'plan'"):
        coherent_nodes(builder, {"plan": "notes"})
    @coherent_node(writes=[Path("notes")])
    def write_notes(state: LogState) -> dict[str, list[str]]:
        current_node().write("notes", "x")
        return {"log": []}

    coherent_graph(one_node_graph(write_notes), coord).invoke({"log": []}, {"configurable": {"thread_id": "t"}})
    assert (root / "notes").read_bytes() == b"x" and not (root / "n").exists()


def test_async_nodes_and_the_helper_that_wraps_every_node(root: Path, coord: Coordinator) -> None:
    async def planner(state: LogState, config: RunnableConfig) -> dict[str, list[str]]:
        assert config["configurable"]["thread_id"] == "t"  # injection still works through the hook
        await current_node().awrite("plan.md", "1. write the report\n")
        return {"log": ["planned"]}

    def worker(state: LogState) -> dict[str, list[str]]:
        current_node().update("plan.md", lambda old: old + b"done\n")
        return {"log": ["worked"]}

    builder = StateGraph(LogState)
    builder.add_node("planner", planner)
    builder.add_node("worker", worker)
    builder.add_node("plain", step_node("plain", 0))
    builder.add_edge(START, "planner")
    builder.add_edge("planner", "worker")
    builder.add_edge("worker", "plain")
    builder.add_edge("plain", END)
    coherent_nodes(builder, {"planner": ["plan.md"], "worker": ["plan.md"]})
    app = coherent_graph(builder.compile(checkpointer=InMemorySaver()), coord)
    out = asyncio.run(app.ainvoke({"log": []}, {"configurable": {"thread_id": "t"}}))
    assert out["log"] == ["planned", "worked", "plain"]
    assert (root / "plan.md").read_text() == "1. write the report\ndone\n"
    assert coord.version("plan.md").version == 2  # type: ignore[union-attr]


def test_more_parallel_async_nodes_on_one_artifact_than_the_default_executor_has_threads(coord: Coordinator) -> None:
    # Each branch waits for the artifact's lease in a thread. In the event loop's default executor
    # (cores + 4 threads) the waiters filled it, the holder's write could not get a thread, and the
    # run failed with LeaseHeld once lease_wait ran out, one line written.
    from langgraph.types import Send

    branches = min(32, (os.cpu_count() or 1) + 4) + 4

    @coherent_node(writes=["log.md"], lease_wait=5)
    async def work(state: dict, coherence: NodeHandle) -> dict[str, list[str]]:
        await coherence.aupdate("log.md", lambda old: old + f"{state['i']}\n".encode())
        return {"log": [str(state["i"])]}

    builder = StateGraph(LogState)
    builder.add_node("work", work)
    builder.add_conditional_edges(START, lambda state: [Send("work", {"i": i}) for i in range(branches)], ["work"])
    builder.add_edge("work", END)
    app = coherent_graph(builder.compile(checkpointer=InMemorySaver()), coord)
    out = asyncio.run(app.ainvoke({"log": []}, {"configurable": {"thread_id": "fan"}}))
    assert sorted(out["log"], key=int) == [str(i) for i in range(branches)]
    assert sorted(coord.read("log.md").data.split(), key=int) == [str(i).encode() for i in range(branches)]
