"""LangGraph step CPU time: this checkout against another git revision, processes alternating.

    .venv/bin/python benchmarks/ab_langgraph_cpu.py                  # against main, 4 pairs
    .venv/bin/python benchmarks/ab_langgraph_cpu.py --against de01e36 --pairs 6

The other revision's ``src`` is extracted with ``git archive`` into a temp dir and both trees are
byte-compiled first. Each pair runs one child process per revision (the order alternating per
pair); a child runs the ``bench_langgraph.py`` graph (stock ``SqliteSaver``, ``coherent_graph``,
``CoherentCheckpointer`` alone, interleaved round by round) and reports the CPU time of all its
threads per step, so the disk's flush waits, which swing the wall-clock benchmark under load, do
not count (the CPU the kernel spends on a flush does). Reported per revision: the median over the
children of each child's median per-round ratio to stock. Not run by ``run.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import count
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent


def child(rounds: int, runs: int) -> None:
    import sqlite3

    from bench_langgraph import STEPS, ten_step_builder
    from langgraph.checkpoint.sqlite import SqliteSaver

    from agent_coherence import Coordinator
    from agent_coherence.adapters.langgraph import CoherentCheckpointer, coherent_graph

    work = tempfile.mkdtemp(prefix="ab-langgraph-")
    try:
        saver = SqliteSaver(sqlite3.connect(os.path.join(work, "checkpoints.db"), check_same_thread=False))
        coord = Coordinator.open(os.path.join(work, "root"))
        builder = ten_step_builder()
        apps = {"stock": builder.compile(checkpointer=saver),
                "coherent_graph": coherent_graph(builder.compile(checkpointer=saver), coord),
                "CoherentCheckpointer": builder.compile(checkpointer=CoherentCheckpointer(saver, coord))}
        threads = count()

        def per_step(app: Any) -> float:
            started = time.process_time_ns()
            for _ in range(runs):
                app.invoke({"log": []}, {"configurable": {"thread_id": f"t{next(threads)}"}}, durability="sync")
            return (time.process_time_ns() - started) / runs / STEPS / 1000

        for app in apps.values():
            per_step(app)  # warm up
        samples: dict[str, list[float]] = {name: [] for name in apps}
        for _ in range(rounds):
            for name, app in apps.items():
                samples[name].append(per_step(app))
        for name in ("coherent_graph", "CoherentCheckpointer"):
            ratio = statistics.median(a / b for a, b in zip(samples[name], samples["stock"]))
            print(f"{name} {ratio:.4f} {statistics.median(samples[name]):.1f}")
        print(f"stock 1.0 {statistics.median(samples['stock']):.1f}")
        coord.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_child(src: Path, rounds: int, runs: int) -> dict[str, tuple[float, float]]:
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{HERE}"}
    out = subprocess.run([sys.executable, __file__, "--child", str(rounds), str(runs)], env=env,
                         check=True, capture_output=True, text=True).stdout
    return {name: (float(ratio), float(us)) for name, ratio, us in (line.split() for line in out.splitlines())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="main")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(*options.child)
        return 0
    other = Path(tempfile.mkdtemp(prefix="ab-langgraph-src-"))
    try:
        archive = subprocess.run(["git", "-C", str(CHECKOUT), "archive", options.against, "src"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(other)], input=archive, check=True)
        trees = {options.against: other / "src", "this checkout": CHECKOUT / "src"}
        for tree in trees.values():
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree)], check=True)
        results: dict[str, list[dict[str, tuple[float, float]]]] = {label: [] for label in trees}
        for pair in range(options.pairs):
            order = list(trees) if pair % 2 == 0 else list(trees)[::-1]
            for label in order:
                results[label].append(run_child(trees[label], options.rounds, options.runs))
        print(f"{options.pairs} pairs x {options.rounds} rounds x {options.runs} invokes; "
              f"load average {os.getloadavg()[0]:.1f}")
        for label, children in results.items():
            cells = []
            for name in ("stock", "coherent_graph", "CoherentCheckpointer"):
                us = statistics.median(c[name][1] for c in children)
                ratios = [c[name][0] for c in children]
                cells.append(f"{name} {us:,.0f} µs" + ("" if name == "stock" else
                             f" {statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f})"))
            print(f"{label}: " + "; ".join(cells))
    finally:
        shutil.rmtree(other, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
