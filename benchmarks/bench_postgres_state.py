"""PostgreSQL: state bounded by retention, `journal verify` memory, liveness at depth.

    python benchmarks/bench_postgres_state.py [--quick]

Runs on its own PostgreSQL server with ``fsync=off`` (what is measured here, rows, bytes, memory
and the work of the liveness checks, does not depend on the flush; bench_postgres.py measures
latencies with fsync=on). Three rows, each beside its baseline in the same run:

* **bounded state**: the same writes over the same keys with the default policy (its journal cap
  scaled with the load) and with ``Retention.keep_everything()``; rows and relation bytes at half
  and at the whole load. Target: whole ÷ half <= 1.1 with the policy;
* **verify memory**: peak RSS of a fresh process verifying the journal (streamed) and loading it
  whole (naive), at two journal sizes. Target: flat (<= 1.3x, or under 4 MB);
* **liveness at depth**: ``liveness.anomalies()`` (an SLA channel and a watcher) at 1k and at
  100k (quick) / 1M queued messages, beside the scan the backend ran before its counters.
  Target: <= 10 ms and flat; the same anomalies as the scan.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _util import markdown_table, median, verdict  # noqa: E402
from pg_channel_scan import PostgresScanReference  # noqa: E402
from pg_server import TempPostgres, fresh_schema  # noqa: E402

from agent_coherence import Coordinator  # noqa: E402
from agent_coherence.liveness import Liveness  # noqa: E402
from agent_coherence.retention import Retention  # noqa: E402

BOUND_TARGET = 1.1
FLAT_TARGET = 1.3
LIVENESS_TARGET_MS = 10.0
_TABLES = ("journal", "leases", "artifacts", "dedup", "effects", "workers", "assignments")


def _state(coord: Coordinator) -> tuple[int, int]:
    """(rows, bytes) of the tables retention bounds."""
    def work(tx):  # type: ignore[no-untyped-def]
        rows = sum(int(tx.one(f"SELECT count(*) FROM @{t}")[0]) for t in _TABLES)
        size = sum(int(tx.one("SELECT pg_total_relation_size(%s)", (f'"{coord.backend.schema}".{t}',))[0])  # type: ignore[attr-defined]
                   for t in _TABLES)
        return rows, size

    return coord.backend.read(work)  # type: ignore[attr-defined,no-any-return]


def bench_bounded(server: TempPostgres, scratch: str, writes: int, keys: int) -> tuple[str, bool]:
    policy = Retention(journal_entries=max(1, writes // 4), every=200)
    results: dict[str, list[tuple[int, int]]] = {}
    for label, retention in (("default policy", policy), ("no retention", Retention.keep_everything())):
        url = server.url(fresh_schema())
        with Coordinator.open(os.path.join(scratch, label.replace(" ", "-")), url=url, retention=retention) as coord:
            results[label] = []
            for i in range(writes):
                coord.write(f"k{i % keys}.txt", b"x" * 64, holder=f"agent-{i % 4}")
                if i + 1 in (writes // 2, writes):
                    coord.backend.read(lambda tx: tx.run("SELECT 1"))
                    results[label].append(_state(coord))
                    print(f"  bounded state: {label}, {i + 1:,} writes", file=sys.stderr, flush=True)
    rows = []
    ratios = {}
    for label, ((rows_half, bytes_half), (rows_all, bytes_all)) in results.items():
        ratios[label] = rows_all / rows_half
        rows.append([label, f"{rows_half:,}", f"{rows_all:,}", f"{ratios[label]:.2f}×",
                     f"{bytes_half / 1e6:.1f}", f"{bytes_all / 1e6:.1f}"])
    met = ratios["default policy"] <= BOUND_TARGET
    table = markdown_table(["policy", f"rows at {writes // 2:,}", f"rows at {writes:,}", "ratio",
                            "MB at half", "MB at all"], rows)
    return (f"### Bounded state ({writes:,} writes over {keys:,} keys, journal cap {policy.journal_entries:,})\n\n"
            f"{table}\n\nRows of the journal, lease, version, dedup, effect, worker and assignment tables. "
            f"Whole ÷ half with the policy: {ratios['default policy']:.2f}× (target ≤ {BOUND_TARGET}×) — "
            f"{verdict(met)}. Bytes do not shrink when rows go (autovacuum makes the space reusable), "
            "so a bounded state shows as a size that stops growing.", met)


_CHILD = r"""
import json, resource, sys, time
from agent_coherence import Coordinator
url, mode = sys.argv[1], sys.argv[2]
coord = Coordinator.open(sys.argv[3], url=url, recover=False)
coord.journal.count()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
if mode == "stream":
    count = coord.journal.verify()
else:
    count = len(list(coord.backend.journal_entries()))
print(json.dumps({"count": count, "seconds": time.perf_counter() - started,
                  "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}))
"""


def bench_verify(server: TempPostgres, scratch: str, sizes: list[int]) -> tuple[str, bool]:
    url = server.url(fresh_schema())
    root = os.path.join(scratch, "verify")
    rows, peaks = [], {}
    with Coordinator.open(root, url=url, retention=Retention.keep_everything()) as coord:
        backend = coord.backend
        for size in sizes:
            while coord.journal.count() < size:  # 500 entries per transaction, each on a random chain
                backend.transaction(lambda tx: [tx.append("note", "src/module.py", "agent", {"text": "x" * 160})  # type: ignore[attr-defined]
                                                for _ in range(500)])
            print(f"  verify: journal at {size:,} entries", file=sys.stderr, flush=True)
            cells = {}
            for mode in ("stream", "naive"):
                out = subprocess.run([sys.executable, "-c", _CHILD, url, mode, root], capture_output=True,
                                     text=True, check=True)
                cells[mode] = json.loads(out.stdout)
            peaks[size] = max(cells["stream"]["peak_kb"], 1.0)
            rows.append([f"{size:,}", f"{cells['stream']['seconds']:.2f}", f"{cells['stream']['peak_kb'] / 1024:.1f}",
                         f"{cells['naive']['seconds']:.2f}", f"{cells['naive']['peak_kb'] / 1024:.1f}"])
    ratio = peaks[sizes[-1]] / peaks[sizes[0]]
    met = ratio <= FLAT_TARGET or peaks[sizes[-1]] < 4096
    table = markdown_table(["entries", "verify s", "verify peak MB", "load-all s", "load-all peak MB"], rows)
    return (f"### `journal verify` on PostgreSQL: time and peak memory\n\n{table}\n\n"
            "Peak RSS above the process's RSS before the call (one fresh process per cell). *load-all*: "
            f"every entry read into a list. Peak at {sizes[-1]:,} ÷ at {sizes[0]:,}: {ratio:.2f}× "
            f"(target ≤ {FLAT_TARGET}×, or under 4 MB) — {verdict(met)}.", met)


def _time_ms(check, runs: int = 15) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        check()
        times.append((time.perf_counter() - started) * 1000)
    return median(times)


def bench_liveness(server: TempPostgres, scratch: str, depths: list[int]) -> tuple[str, bool]:
    rows, ours_ms, same = [], {}, True
    for depth in depths:
        url = server.url(fresh_schema())
        with Coordinator.open(os.path.join(scratch, f"depth-{depth}"), url=url) as coord:
            ch = coord.channel("watched", durability="fast", sla=0.5)
            for start in range(0, depth, 5000):
                ch.send_many(["m"] * min(5000, depth - start))
            coord.liveness.start("watcher", channels=["watched"])
            coord.backend.read(lambda tx: tx.run("ANALYZE @messages"))  # type: ignore[attr-defined]
            time.sleep(0.6)  # the oldest message passes the SLA
            ours = Liveness(coord.backend, zero_work_grace=0.0)
            scan = Liveness(PostgresScanReference(coord.backend), zero_work_grace=0.0)  # type: ignore[arg-type]
            kinds = sorted((a.kind, a.subject) for a in ours.anomalies(report=False))
            same = same and kinds == sorted((a.kind, a.subject) for a in scan.anomalies(report=False))
            ours_ms[depth] = _time_ms(lambda: ours.anomalies(report=False))
            scan_ms = _time_ms(lambda: scan.anomalies(report=False), runs=3)
            rows.append([f"{depth:,}", f"{ours_ms[depth]:.2f}", f"{scan_ms:.1f}", ", ".join(k for k, _ in kinds)])
            print(f"  liveness: {depth:,} queued", file=sys.stderr, flush=True)
    flat = ours_ms[depths[-1]] / ours_ms[depths[0]]
    met = same and ours_ms[depths[-1]] <= LIVENESS_TARGET_MS and flat <= 1.5
    table = markdown_table(["queued", "`anomalies()` ms", "scan ms", "anomalies"], rows)
    return (f"### `liveness.anomalies()` on PostgreSQL at depth\n\n{table}\n\n"
            f"Median of 15 calls (the scan: 3). At {depths[-1]:,} ÷ at {depths[0]:,}: {flat:.2f}×; the same "
            f"anomalies as the scan: {'yes' if same else 'NO'} (target ≤ {LIVENESS_TARGET_MS:.0f} ms, flat) — "
            f"{verdict(met)}. One round trip per query to the server on loopback is most of the time.", met)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, help="accepted for run.py; this script measures sizes")
    args = parser.parse_args(argv)
    writes, keys = (2_000, 500) if args.quick else (20_000, 5_000)
    sizes = [2_000, 20_000] if args.quick else [20_000, 200_000]
    depths = [1_000, 100_000] if args.quick else [1_000, 1_000_000]
    started = time.monotonic()
    print("starting a PostgreSQL server (fsync=off)...", file=sys.stderr, flush=True)
    server = TempPostgres(fsync=False).start()
    scratch = tempfile.mkdtemp(prefix="bench-pg-state-")
    try:
        texts = [bench_bounded(server, scratch, writes, keys)[0], bench_verify(server, scratch, sizes)[0],
                 bench_liveness(server, scratch, depths)[0]]
    finally:
        server.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
    mode = "quick" if args.quick else "full"
    print(f"## PostgreSQL: bounded state, streaming verify, liveness at depth ({mode}, "
          f"{time.monotonic() - started:.0f} s)\n")
    print("\n\n".join(texts))
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
