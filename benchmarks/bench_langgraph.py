"""LangGraph adapter overhead: a 10-step graph on SqliteSaver, stock beside CoherentCheckpointer and
coherent_graph, and the import time the adapter adds.

    python benchmarks/bench_langgraph.py [--quick] [--rounds N] [--runs N]

Every case runs the same graph (START -> n1 -> ... -> n10 -> END, plain Python nodes that append
to a list) with ``durability="sync"`` on one SqliteSaver file, one invoke per fresh thread. A
case's per-step time is one invoke's wall time divided by 10; cases are interleaved round by round
and the ratio is the median of the per-round ratios (see ``_util.py``). Target: coherent_graph at
most 1.3x the stock per-step time.
"""

from __future__ import annotations

import argparse
import operator
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import count
from typing import Annotated, Any, Callable, TypedDict

from _util import fmt_ratio, fmt_us, interleaved_rounds, markdown_table, verdict

STEPS = 10
TARGET = 1.3


class State(TypedDict):
    log: Annotated[list, operator.add]


def ten_step_builder() -> Any:
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(State)
    previous = START
    for i in range(1, STEPS + 1):
        name = f"n{i}"
        builder.add_node(name, lambda state, name=name: {"log": [name]})
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder


def per_step_case(app: Any, runs: int, prefix: str) -> Callable[[], list[int]]:
    threads = count()

    def case() -> list[int]:
        samples = []
        for _ in range(runs):
            config = {"configurable": {"thread_id": f"{prefix}-{next(threads)}"}}
            started = time.perf_counter_ns()
            app.invoke({"log": []}, config, durability="sync")
            samples.append((time.perf_counter_ns() - started) // STEPS)
        return samples

    return case


def import_seconds(statement: str, repeats: int) -> float:
    """Median wall time of ``statement`` in fresh interpreters that already imported langgraph."""
    code = ("import time, langgraph.graph, langgraph.checkpoint.sqlite, langgraph.store.base\n"
            f"t = time.perf_counter()\n{statement}\nprint(time.perf_counter() - t)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  env=env).stdout) for _ in range(repeats)]
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None, help="invokes per case per round")
    options = parser.parse_args()
    rounds = options.rounds or (5 if options.quick else 15)
    runs = options.runs or (10 if options.quick else 20)

    from langgraph.checkpoint.sqlite import SqliteSaver

    from agent_coherence import Coordinator
    from agent_coherence.adapters.langgraph import CoherentCheckpointer, coherent_graph

    work = tempfile.mkdtemp(prefix="bench-langgraph-")
    try:
        coord = Coordinator.open(os.path.join(work, "root"))
        with SqliteSaver.from_conn_string(os.path.join(work, "checkpoints.db")) as saver:
            builder = ten_step_builder()
            cases = {
                "stock SqliteSaver": per_step_case(builder.compile(checkpointer=saver), runs, "stock"),
                "CoherentCheckpointer (per-put lease)": per_step_case(
                    builder.compile(checkpointer=CoherentCheckpointer(saver, coord)), runs, "cp"),
                "coherent_graph (thread lease + fence)": per_step_case(
                    coherent_graph(builder.compile(checkpointer=saver), coord), runs, "cg"),
            }
            for case in cases.values():  # warm up: first compile, first connection, page cache
                case()
            results = interleaved_rounds(cases, rounds, label="langgraph")
        coord.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    stock = "stock SqliteSaver"
    print(f"### LangGraph adapter: per-step time, 10-step graph, SqliteSaver, durability=\"sync\" "
          f"({rounds} interleaved rounds x {runs} invokes, one fresh thread per invoke)\n")
    rows = []
    for name in cases:
        low, high = results.ratio_spread(name, stock)
        rows.append([name, fmt_us(results.median(name)), fmt_us(results.p90(name)),
                     fmt_ratio(results.ratio(name, stock)), f"{fmt_ratio(low)}–{fmt_ratio(high)}"])
    print(markdown_table(["case", "per step median (µs)", "p90 (µs)", "ratio to stock", "per-round range"], rows))
    ratio = results.ratio("coherent_graph (thread lease + fence)", stock)
    print(f"\ncoherent_graph: {fmt_ratio(ratio)} the stock per-step time, target ≤ {TARGET}× {verdict(ratio <= TARGET)}; "
          f"CoherentCheckpointer alone: {fmt_ratio(results.ratio('CoherentCheckpointer (per-put lease)', stock))}.")

    repeats = 5 if options.quick else 11
    lazy = import_seconds("import agent_coherence.adapters.langgraph", repeats)
    names = import_seconds("import agent_coherence.adapters.langgraph as a\n"
                           "a.CoherentCheckpointer, a.coherent_graph, a.coherent_node, a.CoherentStore", repeats)
    print(f"\nImport time added over `import langgraph.graph, langgraph.checkpoint.sqlite, langgraph.store.base` "
          f"(median of {repeats} fresh interpreters):\n")
    print(markdown_table(["import", "added (ms)"], [
        ["`import agent_coherence.adapters.langgraph` (names load lazily)", f"{lazy * 1000:.1f}"],
        ["… and every public name resolved (checkpointer, graph, nodes, store; pulls the core)",
         f"{names * 1000:.1f}"],
    ]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
