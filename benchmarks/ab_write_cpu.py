"""CPU of one confirmed write on tmpfs: this checkout against another git revision, in one run.

    .venv/bin/python benchmarks/ab_write_cpu.py                  # against main, 1 KiB and 64 KiB
    .venv/bin/python benchmarks/ab_write_cpu.py --against HEAD~3 --rounds 7 --writes 3000
    .venv/bin/python benchmarks/ab_write_cpu.py --statements --sizes 1024   # and each SQL statement's share
    .venv/bin/python benchmarks/ab_write_cpu.py --wall --dir /var/tmp      # elapsed time on a disk instead

The other revision's ``src`` is extracted with ``git archive`` into a temp dir. Each round runs
one subprocess per revision and size (order alternating per round), and each subprocess makes a
coordinator on ``/dev/shm`` (tmpfs: an fsync is nearly free, so the time is the CPU), writes 200
untimed writes over 50 keys, then times ``--writes`` more with ``time.process_time``. Reported:
the median CPU µs per write of each revision and the median of the per-round ratios (this
checkout ÷ the other), with their spread. With ``--statements`` each run then makes as many writes
again with a ``perf_counter`` wrapper around the SQLite backend's statement runner (its kept
cursor: every statement of a write), and the time and count per write of each statement are
reported too (medians of the runs; the wrapper adds about 0.2 µs per statement). Not run by
``run.py`` (not a ``bench_*.py``).
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent

_CHILD = """
import os, shutil, sys, tempfile, time
import agent_coherence as ac
n, size = int(sys.argv[1]), int(sys.argv[2])
root = tempfile.mkdtemp(dir=sys.argv[3], prefix="ab-write-")
try:
    coord = ac.Coordinator.open(root)
    payloads = [os.urandom(size), os.urandom(size)]
    for i in range(200):
        coord.write(f"k{i % 50}.txt", payloads[i & 1], holder="w")
    if sys.argv[4] == "wall":  # the median elapsed time of one write
        import statistics
        times = []
        for i in range(n):
            started = time.perf_counter()
            coord.write(f"k{i % 50}.txt", payloads[i & 1], holder="w")
            times.append(time.perf_counter() - started)
        print(statistics.median(times) * 1e6)
    else:
        started = time.process_time()
        for i in range(n):
            coord.write(f"k{i % 50}.txt", payloads[i & 1], holder="w")
        print((time.process_time() - started) / n * 1e6)
    if len(sys.argv) > 5:  # --statements: every statement on the backend's kept cursor, timed
        import collections, json
        seen = collections.defaultdict(lambda: [0, 0.0])
        backend, clock = coord.backend, time.perf_counter
        plain = backend._run
        def timed(sql, *args):
            begun = clock()
            try:
                return plain(sql, *args)
            finally:
                entry = seen[" ".join(sql.split()[:3])]
                entry[0] += 1
                entry[1] += clock() - begun
        backend._run = timed
        for i in range(n):
            coord.write(f"k{i % 50}.txt", payloads[i & 1], holder="w")
        backend._run = plain
        print(json.dumps({sql: [count / n, total / n * 1e6] for sql, (count, total) in seen.items()}))
    coord.close()
finally:
    shutil.rmtree(root)
"""


def _run(src: str, writes: int, size: int, scratch: str, statements: bool,
         wall: bool) -> tuple[float, dict[str, list[float]]]:
    """CPU µs per write (``wall``: the median elapsed µs of one), and (with ``statements``) per SQL
    statement: {text: [count, µs] per write}."""
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", _CHILD, str(writes), str(size), scratch,
                          "wall" if wall else "cpu", *(["s"] if statements else [])],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"the write run failed ({src}):\n{out.stderr}")
    lines = out.stdout.splitlines()
    return float(lines[0]), (json.loads(lines[1]) if statements else {})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="main", help="git revision to compare with (default main)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writes", type=int, default=2000, help="timed writes per run")
    parser.add_argument("--sizes", default="1024,65536", help="payload sizes in bytes, comma-separated")
    parser.add_argument("--dir", default="/dev/shm", help="where the coordinators live (default /dev/shm)")
    parser.add_argument("--statements", action="store_true", help="also time each SQL statement of a write")
    parser.add_argument("--wall", action="store_true",
                        help="the median elapsed time of one write instead of the CPU (give --dir a disk)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    other = tempfile.mkdtemp(prefix="ab-write-src-")
    try:
        archive = subprocess.run(["git", "-C", str(CHECKOUT), "archive", args.against, "src"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", other], input=archive, check=True)
        revision = subprocess.run(["git", "-C", str(CHECKOUT), "rev-parse", "--short", args.against],
                                  capture_output=True, text=True, check=True).stdout.strip()
        trees = {f"{args.against} ({revision})": os.path.join(other, "src"), "this checkout": str(CHECKOUT / "src")}
        results: dict[tuple[str, int], list[float]] = {(name, size): [] for name in trees for size in sizes}
        per_statement: dict[tuple[str, int], list[dict[str, list[float]]]] = {key: [] for key in results}
        for round_ in range(args.rounds):
            names = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for size in sizes:
                for name in names:
                    cpu, statements = _run(trees[name], args.writes, size, args.dir, args.statements, args.wall)
                    results[name, size].append(cpu)
                    per_statement[name, size].append(statements)
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        shutil.rmtree(other, ignore_errors=True)
    base, ours = list(trees)
    what = "Elapsed µs (median) of one" if args.wall else "CPU µs per"
    print(f"{what} `coord.write(holder=)` on {args.dir}, {args.rounds} rounds × {args.writes} writes "
          "(median of runs; ratio: median of per-round ratios, spread in brackets)\n")
    print(f"| payload | {base} | {ours} | {ours} ÷ {base} |")
    print("|---|---:|---:|---:|")
    for size in sizes:
        ratios = [b / a for a, b in zip(results[base, size], results[ours, size])]
        print(f"| {size // 1024} KiB | {statistics.median(results[base, size]):.0f} | "
              f"{statistics.median(results[ours, size]):.0f} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}–{max(ratios):.2f}) |")
    if args.statements:
        for size in sizes:
            print(f"\nSQL statements of one {size // 1024} KiB write: µs per write (statements per write), "
                  "medians of the runs\n")
            print(f"| statement | {base} | {ours} |")
            print("|---|---:|---:|")
            texts = {text for name in trees for run in per_statement[name, size] for text in run}
            cells: dict[tuple[str, str], tuple[float, float]] = {}
            for name in trees:
                for text in texts:
                    runs = per_statement[name, size]
                    cells[name, text] = (statistics.median(run.get(text, [0, 0])[0] for run in runs),
                                         statistics.median(run.get(text, [0, 0])[1] for run in runs))
            for text in sorted(texts, key=lambda t: -max(cells[name, t][1] for name in trees)):
                row = [f"{cells[name, text][1]:.1f} ({cells[name, text][0]:.2f})" if cells[name, text][0] else "—"
                       for name in trees]
                print(f"| `{text}` | {row[0]} | {row[1]} |")
            totals = [sum(cells[name, text][1] for text in texts) for name in trees]
            counts = [sum(cells[name, text][0] for text in texts) for name in trees]
            print(f"| all statements | {totals[0]:.1f} ({counts[0]:.1f}) | {totals[1]:.1f} ({counts[1]:.1f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
