"""Two runs on one LangGraph thread at the same moment: the stock saver beside coherent_graph.

Two OS processes invoke the same ``thread_id`` on one SqliteSaver database at once (a graph of two
plain Python steps, no model). With the stock saver both invokes return normally, the history forks
and one run's finished work is silently missing from the thread's state. Through ``coherent_graph``
the second run is refused with ``ThreadBusy`` (``on_busy="reject"``), or waits and then builds on
the first run's result (``on_busy="wait"``): one chain, nobody's work dropped.

Offline and deterministic in its conclusions; a few seconds. Besides the ``langgraph`` extra it
needs the stock saver's package (``pip install langgraph-checkpoint-sqlite``)::

    python examples/langgraph_double_run.py                  # in a temporary directory
    python examples/langgraph_double_run.py --trials 5 --root ./scratch

``run(base, trials)`` returns the counts, for ``examples/demo.py``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import operator
import os
import sqlite3
import sys
import tempfile
import time
from typing import Annotated, Any, TypedDict

THREAD = {"configurable": {"thread_id": "support-ticket-42"}}
STEP_TIME = 0.2  # seconds per step: long enough that the two runs overlap


class Ticket(TypedDict):
    log: Annotated[list, operator.add]


def builder() -> Any:
    from langgraph.graph import END, START, StateGraph

    def step(name: str) -> Any:
        def node(state: Ticket) -> dict[str, list[str]]:
            time.sleep(STEP_TIME)
            return {"log": [name]}
        return node

    graph = StateGraph(Ticket)
    graph.add_node("triage", step("triage"))
    graph.add_node("answer", step("answer"))
    graph.add_edge(START, "triage")
    graph.add_edge("triage", "answer")
    graph.add_edge("answer", END)
    return graph


def app_for(mode: str, saver: Any, root: str) -> Any:
    compiled = builder().compile(checkpointer=saver)
    if mode == "stock":
        return compiled
    from agent_coherence import Coordinator
    from agent_coherence.adapters.langgraph import coherent_graph

    return coherent_graph(compiled, Coordinator.open(root), on_busy=mode)


def one_run(mode: str, db: str, root: str, name: str, barrier: Any, results: Any) -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver

    from agent_coherence.adapters.langgraph import ThreadBusy

    with SqliteSaver.from_conn_string(db) as saver:
        app = app_for(mode, saver, root)
        barrier.wait()
        try:
            app.invoke({"log": [f"message from {name}"]}, THREAD)
            results.put((name, "returned"))
        except ThreadBusy:
            results.put((name, "ThreadBusy"))


def trial(mode: str, directory: str) -> dict[str, Any]:
    """Seed the thread with one run, then race two processes on it; read back what is left."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    os.makedirs(directory, exist_ok=True)
    db, root = os.path.join(directory, "checkpoints.db"), os.path.join(directory, "root")
    with SqliteSaver.from_conn_string(db) as saver:
        app_for("stock" if mode == "stock" else "wait", saver, root).invoke({"log": ["opened"]}, THREAD)
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    procs = [context.Process(target=one_run, args=(mode, db, root, name, barrier, results)) for name in "AB"]
    for proc in procs:
        proc.start()
    outcomes = dict(results.get(timeout=60) for _ in procs)
    for proc in procs:
        proc.join()
    with SqliteSaver.from_conn_string(db) as saver:
        reader = app_for("stock" if mode == "stock" else "wait", saver, root)
        state = reader.get_state(THREAD).values["log"]
    conn = sqlite3.connect(db)
    try:
        parents = [row[0] for row in conn.execute(
            "SELECT parent_checkpoint_id FROM checkpoints WHERE checkpoint_ns = '' AND parent_checkpoint_id IS NOT NULL")]
    finally:
        conn.close()
    returned = [name for name, outcome in outcomes.items() if outcome == "returned"]
    return {
        "forked": len(parents) != len(set(parents)),
        "returned": len(returned),
        "busy": sum(outcome == "ThreadBusy" for outcome in outcomes.values()),
        "dropped": sum(f"message from {name}" not in state for name in returned),
        "state": state,
    }


def run(base: str, trials: int = 3) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for mode in ("stock", "reject", "wait"):
        counts = {"trials": trials, "forked": 0, "returned": 0, "busy": 0, "dropped": 0}
        for n in range(trials):
            found = trial(mode, os.path.join(base, f"{mode}-{n}"))
            for key in ("returned", "busy", "dropped"):
                counts[key] += found[key]
            counts["forked"] += int(found["forked"])
        totals[mode] = counts
        label = {"stock": "stock SqliteSaver", "reject": "coherent_graph, on_busy='reject'",
                 "wait": "coherent_graph, on_busy='wait'"}[mode]
        print(f"{label:<34} {trials} trials: history forked {counts['forked']}x, invokes returned "
              f"{counts['returned']}, ThreadBusy {counts['busy']}, returned runs missing from the "
              f"thread's state {counts['dropped']}")
        if mode == "wait":
            print(f"{'':<34} last state: {found['state']}")
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="work directory (default: a new temporary one)")
    parser.add_argument("--trials", type=int, default=3)
    options = parser.parse_args(argv)
    totals = run(options.root or tempfile.mkdtemp(prefix="langgraph-double-run-"), options.trials)
    stock, reject, wait = totals["stock"], totals["reject"], totals["wait"]
    fixed = (reject["forked"] == wait["forked"] == 0 and reject["dropped"] == wait["dropped"] == 0
             and reject["busy"] == reject["trials"] and wait["returned"] == 2 * wait["trials"])
    print("\nstock: every caller was told its run persisted, and one run's work vanished from the thread."
          if stock["dropped"] else "\nstock: no loss this time (the runs did not overlap)")
    print("coherent_graph: one writer per thread; a second run is refused or queued, never forked."
          if fixed else "coherent_graph: UNEXPECTED result, see the counts above")
    return 0 if fixed else 1


if __name__ == "__main__":
    sys.exit(main())
