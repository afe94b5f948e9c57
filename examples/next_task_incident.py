"""The next_task.md incident, broken and fixed. Offline, deterministic, a few seconds.

Broken: an orchestrator hands a task over by writing ``next_task.md`` while a cleanup thread
"resets the mailbox" by clearing the same file. The clear lands last. The agent boots, reads an
empty file, decides there is nothing to do and exits 0. Every component reports success; the
task is gone, and nobody notices until a monitor does, hours later.

Fixed: the task goes through an acknowledged channel. Nothing is overwritten, so the cleanup has
nothing to race on; the agent receives, does the work and acknowledges. And when an agent boots
and does nothing while work is waiting, the liveness check reports it within seconds.

Run: ``python examples/next_task_incident.py [--root DIR]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

TASK = "task-42: summarise the Q3 incident report into summary.md"


# -- the broken way ------------------------------------------------------------------------


def naive_run(workdir: str) -> dict:
    """Orchestrator and cleanup race on next_task.md; the agent finds it empty and exits 0."""
    mailbox = os.path.join(workdir, "next_task.md")
    wrote, cleared = threading.Event(), threading.Event()
    outcome: dict[str, str] = {}

    def orchestrator() -> None:
        with open(mailbox, "w") as handle:
            handle.write(TASK)
        outcome["orchestrator"] = "wrote next_task.md (exit 0)"
        wrote.set()

    def cleanup() -> None:
        # The cleanup was written to clear last round's task; its write lands after the new one.
        wrote.wait()
        with open(mailbox, "w"):
            pass
        outcome["cleanup"] = "cleared the mailbox (exit 0)"
        cleared.set()

    threads = [threading.Thread(target=orchestrator), threading.Thread(target=cleanup)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    agent = subprocess.run(
        [sys.executable, "-c",
         "import sys; t = open(sys.argv[1]).read().strip(); "
         "print('did ' + t if t else 'no task found, nothing to do')", mailbox],
        capture_output=True, text=True, check=False)
    outcome["agent"] = f"{agent.stdout.strip()} (exit {agent.returncode})"
    outcome["summary.md exists"] = str(os.path.exists(os.path.join(workdir, "summary.md")))
    outcome["exit codes"] = "all 0" if agent.returncode == 0 else "non-zero"
    return outcome


# -- the fixed way -------------------------------------------------------------------------

AGENT = r"""
import sys
from agent_coherence import Coordinator
root, name, lazy = sys.argv[1], sys.argv[2], sys.argv[3] == "lazy"
coord = Coordinator.open(root)
coord.liveness.start(name, channels=["tasks"])
if not lazy:
    tasks = coord.channel("tasks")
    with tasks.process(name, visibility_timeout=30) as delivery:
        if delivery is not None:
            text = delivery.payload["task"]
            receipt = coord.write("summary.md", f"summary for {text}\n", holder=name)
            print(f"did {text!r}: summary.md v{receipt.version} sha256 {receipt.sha256[:12]} (acked)")
else:
    print("booted, read nothing, exiting 0")
coord.liveness.end(name)
"""


def run_agent(root: str, name: str, lazy: bool = False) -> str:
    result = subprocess.run([sys.executable, "-c", AGENT, root, name, "lazy" if lazy else "work"],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def fixed_run(workdir: str) -> dict:
    from agent_coherence import Coordinator
    from agent_coherence.spool import SlotOccupied

    coord = Coordinator.open(workdir)
    tasks = coord.channel("tasks")
    outcome: dict[str, str] = {}

    message_id = tasks.send({"task": TASK}, key="task-42")
    outcome["orchestrator"] = f"sent task-42 as message {message_id}"
    again = tasks.send({"task": TASK}, key="task-42")
    outcome["orchestrator retry"] = f"same key -> message {again}, not enqueued twice"
    outcome["cleanup"] = "nothing to clear: a channel is append-only, consumers acknowledge"
    outcome["agent-1"] = run_agent(workdir, "agent-1")
    outcome["channel after"] = f"depth {tasks.stats()['depth']}"

    # A file-only consumer still gets a file, but it cannot be clobbered while unconsumed.
    slot = os.path.join(workdir, "next_task.md")
    tasks.send({"task": "task-44: file-only consumer"}, key="task-44")
    delivery = tasks.receive("file-bridge")
    tasks.materialize(delivery, slot)
    tasks.send({"task": "reset the mailbox"}, key="reset-1")
    reset = tasks.receive("file-bridge")
    try:
        tasks.materialize(reset, slot)  # the cleanup's "reset" through the same door
        outcome["next_task.md"] = "overwritten (unexpected)"
    except SlotOccupied as refused:
        outcome["next_task.md"] = f"second write refused: {refused.message.split(';')[0]}"
    tasks.ack(reset)  # the slot keeps the unconsumed task: nothing left to reset
    tasks.ack(delivery)

    # The zero-work check: a worker boots while work waits, does nothing, exits 0.
    tasks.send({"task": "task-43: triage new tickets"}, key="task-43")
    liveness = coord.liveness
    liveness.zero_work_grace = 1.0
    started = time.monotonic()
    outcome["agent-2"] = run_agent(workdir, "agent-2", lazy=True)
    found = []
    while not found and time.monotonic() - started < 10:
        found = [a for a in liveness.anomalies() if a.kind == "zero_work"]
        time.sleep(0.1)
    outcome["liveness"] = (f"zero_work detected after {time.monotonic() - started:.1f}s: {found[0].detail}"
                           if found else "NOT detected")
    outcome["journal"] = f"{coord.journal.verify()} entries, chain verified"
    coord.close()
    return outcome


def show(title: str, outcome: dict) -> None:
    print(f"\n== {title}")
    for name, text in outcome.items():
        print(f"  {name:<20} {text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", help="work directory (default: a fresh temp dir)")
    args = parser.parse_args(argv)
    base = args.root or tempfile.mkdtemp(prefix="next-task-")
    naive_dir, fixed_dir = os.path.join(base, "naive"), os.path.join(base, "fixed")
    os.makedirs(naive_dir, exist_ok=True)
    os.makedirs(fixed_dir, exist_ok=True)

    naive = naive_run(naive_dir)
    show("the broken way: next_task.md as a mailbox", naive)
    print("  -> every component exited 0, and task-42 was never done.")
    fixed = fixed_run(fixed_dir)
    show("the fixed way: an acknowledged channel", fixed)
    ok = naive["summary.md exists"] == "False" and "did" in fixed["agent-1"] and "detected" in fixed["liveness"] \
        and "NOT" not in fixed["liveness"]
    print("\n  -> task-42 done exactly once; the idle worker reported in seconds, not hours.")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
