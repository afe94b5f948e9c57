"""Claude Code hook latency: process start to exit for a PreToolUse Write decision, next to a bare
``python -c pass`` run by the same interpreter in the same run (interleaved, so load on the machine
hits both alike).

    python benchmarks/bench_hook.py [--runs 60] [--warmup 5]

Prints a markdown table of medians and the ratio to the bare interpreter (target: <= 2.5x, which
means nothing heavy is imported on the hook path). The decision measured is the common one: a
session writing a file it has read (lease renewed, recorded version and view compared, file
hashed), answered "allow". A refused write (another session holds the lease) is measured too.

Bytecode is cached in a temporary PYTHONPYCACHEPREFIX, as it is for an installed package, even when
the environment sets PYTHONDONTWRITEBYTECODE.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HOOK_MODULE = "agent_coherence.adapters.claude_code.hook"


def payload(root: str, session: str, event: str, tool: str, tool_input: dict) -> bytes:
    return json.dumps({
        "session_id": session, "transcript_path": f"/tmp/{session}.jsonl", "cwd": root,
        "permission_mode": "default", "hook_event_name": event, "tool_name": tool,
        "tool_input": tool_input, "tool_use_id": "toolu_bench",
    }).encode()


def run(argv: list[str], stdin: bytes, env: dict[str, str], expect: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) for one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, input=stdin, env=env, capture_output=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != expect:
        raise SystemExit(f"{argv} exited {done.returncode}, expected {expect}: {done.stderr.decode()[:500]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    options = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bench-hook-")
    try:
        root = os.path.join(work, "project")
        os.makedirs(os.path.join(root, "src"))
        target = os.path.join(root, "src", "app.py")
        with open(target, "w") as handle:
            handle.write("print('hello')\n" * 200)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(CLAUDE_PROJECT_DIR=root, PYTHONPYCACHEPREFIX=os.path.join(work, "pycache"))

        python = sys.executable
        hook = [python, "-m", HOOK_MODULE]
        write = payload(root, "bench-a", "PreToolUse", "Write", {"file_path": target, "content": "x = 1\n"})
        other = payload(root, "bench-b", "PreToolUse", "Write", {"file_path": target, "content": "y = 2\n"})
        read = payload(root, "bench-a", "PreToolUse", "Read", {"file_path": target})
        bash = payload(root, "bench-a", "PreToolUse", "Bash", {"command": "sed -i 's/hello/hi/' src/app.py && git status"})
        run(hook, read, env, 0)  # session A has read the file: its writes pass every check

        cases = [
            ("`python3 -c pass` (bare interpreter)", [python, "-c", "pass"], b"", 0),
            ("hook, PreToolUse Write, allowed (`python -m ...hook`)", hook, write, 0),
            ("hook, PreToolUse Write, denied: leased by another session", hook, other, 0),  # a JSON denial
            ("hook, PreToolUse Bash (`sed -i` on a file), allowed", hook, bash, 0),
        ]
        script = os.path.join(os.path.dirname(python), "agent-coherence")
        if os.access(script, os.X_OK):
            cases.append(("hook, PreToolUse Write, allowed (`agent-coherence hook`)", [script, "hook"], write, 0))

        for _ in range(options.warmup):
            for _, argv, stdin, expect in cases:
                run(argv, stdin, env, expect)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name, *_ in cases}
        for _ in range(options.runs):
            for name, argv, stdin, expect in cases:
                samples[name].append(run(argv, stdin, env, expect))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def medians(name: str) -> tuple[float, float, float]:
        wall = sorted(w for w, _ in samples[name])
        cpu = [c for _, c in samples[name]]
        return statistics.median(wall), wall[min(len(wall) - 1, int(len(wall) * 0.9))], statistics.median(cpu)

    bare_wall, _, bare_cpu = medians(cases[0][0])
    print(f"Hook latency, process start to exit ({options.runs} interleaved runs each, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})\n")
    print("| command | wall median (ms) | wall p90 (ms) | wall ratio to bare | CPU median (ms) | CPU ratio to bare |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, *_ in cases:
        wall, p90, cpu = medians(name)
        print(f"| {name} | {wall * 1000:.1f} | {p90 * 1000:.1f} | {wall / bare_wall:.2f}x | {cpu * 1000:.1f} | "
              f"{cpu / bare_cpu:.2f}x |")
    hook_wall, _, hook_cpu = medians(cases[1][0])
    verdict = "meets" if hook_wall / bare_wall <= 2.5 else "MISSES"
    print(f"\nAllowed Write decision: {hook_wall / bare_wall:.2f}x the bare interpreter, wall-clock median "
          f"({verdict} the 2.5x target); {hook_cpu / bare_cpu:.2f}x in CPU time.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
