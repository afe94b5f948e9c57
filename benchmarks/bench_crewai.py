"""CrewAI tool calls: CoherentFileWriterTool against stock FileWriterTool and the durable-write floor.

    python benchmarks/bench_crewai.py [--quick] [--rounds N] [--dir DIR]

One tool call each, through ``BaseTool.run`` (argument validation included, no crew, no model),
at 1 KiB and 1 MiB, measured side by side in interleaved rounds (see ``_util``): figures are
medians of per-round medians, ratios are medians of per-round ratios. Cases:

* ``stock``: crewai_tools ``FileWriterTool`` (``open("w")`` + write: no fsync, no lock);
* ``coherent``: ``CoherentFileWriterTool`` (lease, checks, ``Coordinator.write``: temp file,
  fsync, rename, directory fsync, version commit, read back);
* ``wrapped``: ``coherent_tool(FileWriterTool(...))`` (lease, the stock write, then fsync, hash and
  version record of what it wrote): the cost a wrapper adds to any tool;
* ``coordinator``: ``Coordinator.write`` alone, no tool around it;
* ``floor``: the physical floor of a durable replace (temp file, write, fsync, rename, dir fsync).

Targets, for what the tool layer adds to the write it makes: ``coherent`` costs at most 2x
``coordinator`` at 1 KiB (the tool takes and releases the file's lease in two transactions of its
own, so a parallel call queues behind it, where ``Coordinator.write`` alone takes it inside its
write) and at most 1.25x at 1 MiB, where the bytes dominate. The ratios to the floor and to the
stock tool are reported, not targeted: the stock tool skips every fsync, and that gap is the
price of a confirmed, atomic write, not overhead to remove.
Prints markdown to stdout, progress to stderr. ``import crewai`` runs with a temporary ``HOME``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import fmt_ratio, fmt_us, interleaved_rounds, markdown_table, median, time_ops, verdict  # noqa: E402
from peers import time_floor_write  # noqa: E402

SIZES = {"1 KiB": 1 << 10, "1 MiB": 1 << 20}
TOOL_TARGETS = {"1 KiB": 2.0, "1 MiB": 1.25}  # coherent tool / Coordinator.write
WARMUP = 2


def quiet_crewai(home: str) -> None:
    os.environ.update(HOME=home, CREWAI_STORAGE_DIR=os.path.join(home, "storage"),
                      CREWAI_DISABLE_TELEMETRY="true", OTEL_SDK_DISABLED="true", CREWAI_TRACING_ENABLED="false")


def cases_for(scratch: str, size: int, n: int) -> tuple[dict[str, Callable[[], list[int]]], list[Any]]:
    from crewai_tools import FileWriterTool

    from agent_coherence import Coordinator
    from agent_coherence.adapters.crewai import CoherentFileWriterTool, coherent_tool

    content = "x" * size
    dirs = {name: tempfile.mkdtemp(prefix=f"{name}-", dir=scratch)
            for name in ("stock", "coherent", "wrapped", "coordinator", "floor")}
    coords = {name: Coordinator.open(dirs[name]) for name in ("coherent", "wrapped", "coordinator")}
    stock = FileWriterTool(base_dir=dirs["stock"])
    coherent = CoherentFileWriterTool(coordinator=coords["coherent"], base_dir=dirs["coherent"], holder="bench",
                                      max_bytes=2 * size)
    wrapped = coherent_tool(FileWriterTool(base_dir=dirs["wrapped"]), coords["wrapped"], holder="bench")
    args = {"filename": "out.txt", "content": content, "overwrite": True}

    def call(tool: Any) -> Callable[[int], object]:
        def op(_: int) -> None:
            result = tool.run(**args)
            if not str(result).startswith("Content successfully written"):
                raise SystemExit(f"{tool.name} failed: {result}")
        return op

    payload = content.encode()
    cases = {
        "stock": lambda: time_ops(call(stock), n, WARMUP),
        "coherent": lambda: time_ops(call(coherent), n, WARMUP),
        "wrapped": lambda: time_ops(call(wrapped), n, WARMUP),
        "coordinator": lambda: time_ops(lambda _: coords["coordinator"].write("out.txt", payload, holder="bench"),
                                        n, WARMUP),
        "floor": lambda: time_floor_write(dirs["floor"], n, payload, warmup=WARMUP),
    }
    return cases, list(coords.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    options = parser.parse_args()
    import importlib.util

    if importlib.util.find_spec("crewai") is None or importlib.util.find_spec("crewai_tools") is None:
        print("## CrewAI tool calls\n\n_skipped: crewai and crewai-tools are not installed "
              "(pip install 'agent-coherence[crewai]')._")
        return 0
    rounds = options.rounds or (3 if options.quick else 7)
    scratch = tempfile.mkdtemp(prefix="bench-crewai-", dir=options.dir)
    quiet_crewai(os.path.join(scratch, "home"))
    import logging

    logging.getLogger("crewai").setLevel(logging.ERROR)
    rows, tool_rows, all_met = [], [], True
    try:
        for label, size in SIZES.items():
            n = (20 if size < (1 << 20) else 5) if options.quick else (60 if size < (1 << 20) else 15)
            cases, coords = cases_for(scratch, size, n)
            res = interleaved_rounds(cases, rounds, label=f"crewai {label}")
            for coord in coords:
                coord.close()
            for name in cases:
                rows.append([name, label, fmt_us(res.median(name)), fmt_us(res.p90(name)),
                             fmt_ratio(res.ratio(name, "stock")), fmt_ratio(res.ratio(name, "floor"))])
            to_write, target = res.ratio("coherent", "coordinator"), TOOL_TARGETS[label]
            met = to_write <= target
            checks = [["CoherentFileWriterTool / Coordinator.write", label, fmt_ratio(to_write),
                       f"≤ {target:.2f}×", verdict(met)],
                      ["CoherentFileWriterTool / durable floor", label, fmt_ratio(res.ratio("coherent", "floor")),
                       "(reported)", ""]]
            added = median(w - b for w, b in zip(res.per_round["wrapped"], res.per_round["stock"]))
            checks.append(["coherent_tool(FileWriterTool) adds per call (median of per-round differences)",
                           label, f"{fmt_us(added)} µs", "(reported)", ""])
            tool_rows.extend(checks)
            all_met &= met
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("## CrewAI tool calls\n")
    print(f"{rounds} interleaved rounds; one tool call per operation through `BaseTool.run`. "
          "Ratios are medians of per-round ratios.\n")
    print(markdown_table(["case", "payload", "median µs", "p90 µs", "× stock", "× floor"], rows))
    print()
    print(markdown_table(["check", "payload", "value", "target", ""], tool_rows))
    print(f"\n_bench_crewai: tool-layer targets {'met' if all_met else 'MISSED'}._")
    return 0


if __name__ == "__main__":
    sys.exit(main())
