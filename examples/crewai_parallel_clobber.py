"""Parallel tool calls in one CrewAI turn: stock FileWriterTool beside CoherentFileWriterTool.

A model answers one turn with two ``file_writer_tool`` calls on the same file (a short and a
longer payload). CrewAI runs them in two threads. With the stock tool both calls tell the model
"Content successfully written", one payload silently disappears, and now and then the file holds
a mix of both (the tool truncates and writes in place, with no lock). With the coherent drop-in
the calls run one after the other, each write is atomic and confirmed, and both are versions in
the journal: nothing vanishes unrecorded, and the file is always one whole payload.

The model is scripted (``ScriptedLLM``): offline, no API key. ``import crewai`` takes a few seconds
and writes under ``$HOME``, so this script points ``HOME`` and CrewAI's storage at a temp dir::

    python examples/crewai_parallel_clobber.py [--trials 10] [--root DIR]

``run(root, trials)`` returns the counts, for ``examples/demo.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from typing import Any

SHORT, LONG = "first draft\n" * 40, "second, longer draft\n" * 60
SUCCESS = "Content successfully written"


def quiet_crewai(home: str) -> None:
    """Before the first ``import crewai``: its files under a temp HOME, telemetry off."""
    os.environ.update(HOME=home, CREWAI_STORAGE_DIR=os.path.join(home, "storage"),
                      CREWAI_DISABLE_TELEMETRY="true", OTEL_SDK_DISABLED="true", CREWAI_TRACING_ENABLED="false")


def one_turn(tool: Any) -> list[str]:
    """Run a crew whose model writes plan.md twice in one turn; what the model was told."""
    from agent_coherence.adapters.crewai.scripted import ScriptedLLM, run_crew

    told: list[str] = []
    calls = [("file_writer_tool", {"filename": "plan.md", "content": text, "overwrite": True}) for text in (SHORT, LONG)]

    def script(messages: list[dict[str, Any]]) -> Any:
        results = [str(m.get("content")) for m in messages if m.get("role") == "tool"]
        if not results:
            return calls
        told.extend(results)
        return "done"

    run_crew(ScriptedLLM(script), [tool])
    return told


def stock(root: str, trials: int) -> dict[str, int]:
    from crewai_tools import FileWriterTool

    counts = {"trials": trials, "told_success": 0, "one_payload_lost": 0, "torn": 0}
    for _ in range(trials):
        if os.path.exists(os.path.join(root, "plan.md")):
            os.unlink(os.path.join(root, "plan.md"))
        told = one_turn(FileWriterTool(base_dir=root))
        with open(os.path.join(root, "plan.md")) as handle:
            final = handle.read()
        counts["told_success"] += sum(t.startswith(SUCCESS) for t in told)
        counts["one_payload_lost"] += final in (SHORT, LONG)
        counts["torn"] += final not in (SHORT, LONG)
    return counts


def coherent(root: str, trials: int) -> dict[str, int]:
    from agent_coherence import Coordinator
    from agent_coherence.adapters.crewai import CoherentFileWriterTool

    counts = {"trials": trials, "told_success": 0, "success_in_journal": 0, "torn": 0}
    with Coordinator.open(root) as coord:
        tool = CoherentFileWriterTool(coordinator=coord, base_dir=root, holder="crewai:writer")
        for _ in range(trials):
            seq = coord.journal.count()
            told = one_turn(tool)
            with open(os.path.join(root, "plan.md")) as handle:
                final = handle.read()
            new_writes = [e for e in coord.journal.history("plan.md") if e.kind == "write" and e.seq > seq]
            recorded = {e.data["sha256"] for e in new_writes}
            counts["told_success"] += sum(t.startswith(SUCCESS) for t in told)
            counts["success_in_journal"] += sum(hashlib.sha256(p.encode()).hexdigest() in recorded for p in (SHORT, LONG))
            counts["torn"] += final not in (SHORT, LONG)
        coord.journal.verify()
    return counts


def run(root: str, trials: int = 10) -> dict[str, dict[str, int]]:
    import logging

    stock_root, coherent_root = os.path.join(root, "stock"), os.path.join(root, "coherent")
    os.makedirs(stock_root, exist_ok=True)
    os.makedirs(coherent_root, exist_ok=True)
    quiet_crewai(os.path.join(root, "home"))
    # The scripted model has no tokenizer: CrewAI warns about it on every call.
    logging.getLogger("crewai.llms.base_llm").setLevel(logging.ERROR)
    results = {"stock": stock(os.path.realpath(stock_root), trials),
               "coherent": coherent(os.path.realpath(coherent_root), trials)}
    s, c = results["stock"], results["coherent"]
    print(f"{trials} turns, each with two parallel writes of plan.md:")
    print(f"  stock FileWriterTool:   told 'success' {s['told_success']}x; a payload vanished unrecorded in "
          f"{s['one_payload_lost']} turns; torn (mixed) file in {s['torn']} turns")
    print(f"  CoherentFileWriterTool: told 'success' {c['told_success']}x; {c['success_in_journal']} of those "
          f"writes are versions in the journal; torn file in {c['torn']} turns")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--root", help="work directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    root = args.root or tempfile.mkdtemp(prefix="crewai-clobber-")
    results = run(root, args.trials)
    s, c = results["stock"], results["coherent"]
    broken_shown = s["one_payload_lost"] + s["torn"] == args.trials
    fixed = c["torn"] == 0 and c["success_in_journal"] == c["told_success"] == 2 * args.trials
    return 0 if broken_shown and fixed else 1


if __name__ == "__main__":
    raise SystemExit(main())
