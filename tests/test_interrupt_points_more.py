"""KeyboardInterrupt at every point one can land inside the LangGraph adapter's operations and an
anomaly report and a spool put (see interrupt_points.py): after each, no lease is left held and the next operation
goes through at once, with the thread's head on a checkpoint the saver holds whole.

Before the fixes these cases found, an interrupt landing

- after a lease was granted and before the code that gives it back was entered (the grant's result
  lost, or a call made between the two) left the per-put lease of a checkpoint put, the per-key
  lease of a store put, or a run's thread lease held: the next put waited for its ttl, the next run
  on the thread was refused ``ThreadBusy``;
- inside the renewal set-up of a run, or at the start of its release, left the run's thread lease
  in the renewer: renewed every ttl/3 for the process's lifetime, the thread busy for good;
- between the renewer's claim of its thread and the thread's start left no renewer thread in the
  process: no run lease was ever renewed again;
- in a hooked node's entry (a grant's result lost, or inside the renewer's ``hold``) or at the call
  of its exit left the node's artifact leases held (renewed, when inside ``hold``): the next
  attempt at the node was refused ``LeaseHeld``;
- in ``Liveness.report`` after it marked the anomaly reported and before its journal append
  committed: the anomaly was never journaled and never reported again; and after the append
  committed, its result lost (first point: the return of its COMMIT, backends/sqlite.py:217 in
  ``_attempt``): the retry journaled it a second time. Now the retry finds the entry by its
  ``report_id`` and journals nothing more;
- at the close ending a spool put's flock on ``seq``: the descriptor stayed open and locked, and
  every later put, in any process, waited for good; anywhere in a put before its rename: the temp
  file stayed in ``tmp/`` (for 36 hours).

The leases these operations take have holders unique to one call, so each is given back by its
holder on the way out of an interrupt, wherever it landed.
"""

from __future__ import annotations

import fcntl
import itertools
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph")

from langgraph.checkpoint.base import empty_checkpoint  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.store.memory import InMemoryStore  # noqa: E402

from agent_coherence import Anomaly, Coordinator  # noqa: E402
from agent_coherence.spool import Spool  # noqa: E402
from agent_coherence.adapters.langgraph import (  # noqa: E402
    CoherentCheckpointer, CoherentStore, VersionedItem, coherent_graph, coherent_node,
)
from agent_coherence.adapters.langgraph.renewal import Renewer  # noqa: E402
from conftest import wait_for  # noqa: E402
from interrupt_points import Landed, interrupt_points  # noqa: E402
from lg_graphs import LogState, one_node_builder, two_step_builder  # noqa: E402

# SQLite only: what is checked here is the adapter's (and liveness's, the spool's) own handling,
# the same over either backend; the backends' handling of an interrupt inside a transaction is
# test_interrupt_points.py's, on both. Run on PostgreSQL too, these pass and take about 70 s more.

NS = ("counters",)


def assert_interrupted(landed: Landed) -> None:
    """The interrupt came out as itself, or went nowhere: a point can fall in a weakref callback
    that garbage collection ran inside a package frame (a WeakSet dropping a dead connection),
    where CPython reports and drops the exception; the state is checked all the same."""
    assert landed.came_out_as_itself, landed


def test_an_interrupted_store_put_leaves_no_lease_and_the_next_put_goes_through(quiet_coord: Coordinator) -> None:
    coord = quiet_coord
    store = CoherentStore(InMemoryStore(), coord, lease_wait=0)  # a lease left held: LeaseHeld at once
    values = itertools.count()
    points = 0
    for landed in interrupt_points(lambda: store.put(NS, "k", {"n": next(values)})):
        points += 1
        assert_interrupted(landed)
        assert coord.leases() == [], landed
        item = store.get(NS, "k")
        store.put(NS, "k", {"n": -1}, expect_version=item.version if isinstance(item, VersionedItem) else 0)
    assert points > 30
    coord.journal.verify()


def test_an_interrupted_checkpoint_put_leaves_no_lease_and_the_head_on_a_whole_checkpoint(
        quiet_coord: Coordinator) -> None:
    coord = quiet_coord
    saver = CoherentCheckpointer(InMemorySaver(), coord, put_lease_wait=0)  # a lease left: LeaseHeld
    thread = {"thread_id": "t", "checkpoint_ns": ""}

    def put_on_head() -> None:  # an unfenced put (outside coherent_graph): a per-put lease
        head = saver.heads.head("t")
        checkpoint = empty_checkpoint()
        saver.put({"configurable": {**thread, "checkpoint_id": head}}, checkpoint, {"step": 1, "source": "loop"}, {})

    put_on_head()
    points = 0
    for landed in interrupt_points(put_on_head):
        points += 1
        assert_interrupted(landed)
        assert coord.leases() == [], landed
        head = saver.heads.head("t")
        found = saver.get_tuple({"configurable": thread})
        assert found is not None and found.config["configurable"]["checkpoint_id"] == head, landed
        put_on_head()  # the thread takes the next put at once
    assert points > 30
    coord.journal.verify()


def test_an_interrupted_run_gives_its_thread_back_at_every_point(quiet_coord: Coordinator) -> None:
    coord = quiet_coord
    graph = coherent_graph(two_step_builder(delay=0).compile(checkpointer=InMemorySaver()), coord, ttl=600)
    config = {"configurable": {"thread_id": "t"}}
    points = 0
    for landed in interrupt_points(lambda: graph.invoke({"log": ["A"]}, config)):
        points += 1
        assert_interrupted(landed)
        assert coord.leases() == [], landed  # a lease kept by the renewer would still be listed
        graph.invoke(None if graph.get_state(config).next else {"log": ["B"]}, config)  # not ThreadBusy
    assert points > 100
    coord.journal.verify()


def test_an_interrupted_first_hold_leaves_the_renewer_able_to_renew(quiet_coord: Coordinator) -> None:
    coord = quiet_coord
    held = coord.acquire("first", "h", ttl=60)
    renewer = [Renewer(coord.backend)]  # a new one for each run: its first hold starts its thread
    points = 0
    for landed in interrupt_points(lambda: renewer[0].hold(held)):
        points += 1
        assert_interrupted(landed)
        short = coord.acquire("short", "h2", ttl=0.3)
        holding = renewer[0].hold(short)  # renewed within ttl/3 by a running renewal thread
        wait_for(lambda: (coord.backend.get_lease("short") or short).expires_at > short.expires_at, timeout=2)
        renewer[0].drop(holding)
        renewer[0].drop_holder("h")  # the interrupted hold's, if it took it in: renewed no longer
        coord.release(coord.leases("h2")[0])
        renewer[0] = Renewer(coord.backend)
    assert points > 3


def test_an_interrupted_hooked_node_gives_its_leases_back_at_every_point(quiet_coord: Coordinator) -> None:
    coord = quiet_coord

    @coherent_node(writes=["out.log"], lease_wait=0)  # a lease left held: LeaseHeld at once
    def work(state: LogState) -> dict[str, list[str]]:
        return {"log": ["worked"]}

    builder = one_node_builder("work", work)
    graph = coherent_graph(builder.compile(checkpointer=InMemorySaver()), coord, ttl=600)
    config = {"configurable": {"thread_id": "t"}}
    points = 0
    for landed in interrupt_points(lambda: graph.invoke({"log": ["A"]}, config)):
        points += 1
        assert_interrupted(landed)
        assert coord.leases() == [], landed
        graph.invoke(None if graph.get_state(config).next else {"log": ["B"]}, config)
    assert points > 100
    coord.journal.verify()


def test_an_interrupted_anomaly_report_is_journaled_once_and_reported_again_at_every_point(
        quiet_coord: Coordinator) -> None:
    coord = quiet_coord
    called: list[str] = []
    liveness = coord.liveness
    liveness.on_anomaly = lambda anomaly: called.append(anomaly.subject)
    subjects = (f"worker-{n}" for n in itertools.count())
    current = [Anomaly(kind="zero_work", subject="", since=0.0, detail="")]

    def reports_of(subject: str) -> list[Any]:
        return [e for e in coord.backend.journal_entries() if e.kind == "anomaly.zero_work" and e.holder == subject]

    def report() -> None:
        current[0] = Anomaly(kind="zero_work", subject=next(subjects), since=0.0, detail="did nothing")
        liveness.report(current[0])

    points = 0
    for landed in interrupt_points(report):
        points += 1
        assert_interrupted(landed)
        subject = current[0].subject
        again = liveness.report(current[0])  # the caller's retry of the interrupted report
        assert len(reports_of(subject)) == 1, landed  # journaled once, whatever the interrupt lost
        assert called.count(subject) in ((1,) if not again else (1, 2)), landed  # twice: lost as it returned
        assert liveness.report(current[0]) is False, landed  # and reported no more
    assert points > 5


def test_an_interrupted_spool_put_leaves_no_lock_and_no_temp_file_at_every_point(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    names: list[str] = []
    points = 0
    for landed in interrupt_points(lambda: names.append(spool.put(b"task\n"))):
        points += 1
        assert_interrupted(landed)
        fd = os.open(tmp_path / "spool" / "seq", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pytest.fail(f"the spool's seq lock is still held after {landed}")
        finally:
            os.close(fd)
        assert os.listdir(tmp_path / "spool" / "tmp") == [], landed
        names.append(spool.put(b"task\n"))  # the next put goes through at once
    assert points > 20
    claimed = []
    while (message := spool.claim("c")) is not None:
        claimed.append(message.name)
        spool.ack(message)
    assert set(names) <= set(claimed)  # each put that returned is claimable (and some lost-result ones)
