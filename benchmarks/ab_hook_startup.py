"""Claude Code hook start-up: this checkout against another git revision, in one run.

    .venv/bin/python benchmarks/ab_hook_startup.py                   # against main, 40 rounds
    .venv/bin/python benchmarks/ab_hook_startup.py --against 88c7d2f --rounds 60

The other revision's ``src`` is extracted with ``git archive`` into a temp dir; both trees are
byte-compiled (``compileall``) before the first run, so neither pays for compiling. Each revision
gets a project of its own (their state schemas may differ) in which one session has read
``src/app.py``, so the measured PreToolUse Write is the common decision: lease taken, recorded
version and view compared, file hashed, answered "allow" (exit 0, no output).

Each round runs every case once for each revision, the order of the two revisions alternating per
round, beside a bare ``python -c pass`` (the interpreter's own start-up). Reported per case: the
wall-clock median (process start to exit) of each revision and the median of the per-round
ratios (this checkout ÷ the other), with the interquartile range of those ratios. The cases are the
two ways the hook is started: ``python -m agent_coherence.adapters.claude_code.hook`` and the
``agent-coherence hook`` console script (what ``install claude-code`` writes), both given the same
interpreter and ``PYTHONPATH``. Not run by ``run.py`` (not a ``bench_*.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent
HOOK_MODULE = "agent_coherence.adapters.claude_code.hook"
# The body of the console script pip writes for ``agent-coherence`` (run with ``hook``).
SCRIPT = "import sys\nfrom agent_coherence.cli import main\nsys.exit(main())\n"


def _payload(root: str, session: str, tool: str, tool_input: dict) -> bytes:
    return json.dumps({
        "session_id": session, "transcript_path": f"/tmp/{session}.jsonl", "cwd": root,
        "permission_mode": "default", "hook_event_name": "PreToolUse", "tool_name": tool,
        "tool_input": tool_input, "tool_use_id": "toolu_ab",
    }).encode()


def _time(argv: list[str], stdin: bytes, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, input=stdin, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or done.stdout.strip():
        raise SystemExit(f"{argv} (PYTHONPATH={env.get('PYTHONPATH')}) did not allow the call: exit "
                         f"{done.returncode}\n{done.stdout.decode()[:500]}{done.stderr.decode()[:500]}")
    return elapsed


class Tree:
    """One revision's ``src``, its own project, and the commands and inputs of each case."""

    def __init__(self, label: str, src: str, work: str, script: str) -> None:
        self.label = label
        root = os.path.join(work, "project")
        os.makedirs(os.path.join(root, "src"))
        target = os.path.join(root, "src", "app.py")
        with open(target, "w") as handle:
            handle.write("print('hello')\n" * 200)
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env.update(PYTHONPATH=src, CLAUDE_PROJECT_DIR=root)
        write = _payload(root, "ab-a", "Write", {"file_path": target, "content": "x = 1\n"})
        self.cases = {
            "PreToolUse Write, `python -m ...hook`": ([sys.executable, "-m", HOOK_MODULE], write),
            "PreToolUse Write, `agent-coherence hook`": ([sys.executable, script, "hook"], write),
        }
        _time([sys.executable, "-m", HOOK_MODULE], _payload(root, "ab-a", "Read", {"file_path": target}), self.env)
        located = subprocess.run([sys.executable, "-c", "import agent_coherence; print(agent_coherence.__file__)"],
                                 env=self.env, capture_output=True, text=True, check=True).stdout.strip()
        if not located.startswith(src):
            raise SystemExit(f"{label}: agent_coherence was imported from {located}, not from {src}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="main", help="git revision to compare with (default main)")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="ab-hook-")
    try:
        archive = subprocess.run(["git", "-C", str(CHECKOUT), "archive", args.against, "src"],
                                 capture_output=True, check=True).stdout
        other = os.path.join(work, "other")
        os.makedirs(other)
        subprocess.run(["tar", "-x", "-C", other], input=archive, check=True)
        revision = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "--short", args.against],
                                  capture_output=True, text=True, check=True).stdout.strip()
        label = revision if revision.startswith(args.against) else f"{args.against} ({revision})"
        sources = {label: os.path.join(other, "src"), "this checkout": str(CHECKOUT / "src")}
        for src in sources.values():
            subprocess.run([sys.executable, "-m", "compileall", "-q", src], check=True)
        script = os.path.join(work, "agent-coherence")
        with open(script, "w") as handle:
            handle.write(SCRIPT)
        trees = [Tree(label, src, os.path.join(work, f"tree{i}"), script)
                 for i, (label, src) in enumerate(sources.items())]
        bare = [sys.executable, "-c", "pass"]
        names = list(trees[0].cases)
        walls: dict[tuple[str, str], list[float]] = {(t.label, n): [] for t in trees for n in names}
        bare_walls: list[float] = []
        for round_ in range(args.warmup + args.rounds):
            order = trees if round_ % 2 == 0 else trees[::-1]
            timed = round_ >= args.warmup
            elapsed = _time(bare, b"", trees[0].env)
            if timed:
                bare_walls.append(elapsed)
            for name in names:
                for tree in order:
                    argv_, stdin = tree.cases[name]
                    elapsed = _time(argv_, stdin, tree.env)
                    if timed:
                        walls[tree.label, name].append(elapsed)
            if timed and (round_ - args.warmup + 1) % 10 == 0:
                print(f"round {round_ - args.warmup + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base, ours = trees[0].label, trees[1].label
    print(f"Hook start-up, wall-clock ms from process start to exit, {args.rounds} alternating rounds "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}); "
          f"bare `python -c pass`: {statistics.median(bare_walls) * 1000:.1f} ms\n")
    print(f"| case | {base} | {ours} | {ours} ÷ {base}: median (IQR) |")
    print("|---|---:|---:|---:|")
    for name in names:
        ratios = sorted(b / a for a, b in zip(walls[base, name], walls[ours, name]))
        quartiles = statistics.quantiles(ratios, n=4)
        print(f"| {name} | {statistics.median(walls[base, name]) * 1000:.1f} | "
              f"{statistics.median(walls[ours, name]) * 1000:.1f} | {statistics.median(ratios):.3f} "
              f"({quartiles[0]:.3f}–{quartiles[2]:.3f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
