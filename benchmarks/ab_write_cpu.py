"""CPU of one confirmed write on tmpfs: this checkout against another git revision, in one run.

    .venv/bin/python benchmarks/ab_write_cpu.py                  # against main, 1 KiB and 64 KiB
    .venv/bin/python benchmarks/ab_write_cpu.py --against HEAD~3 --rounds 7 --writes 3000

The other revision's ``src`` is extracted with ``git archive`` into a temp dir. Each round runs
one subprocess per revision and size (order alternating per round), and each subprocess makes a
coordinator on ``/dev/shm`` (tmpfs: an fsync is nearly free, so the time is the CPU), writes 200
untimed writes over 50 keys, then times ``--writes`` more with ``time.process_time``. Reported:
the median CPU µs per write of each revision and the median of the per-round ratios (this
checkout ÷ the other), with their spread. Not run by ``run.py`` (not a ``bench_*.py``).
"""

from __future__ import annotations

import argparse
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
    started = time.process_time()
    for i in range(n):
        coord.write(f"k{i % 50}.txt", payloads[i & 1], holder="w")
    print((time.process_time() - started) / n * 1e6)
    coord.close()
finally:
    shutil.rmtree(root)
"""


def _run(src: str, writes: int, size: int, scratch: str) -> float:
    env = dict(os.environ, PYTHONPATH=src)
    out = subprocess.run([sys.executable, "-c", _CHILD, str(writes), str(size), scratch], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"the write run failed ({src}):\n{out.stderr}")
    return float(out.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="main", help="git revision to compare with (default main)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writes", type=int, default=2000, help="timed writes per run")
    parser.add_argument("--sizes", default="1024,65536", help="payload sizes in bytes, comma-separated")
    parser.add_argument("--dir", default="/dev/shm", help="where the coordinators live (default /dev/shm)")
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
        for round_ in range(args.rounds):
            names = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for size in sizes:
                for name in names:
                    results[name, size].append(_run(trees[name], args.writes, size, args.dir))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        shutil.rmtree(other, ignore_errors=True)
    base, ours = list(trees)
    print(f"CPU µs per `coord.write(holder=)` on {args.dir}, {args.rounds} rounds × {args.writes} writes "
          "(median of runs; ratio: median of per-round ratios, spread in brackets)\n")
    print(f"| payload | {base} | {ours} | {ours} ÷ {base} |")
    print("|---|---:|---:|---:|")
    for size in sizes:
        ratios = [b / a for a, b in zip(results[base, size], results[ours, size])]
        print(f"| {size // 1024} KiB | {statistics.median(results[base, size]):.0f} | "
              f"{statistics.median(results[ours, size]):.0f} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}–{max(ratios):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
