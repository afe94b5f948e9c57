"""Two OS processes run one graph on one thread of one SqliteSaver database at the same moment.

Stock LangGraph forks the history and silently drops one run's finished work from the head;
``coherent_graph`` refuses or serialises the second run; ``CoherentCheckpointer`` alone refuses the
loser's first checkpoint. Children are forked from this already-initialised interpreter; each opens
its own Coordinator and its own SQLite connection (none is open in the parent at the fork). The
races through the wrappers and the zombie run are contract tests: their leases, fences and head
refs also run on PostgreSQL (the checkpoints stay in SQLite).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.checkpoint.sqlite")

from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: E402

from agent_coherence import Coordinator, LeaseLost  # noqa: E402
from agent_coherence.adapters.langgraph import (  # noqa: E402
    CheckpointConflict, CoherentCheckpointer, ThreadBusy, coherent_graph, head_ref_name,
)
from conftest import FORK, wait_for  # noqa: E402
from lg_graphs import History, LogState, contains_run, run_work, two_step_builder  # noqa: E402

THREAD = "T"
CONFIG: Any = {"configurable": {"thread_id": THREAD}}


def build(saver: Any, mode: str, coord: Coordinator | None, delay: float = 0.5) -> Any:
    """The graph as each mode runs it: stock, CoherentCheckpointer alone, or coherent_graph."""
    if mode == "stock":
        return two_step_builder(delay).compile(checkpointer=saver)
    assert coord is not None
    if mode == "checkpointer":
        return two_step_builder(delay).compile(checkpointer=CoherentCheckpointer(saver, coord))
    on_busy = mode.split(":")[1]
    return coherent_graph(two_step_builder(delay).compile(checkpointer=saver), coord, on_busy=on_busy)


def seed(root: Path, db: str, mode: str) -> None:
    coord = Coordinator.open(root) if mode != "stock" else None
    with SqliteSaver.from_conn_string(db) as saver:
        build(saver, mode, coord, delay=0).invoke({"log": ["seed"]}, CONFIG)
    if coord is not None:
        coord.close()


def racer(root: str, db: str, mode: str, name: str, durability: str, barrier: Any, results: Any) -> None:
    coord = Coordinator.open(root) if mode != "stock" else None
    try:
        with SqliteSaver.from_conn_string(db) as saver:
            app = build(saver, mode, coord)
            barrier.wait()
            try:
                out = app.invoke({"log": [name]}, CONFIG, durability=durability)
                results.put((name, "ok", out["log"]))
            except ThreadBusy as busy:
                results.put((name, "busy", busy.holder))
            except CheckpointConflict as conflict:
                results.put((name, "conflict", (conflict.expected, conflict.actual)))
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put((name, "error", repr(error)))
    finally:
        if coord is not None:
            coord.close()


def race(root: Path, mode: str, durability: str = "sync", seeded: bool = True) -> tuple[dict[str, tuple], str]:
    db = str(root / "checkpoints.db")
    if seeded:
        seed(root, db, mode)
    barrier, results = FORK.Barrier(2), FORK.Queue()
    procs = [FORK.Process(target=racer, args=(str(root), db, mode, name, durability, barrier, results))
             for name in ("A", "B")]
    for proc in procs:
        proc.start()
    outcome = {}
    for _ in procs:
        name, status, detail = results.get(timeout=60)
        outcome[name] = (status, detail)
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0
    assert not [o for o in outcome.values() if o[0] == "error"], outcome
    return outcome, db


def head_log(db: str, coord: Coordinator | None) -> list[str]:
    with SqliteSaver.from_conn_string(db) as saver:
        wrapped = CoherentCheckpointer(saver, coord) if coord is not None else saver
        found = wrapped.get_tuple(CONFIG)
        assert found is not None
        return list(found.checkpoint["channel_values"]["log"])


def test_stock_sqlite_saver_forks_and_drops_a_finished_run(root: Path) -> None:
    outcome, db = race(root, "stock")
    assert [status for status, _ in outcome.values()] == ["ok", "ok"]  # both callers believe they persisted
    history = History(db, THREAD)
    assert len(history.forked_parents) == 1 and len(history.leaves) == 2  # the fork
    head = head_log(db, None)
    dropped = [name for name in outcome if not contains_run(head, name)]
    assert len(dropped) == 1  # one run's complete, returned work is not on the head


@pytest.mark.contract  # the coordination also runs on PostgreSQL (the checkpoints stay in SQLite)
def test_coherent_graph_reject_refuses_exactly_one_run(root: Path, coord: Coordinator) -> None:
    coord.close()  # no connection open across the fork
    outcome, db = race(root, "coherent:reject")
    statuses = sorted(status for status, _ in outcome.values())
    assert statuses == ["busy", "ok"]
    winner = next(name for name, (status, _) in outcome.items() if status == "ok")
    loser = next(name for name, (status, _) in outcome.items() if status == "busy")
    assert outcome[loser][1].startswith("langgraph-run:")  # ThreadBusy names the run holding the thread
    history = History(db, THREAD)
    assert history.is_one_chain()
    assert head_log(db, coord) == ["seed", "step1", "step2", *run_work(winner)]
    assert coord.leases() == []


@pytest.mark.contract  # the coordination also runs on PostgreSQL (the checkpoints stay in SQLite)
def test_coherent_graph_wait_serialises_both_runs(root: Path, coord: Coordinator) -> None:
    coord.close()
    outcome, db = race(root, "coherent:wait")
    assert sorted(status for status, _ in outcome.values()) == ["ok", "ok"]
    history = History(db, THREAD)
    assert history.is_one_chain()
    head = head_log(db, coord)
    first, second = sorted(outcome, key=lambda name: head.index(name))
    assert head == ["seed", "step1", "step2", *run_work(first), *run_work(second)]
    assert outcome[second][1] == head  # the second run started from the first one's finished state


@pytest.mark.contract  # the coordination also runs on PostgreSQL
@pytest.mark.parametrize("durability", ["sync", "async"])
def test_checkpointer_alone_never_forks_and_the_loser_gets_a_conflict(
        root: Path, coord: Coordinator, durability: str) -> None:
    coord.close()
    outcome, db = race(root, "checkpointer", durability)
    statuses = sorted(status for status, _ in outcome.values())
    assert statuses == ["conflict", "ok"], outcome
    history = History(db, THREAD)
    assert history.forked_parents == [] and len(history.leaves) == 1
    head = head_log(db, coord)
    for name, (status, _) in outcome.items():
        if status == "ok":
            assert contains_run(head, name)  # no run that returned has its work dropped
        else:
            assert name not in head


def test_two_new_threads_race_without_the_thread_lease(root: Path, coord: Coordinator) -> None:
    """The race the relaxed root rule leaves: two runs that both start a *new* thread put
    parentless checkpoints. With ``durability="exit"`` each run puts once, so both return and one
    run's work is off the head: detected (journaled ``langgraph.root``), not prevented. Through
    ``coherent_graph`` the same race refuses one run."""
    coord.close()
    outcome, db = race(root, "checkpointer", "exit", seeded=False)
    assert sorted(status for status, _ in outcome.values()) == ["ok", "ok"]
    head = head_log(db, coord)
    assert sum(contains_run(head, name) for name in outcome) == 1
    assert coord.journal.count(kind="langgraph.root") == 1

    fresh = root / "second"
    fresh.mkdir()
    outcome, db = race(fresh, "coherent:reject", "exit", seeded=False)
    assert sorted(status for status, _ in outcome.values()) == ["busy", "ok"]
    assert History(db, THREAD).is_one_chain()


def zombie(root: str, db: str, inside: Any, results: Any) -> None:
    """A run with a short lease whose process is stopped (SIGSTOP) inside a node."""
    coord = Coordinator.open(root)
    builder = two_step_builder(0)

    def slow(state: LogState) -> dict[str, list[str]]:
        inside.set()
        time.sleep(0.5)  # stopped here by the parent, long enough for the lease to expire
        return {"log": ["zombie-work"]}

    builder.add_node("slow", slow)
    builder.add_edge("step2", "slow")
    try:
        with SqliteSaver.from_conn_string(db) as saver:
            app = coherent_graph(builder.compile(checkpointer=saver), coord, ttl=0.6)
            app.invoke({"log": ["Z"]}, CONFIG)
            results.put("returned")
    except LeaseLost as lost:
        results.put(f"lease lost: {lost.current_holder}")
    except BaseException as error:  # noqa: BLE001
        results.put(repr(error))


@pytest.mark.contract  # the coordination also runs on PostgreSQL
def test_a_zombie_run_cannot_put_or_put_writes(root: Path, coord: Coordinator) -> None:
    coord.close()
    db = str(root / "checkpoints.db")
    inside, results = FORK.Event(), FORK.Queue()
    proc = FORK.Process(target=zombie, args=(str(root), db, inside, results))
    proc.start()
    assert inside.wait(30)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: coord.backend.get_lease(f"langgraph:thread/{THREAD}") is None, timeout=10)
        with SqliteSaver.from_conn_string(db) as saver:  # another run takes the thread
            out = coherent_graph(two_step_builder(0).compile(checkpointer=saver), coord).invoke(
                {"log": ["X"]}, CONFIG)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    proc.join(timeout=30)
    assert results.get(timeout=10).startswith("lease lost")
    assert contains_run(out["log"], "X")
    assert head_log(db, coord) == out["log"]
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        blobs = [row[0] for row in conn.execute("SELECT value FROM writes")]
        blobs += [row[0] for row in conn.execute("SELECT checkpoint FROM checkpoints")]
    finally:
        conn.close()
    assert not any(b"zombie-work" in bytes(blob) for blob in blobs if blob)  # refused: put_writes wrote nothing
    head = coord.backend.get_ref(head_ref_name(THREAD))
    assert head is not None and head.holder != "" and "langgraph-run" in head.holder


def long_run(root: str, db: str, results: Any) -> None:
    try:
        with Coordinator.open(root) as coordinator, SqliteSaver.from_conn_string(db) as saver:
            results.put(build(saver, "graph:reject", coordinator).invoke({"log": ["R"]}, CONFIG)["log"])
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put(repr(error))


def test_a_thread_a_run_holds_is_not_deleted_under_it(root: Path, coord: Coordinator) -> None:
    # Deleted under a running run, the thread came back at that run's next put, with the whole
    # deleted conversation in its state and one checkpoint of history: the delete was undone.
    db = str(root / "checkpoints.db")
    seed(root, db, "graph:reject")
    results = FORK.Queue()
    proc = FORK.Process(target=long_run, args=(str(root), db, results))
    proc.start()
    wait_for(lambda: coord.backend.get_lease(f"langgraph:thread/{THREAD}") is not None, timeout=30)
    with SqliteSaver.from_conn_string(db) as saver:
        checkpointer = CoherentCheckpointer(saver, coord)
        with pytest.raises(ThreadBusy, match="delete"):
            checkpointer.delete_thread(THREAD)
        proc.join(timeout=30)
        assert results.get(timeout=10) == run_work("seed") + run_work("R")  # its history intact
        assert History(db, THREAD).is_one_chain()
        checkpointer.delete_thread(THREAD)  # the run has ended: the thread goes
        assert checkpointer.get_tuple(CONFIG) is None and History(db, THREAD).ids == set()
        assert coord.backend.get_ref(head_ref_name(THREAD)) is None
        assert coord.backend.get_lease(f"langgraph:thread/{THREAD}") is None
