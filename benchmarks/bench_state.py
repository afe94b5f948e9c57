"""Bounded state: the state's size under load with the default retention policy and without one,
and ``journal verify``'s time and peak memory as the journal grows.

    python benchmarks/bench_state.py [--quick] [--writes N] [--keys K] [--dir DIR]

* **State size.** The same load runs twice, into two fresh state databases, side by side in
  slices (policy, then none, a slice at a time): N writes over K keys (each a backend
  ``begin_write`` + ``commit_write``, what ``coord.write`` records, without the file I/O), and
  for every 4th write a channel message sent with a dedup key, received and acknowledged with its
  effect recorded, and for every 100th a worker session with an assignment. The backend's clock
  is simulated: one second per write, so 200k writes span 2.3 days and the time limits of the
  policy (lease rows after 1 day, dedup and effect windows) take effect. Reported at half the
  load and at the end: database + WAL bytes, journal entries, and the other rows. Target: with the
  default policy the size at N is at most 1.1x the size at N/2 (bounded); without it, it grows.
* **Verify.** ``journal verify`` (``Journal.verify``, what the command runs) at 10k, 100k and
  200k journal entries (1k, 10k, 20k in ``--quick``), each in a fresh subprocess: wall time and
  peak RSS above the process's RSS before the call, beside the naive way (every entry loaded into
  a list first, as releases before this one did). Target: the peak at the largest size is at
  most 1.2x the peak at the smallest (memory flat in the journal's size).

Prints markdown to stdout; progress to stderr.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import markdown_table, verdict  # noqa: E402

from agent_coherence import Coordinator  # noqa: E402
from agent_coherence.backends.records import WriteRequest  # noqa: E402
from agent_coherence.retention import Retention  # noqa: E402

BOUND_TARGET = 1.1  # state size at N / at N/2, with the default policy
FLAT_TARGET = 1.2  # verify's peak RSS at the largest journal / at the smallest
SLICE = 2000  # writes per slice: the two configurations alternate slice by slice
TABLES = ("journal", "artifacts", "leases", "dedup", "effects", "messages", "workers", "assignments")


class SimulatedClock:
    """The backend's clock, one second per write (so time limits take effect in a short run)."""

    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def _state_bytes(coord: Coordinator) -> int:
    path = coord.backend.path  # type: ignore[attr-defined]
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def _row_counts(coord: Coordinator) -> dict[str, int]:
    import sqlite3

    with sqlite3.connect(coord.backend.path) as conn:  # type: ignore[attr-defined]
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}


class Load:
    """One configuration's state and the load's position in it."""

    def __init__(self, root: str, retention: Retention) -> None:
        self.coord = Coordinator.open(root, retention=retention)
        self.clock = SimulatedClock()
        self.coord.backend.now = self.clock  # type: ignore[method-assign]
        self.channel = self.coord.channel("jobs")
        self.done = 0

    def run(self, count: int, keys: int) -> None:
        backend, pid = self.coord.backend, os.getpid()
        for _ in range(count):
            i = self.done
            self.clock.t += 1.0
            key = f"src/module_{i % keys}.py"
            digest = f"{i:064x}"
            intent = backend.begin_write(WriteRequest(
                key=key, holder=f"agent-{i % 8}", new_sha256=digest, size=1024,
                temp_path=f"/tmp/{key}.tmp", host="bench", pid=pid, pid_start="0"))
            backend.commit_write(intent, durable=False)
            if i % 4 == 0:
                self.channel.send({"changed": key}, key=f"change-{i}")
                with self.channel.process("indexer") as delivery:
                    assert delivery is not None
            if i % 100 == 0:
                live = self.coord.liveness
                worker = f"session-{i}"
                live.start(worker)
                live.assign(f"task-{i}", worker)
                live.complete(f"task-{i}")
                live.end(worker)
            self.done += 1

    def close(self) -> None:
        self.coord.close()


def bench_size(scratch: str, writes: int, keys: int, policy: Retention) -> tuple[str, bool]:
    configs = {"default policy": policy, "no retention": Retention.keep_everything()}
    loads = {name: Load(os.path.join(scratch, name.replace(" ", "-")), policy) for name, policy in configs.items()}
    marks: dict[str, dict[int, tuple[int, dict[str, int]]]] = {name: {} for name in configs}
    started = time.monotonic()
    try:
        for target in (writes // 2, writes):
            while any(load.done < target for load in loads.values()):
                for load in loads.values():
                    load.run(min(SLICE, target - load.done), keys)
                done = min(load.done for load in loads.values())
                print(f"  state: {done}/{writes} writes, {time.monotonic() - started:.0f} s", file=sys.stderr,
                      flush=True)
            for name, load in loads.items():
                load.coord.backend.read(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
                marks[name][target] = (_state_bytes(load.coord), _row_counts(load.coord))
    finally:
        for load in loads.values():
            load.close()
    rows, bounded = [], {}
    for name in configs:
        for target, (size, counts) in marks[name].items():
            rows.append([name, f"{target:,}", f"{size / 1e6:.1f}", f"{counts['journal']:,}",
                         f"{size / target:.0f}", *(f"{counts[t]:,}" for t in TABLES[1:])])
        half, full = marks[name][writes // 2][0], marks[name][writes][0]
        bounded[name] = full / half
    met = bounded["default policy"] <= BOUND_TARGET and bounded["no retention"] > BOUND_TARGET
    table = markdown_table(
        ["policy", "writes", "MB (db + WAL)", "journal entries", "bytes / write", *TABLES[1:]], rows)
    text = (f"### State size: {writes:,} writes over {keys:,} keys\n\n{table}\n\n"
            f"Size at {writes:,} ÷ size at {writes // 2:,}: default policy "
            f"{bounded['default policy']:.2f}×, no retention {bounded['no retention']:.2f}× "
            f"(target: ≤ {BOUND_TARGET}× with the policy) — {verdict(met)}. The default policy: "
            f"`{policy!r}`. The file does not shrink when rows go (SQLite reuses the freed pages), "
            f"so a bounded state shows as a size that stops growing.")
    return text, met


_CHILD = r"""
import json, os, resource, sys, time
from agent_coherence import Coordinator
root, mode = sys.argv[1], sys.argv[2]
coord = Coordinator.open(root, recover=False)
coord.journal.count()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if mode == "stream":
    count = coord.journal.verify()
else:
    from agent_coherence.journal import verify_entries
    count = verify_entries(list(coord.backend.journal_entries()))
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"count": count, "seconds": elapsed, "peak_kb": peak - before, "base_kb": before}))
"""


def _measure_verify(root: str, mode: str) -> dict[str, float]:
    import json

    out = subprocess.run([sys.executable, "-c", _CHILD, root, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def bench_verify(scratch: str, sizes: list[int]) -> tuple[str, bool]:
    root = os.path.join(scratch, "journal")
    rows, peaks = [], {}
    with Coordinator.open(root, retention=Retention.keep_everything()) as coord:
        for size in sizes:
            while coord.journal.count() < size:
                coord.journal.append("note", f"src/module_{coord.journal.count() % 500}.py", "agent",
                                     text="x" * 160)
            print(f"  verify: journal at {size:,} entries", file=sys.stderr, flush=True)
            stream = _measure_verify(root, "stream")
            naive = _measure_verify(root, "naive")
            peaks[size] = max(stream["peak_kb"], 1.0)
            rows.append([f"{size:,}", f"{stream['seconds']:.2f}", f"{stream['peak_kb'] / 1024:.1f}",
                         f"{naive['seconds']:.2f}", f"{naive['peak_kb'] / 1024:.1f}",
                         f"{stream['base_kb'] / 1024:.0f}"])
    ratio = peaks[sizes[-1]] / peaks[sizes[0]]
    met = ratio <= FLAT_TARGET or peaks[sizes[-1]] < 4096  # under 4 MB the RSS step is page-allocator noise
    table = markdown_table(["entries", "verify s", "verify peak MB", "naive s", "naive peak MB", "process RSS MB"], rows)
    text = (f"### `journal verify`: time and peak memory\n\n{table}\n\n"
            f"Peak RSS above the process's RSS before the call (`ru_maxrss`, one fresh process per cell). "
            f"*naive*: every entry loaded into a list, then verified (what releases before this one did). "
            f"Peak at {sizes[-1]:,} ÷ peak at {sizes[0]:,}: {ratio:.2f}× (target ≤ {FLAT_TARGET}×, "
            f"or under 4 MB) — {verdict(met)}.")
    return text, met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the load (about a minute)")
    parser.add_argument("--writes", type=int, help="writes of the state-size load (default 200k, 20k quick)")
    parser.add_argument("--keys", type=int, help="keys they go to (default 50k, 5k quick)")
    parser.add_argument("--dir", help="scratch directory (default: a fresh one under the system temp dir)")
    parser.add_argument("--rounds", type=int, help="accepted for run.py; this script measures sizes, not rounds")
    args = parser.parse_args(argv)
    writes = args.writes or (20_000 if args.quick else 200_000)
    keys = args.keys or (5_000 if args.quick else 50_000)
    sizes = [1_000, 10_000, 20_000] if args.quick else [10_000, 100_000, 200_000]
    base = args.dir or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="ac-bench-state-", dir=base)
    started = time.monotonic()
    try:
        # The default policy keeps 100k journal entries: a smaller load gets a cap scaled with it.
        policy = Retention() if writes >= 200_000 else Retention(journal_entries=max(1, writes // 2))
        size_text, _ = bench_size(scratch, writes, keys, policy)
        verify_text, _ = bench_verify(scratch, sizes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mode = "quick" if args.quick else "full"
    print(f"## Bounded state and streaming verify ({mode}, {time.monotonic() - started:.0f} s)\n")
    print(size_text + "\n\n" + verify_text)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
