"""`make demo`: the two ways agents lose each other's work, each broken and then fixed.

1. Lost updates: processes doing read-modify-write on one file, naively and through
   ``coord.update``.
2. The next_task.md incident: a file used as a mailbox, and the same pipeline on an acknowledged
   channel with a liveness check.
3. and 4. LangGraph (when installed): two runs on one thread with the stock saver beside
   ``coherent_graph``, and a planner/worker graph writing plan.md through node hooks.
5. CrewAI: two parallel FileWriterTool calls in one turn, stock beside CoherentFileWriterTool
   (skipped when crewai is not installed; importing crewai adds a few seconds).

Offline and deterministic in its conclusions; runs in a few seconds.
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lost_update  # noqa: E402
import next_task_incident  # noqa: E402


def main() -> int:
    base = tempfile.mkdtemp(prefix="agent-coherence-demo-")
    print("agent-coherence demo (work directory: %s)" % base)
    print("\n#### 1. Lost updates on a shared file")
    counts = lost_update.run(os.path.join(base, "lost-update"))
    print("\n#### 2. The next_task.md incident")
    status = next_task_incident.main(["--root", os.path.join(base, "next-task")])
    lost_ok = counts.get("coordinated") == counts.get("expected")
    langgraph_ok = langgraph_case(base)
    crewai_ok = crewai_case(os.path.join(base, "crewai"))
    return 0 if (status == 0 and lost_ok and langgraph_ok and crewai_ok) else 1


def langgraph_case(base: str) -> bool:
    """LangGraph: two runs on one thread, and a planner/worker graph writing plan.md."""
    import importlib.util

    if importlib.util.find_spec("langgraph") is None:
        print("\n#### 3. LangGraph: skipped (pip install '.[langgraph]')")
        return True
    import langgraph_plan_nodes

    print("\n#### 3. LangGraph: two runs on one thread at once")
    # The race needs the stock SqliteSaver, a package of its own that the langgraph extra leaves out.
    if importlib.util.find_spec("langgraph.checkpoint.sqlite") is None:
        print("skipped: pip install langgraph-checkpoint-sqlite to run it")
        raced = True
    else:
        import langgraph_double_run

        totals = langgraph_double_run.run(os.path.join(base, "langgraph-double-run"), trials=1)
        raced = (totals["reject"]["dropped"] == totals["wait"]["dropped"] == 0
                 and totals["reject"]["busy"] == 1)
    print("\n#### 4. LangGraph: planner and workers sharing plan.md")
    plans = langgraph_plan_nodes.run(os.path.join(base, "langgraph-plan"))
    hooked = plans["coherent_node"]
    return raced and hooked.count("- [x]") == len(langgraph_plan_nodes.ITEMS)


def crewai_case(root: str) -> bool:
    """The CrewAI case, in a child process: it points HOME at a temp dir before importing crewai."""
    import importlib.util
    import subprocess

    print("\n#### 5. CrewAI: parallel tool calls on one file")
    if importlib.util.find_spec("crewai") is None or importlib.util.find_spec("crewai_tools") is None:
        print("skipped: pip install '.[crewai]' to run it")
        return True
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crewai_parallel_clobber.py")
    return subprocess.run([sys.executable, script, "--trials", "5", "--root", root]).returncode == 0


if __name__ == "__main__":
    raise SystemExit(main())
