"""Channel benchmarks: round trips against the SQLite floor and queue peers, batching, depth.

    python benchmarks/bench_channels.py [--quick] [--rounds N] [--dir DIR] [--profile | --no-profile]
                                        [--only anomalies|round-trips|steady] [--baseline SRC]

Everything is measured side by side in one run, in interleaved rounds (see ``_util``): figures
are medians of per-round medians, ratios are medians of per-round ratios. Prints markdown to
stdout (progress goes to stderr). Messages are 100 bytes. Targets:

* a ``durable`` send + receive + ack round trip costs at most 1.2x the bare SQLite floor (INSERT,
  UPDATE, DELETE, each its own WAL ``synchronous=FULL`` commit), and is at least 1.2x faster
  than persist-queue's ``SQLiteAckQueue`` put + get + ack (FULL on this build);
* a ``fast`` round trip is faster than litequeue's put + pop + done (its own NORMAL); beside it,
  not a target, the same in steady state (thousands of round trips on one database, the mean:
  WAL checkpoints and chained batches included);
* ``send_many`` of 100 gives at least 20x the per-message throughput of single sends (durable);
* receive + ack at 1M messages deep costs at most 1.2x what it costs at 1k (100k in ``--quick``);
  a naive file queue (a directory of files: glob + stat + sort for the oldest, read, unlink) is
  measured at the same depths, up to 100k files;
* ``liveness.anomalies()`` over a channel with an SLA and a watching worker takes at most 10 ms at
  every depth from 1k to 1M (100k in ``--quick``) and at most 1.5x its time at 1k; the scan it
  replaced (every message read per check, ``tests/channel_scan.py``) is timed beside it. This one
  is asserted: the script exits 1 when it is missed.

When a round-trip target is missed (or with ``--profile``), a last section shows where a round
trip's time goes: statements and WAL pages per transaction, and the round trip measured with the
journal and the liveness record stubbed out one at a time.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))  # channel_scan: the reference

from _util import (  # noqa: E402
    fmt_rate, fmt_ratio, fmt_us, interleaved_rounds, markdown_table, time_ops, verdict,
)
from peers import peer_durability, time_litequeue, time_persist_queue, time_sqlite_floor  # noqa: E402

from agent_coherence import Coordinator  # noqa: E402

PAYLOAD = b"\xa5" * 100
WARMUP = 3
FLOOR_TARGET = 1.2  # durable round trip, x the bare SQLite FULL floor
PERSIST_TARGET = 1.2  # persist-queue latency / ours
LITEQUEUE_TARGET = 1.0  # litequeue latency / ours (above: ours is faster)
BATCH_TARGET = 20.0  # send_many(100) per-message throughput, x single sends
BATCH = 100
DEPTH_TARGET = 1.2  # receive + ack cost at the deepest depth, x the cost at 1k
ANOMALY_BOUND_MS = 10.0  # liveness.anomalies() at any depth
ANOMALY_FLAT = 1.5  # anomalies() at the deepest depth, x at 1k
ANOMALY_FILL = 20_000  # messages per send_many while building a deep channel
NAIVE_CAP = 100_000  # the naive file queue is not built deeper than this (see the note it prints)


def _fresh_dir(scratch: str, tag: str) -> str:
    return tempfile.mkdtemp(prefix=f"{tag}-", dir=scratch)


# ------------------------------------------------------------------------------ round trips


def time_channel(dirpath: str, n: int, payload: bytes, durability: str, *, warmup: int = WARMUP) -> list[int]:
    """send + receive + ack round trips on one channel (the same shape as the peers' functions)."""
    coord = Coordinator.open(dirpath)
    try:
        ch = coord.channel("bench", durability=durability)

        def round_trip(_: int) -> None:
            ch.send(payload)
            ch.ack(ch.receive("bench"))

        return time_ops(round_trip, n, warmup)
    finally:
        coord.close()


def _baseline_case(source: str, dirpath: str, n: int, durability: str) -> Callable[[], list[int]]:
    """The same round trips with the package imported from ``source`` (another revision's
    ``src``), in a fresh interpreter: the A/B of a change, in the same rounds as the rest."""
    def run() -> list[int]:
        env = dict(os.environ, PYTHONPATH=source)
        out = subprocess.run([sys.executable, __file__, "--round-trips-of", durability, "--n", str(n),
                              "--dir", tempfile.mkdtemp(prefix="baseline-", dir=dirpath)],
                             env=env, capture_output=True, text=True, check=True)
        return [int(x) for x in json.loads(out.stdout)]

    return run


def bench_round_trips(scratch: str, rounds: int, n: int, baseline: str | None = None) -> tuple[str, bool]:
    cases: dict[str, Callable[[], list[int]]] = {
        "floor FULL": lambda: time_sqlite_floor(_fresh_dir(scratch, "floor"), n, PAYLOAD, "FULL", warmup=WARMUP),
        "ours durable": lambda: time_channel(_fresh_dir(scratch, "durable"), n, PAYLOAD, "durable"),
        "persist-queue": lambda: time_persist_queue(_fresh_dir(scratch, "pq"), n, PAYLOAD, warmup=WARMUP),
        "floor NORMAL": lambda: time_sqlite_floor(_fresh_dir(scratch, "floorn"), n, PAYLOAD, "NORMAL",
                                                  warmup=WARMUP),
        "ours fast": lambda: time_channel(_fresh_dir(scratch, "fast"), n, PAYLOAD, "fast"),
        "litequeue": lambda: time_litequeue(_fresh_dir(scratch, "lq"), n, PAYLOAD, warmup=WARMUP),
    }
    if baseline:
        cases["baseline durable"] = _baseline_case(baseline, scratch, n, "durable")
        cases["baseline fast"] = _baseline_case(baseline, scratch, n, "fast")
    res = interleaved_rounds(cases, rounds, label="round trips")
    sync = peer_durability(_fresh_dir(scratch, "sync"))
    floor_ratio = res.ratio("ours durable", "floor FULL")
    persist_ratio = res.ratio("persist-queue", "ours durable")
    lite_ratio = res.ratio("litequeue", "ours fast")
    met = {"floor": floor_ratio <= FLOOR_TARGET, "persist": persist_ratio >= PERSIST_TARGET,
           "lite": lite_ratio > LITEQUEUE_TARGET}

    def row(name: str, label: str, sync_level: str, reference: str, ratio_label: str, ratio: float,
            target: str, ok: bool | None) -> list[object]:
        low, high = (res.ratio_spread(name, reference) if reference != name
                     else res.ratio_spread(reference, name))
        return [label, sync_level, fmt_us(res.median(name)), fmt_us(res.p90(name)),
                fmt_rate(1e9 / res.median(name)), f"{ratio_label} {fmt_ratio(ratio)}",
                f"{low:.2f}–{high:.2f}" if name != reference else "", target,
                verdict(ok) if ok is not None else ""]

    rows = [
        row("floor FULL", "floor: bare SQLite INSERT + UPDATE + DELETE", "FULL ×3", "floor FULL", "÷ floor",
            1.0, "", None),
        row("ours durable", '`ch.send` + `receive` + `ack`, `durable`', "FULL, NORMAL, FULL", "floor FULL",
            "÷ floor", floor_ratio, f"≤ {FLOOR_TARGET:.2f}×", met["floor"]),
        row("persist-queue", "persist-queue `SQLiteAckQueue` put + get + ack",
            f"{sync['persist-queue']['synchronous']} ×3", "ours durable", "pq ÷ ours", persist_ratio,
            f"≥ {PERSIST_TARGET:.2f}×", met["persist"]),
        row("floor NORMAL", "floor: bare SQLite INSERT + UPDATE + DELETE", "NORMAL ×3", "floor NORMAL",
            "÷ floor", 1.0, "", None),
        row("ours fast", '`ch.send` + `receive` + `ack`, `fast`', "NORMAL ×3", "floor NORMAL", "÷ floor",
            res.ratio("ours fast", "floor NORMAL"), "", None),
        row("litequeue", "litequeue put + pop + done", f"{sync['litequeue']['synchronous']} ×3", "ours fast",
            "lq ÷ ours", lite_ratio, f"> {LITEQUEUE_TARGET:.2f}×", met["lite"]),
    ]
    if baseline:
        for name, mine, floor in (("baseline durable", "ours durable", "floor FULL"),
                                  ("baseline fast", "ours fast", "floor NORMAL")):
            low, high = res.ratio_spread(mine, name)
            rows.append([f"{mine} at `{baseline}` (baseline)", "", fmt_us(res.median(name)), fmt_us(res.p90(name)),
                         fmt_rate(1e9 / res.median(name)), f"÷ floor {fmt_ratio(res.ratio(name, floor))}; "
                         f"ours ÷ baseline {fmt_ratio(res.ratio(mine, name))}", f"{low:.2f}–{high:.2f}", "", ""])
    text = "\n".join([
        "### Send + receive + ack round trip",
        "",
        f"{rounds} interleaved rounds × {n} round trips (after {WARMUP} warm-up), every case on a fresh "
        "database in a fresh temp dir each round; 100 B messages. µs = median of per-round medians; "
        "p90 over all samples; ratios = median of per-round ratios (spread = min–max per round). "
        "`pq ÷ ours` and `lq ÷ ours` are throughput multiples: above 1 means ours is faster.",
        "",
        markdown_table(["operation", "commits", "median µs", "p90 µs", "round trips/s", "ratio", "spread",
                        "target", "result"], rows),
        "",
        "Per round trip, ours also journals hash-chained entries (`durable`: send, receive and ack; "
        "`fast`: each delivery once when it ends, the acks chained in batches of up to 64 per entry: "
        "a quick run's 30 round trips chain none, the depth and profile sections do), counts the "
        "channel's unacknowledged messages, records "
        "the consumer's liveness (work done), and checks the dedup window and consumer "
        "groups; the floor and the peers record nothing. The `durable` receive commits with NORMAL: "
        "losing one to power loss only means a redelivery, and the ack's FULL commit makes it durable "
        "anyway (one WAL).",
    ])
    return text, all(met.values())


# ------------------------------------------------------------------------------ steady state


def _mean_of(samples: list[int]) -> list[int]:
    """One figure per round: the mean, so the occasional expensive round trip (a WAL checkpoint,
    a chained batch of acks, the channel clock's record) counts at its share."""
    return [sum(samples) // len(samples)]


def bench_steady(scratch: str, rounds: int, n: int, baseline: str | None = None) -> str:
    cases: dict[str, Callable[[], list[int]]] = {
        "ours fast": lambda: _mean_of(time_channel(_fresh_dir(scratch, "steady"), n, PAYLOAD, "fast")),
        "litequeue": lambda: _mean_of(time_litequeue(_fresh_dir(scratch, "steadyq"), n, PAYLOAD, warmup=WARMUP)),
    }
    if baseline:
        run_baseline = _baseline_case(baseline, scratch, n, "fast")
        cases["baseline fast"] = lambda: _mean_of(run_baseline())
    res = interleaved_rounds(cases, rounds, label="steady")
    low, high = res.ratio_spread("litequeue", "ours fast")
    rows = [["`ch.send` + `receive` + `ack`, `fast`", fmt_us(res.median("ours fast")), "", ""],
            ["litequeue put + pop + done", fmt_us(res.median("litequeue")),
             f"lq ÷ ours {fmt_ratio(res.ratio('litequeue', 'ours fast'))}", f"{low:.2f}–{high:.2f}"]]
    if baseline:
        low, high = res.ratio_spread("ours fast", "baseline fast")
        rows.append([f"ours fast at `{baseline}` (baseline)", fmt_us(res.median("baseline fast")),
                     f"ours ÷ baseline {fmt_ratio(res.ratio('ours fast', 'baseline fast'))}", f"{low:.2f}–{high:.2f}"])
    return "\n".join([
        "### Round trips in steady state",
        "",
        f"{rounds} interleaved rounds × {n:,} round trips on one database each (after {WARMUP} warm-up); "
        "µs = median over rounds of each round's **mean**, so what comes every few hundred round trips "
        "counts at its share: SQLite's WAL checkpoint (every 1,000 WAL pages, with an fsync of the "
        "database), our chained batches of acks and channel-clock records. Fewer WAL pages per round "
        "trip mean fewer checkpoints. Not a target (the round-trip table above is); the same order of "
        "cases on both sides.",
        "",
        markdown_table(["operation", "mean µs per round trip", "ratio", "spread"], rows),
    ])


# ------------------------------------------------------------------------------ batching


def bench_batching(scratch: str, rounds: int, n: int, batches: int) -> tuple[str, bool]:
    roots = {name: _fresh_dir(scratch, name) for name in ("single", "batched")}

    def singles() -> list[int]:
        with Coordinator.open(roots["single"]) as coord:
            ch = coord.channel("bench", durability="durable")
            return time_ops(lambda _: ch.send(PAYLOAD), n, WARMUP)

    def batched() -> list[int]:
        with Coordinator.open(roots["batched"]) as coord:
            ch = coord.channel("bench", durability="durable")
            items = [PAYLOAD] * BATCH
            return [ns // BATCH for ns in time_ops(lambda _: ch.send_many(items), batches, 1)]

    res = interleaved_rounds({"send": singles, "send_many": batched}, rounds, label="batching")
    speedup = res.ratio("send", "send_many")
    low, high = res.ratio_spread("send", "send_many")
    met = speedup >= BATCH_TARGET
    rows = [
        ["`ch.send(m)`", fmt_us(res.median("send")), fmt_rate(1e9 / res.median("send")), "1.00×", "", "", ""],
        [f"`ch.send_many([m] * {BATCH})`", fmt_us(res.median("send_many")), fmt_rate(1e9 / res.median("send_many")),
         fmt_ratio(speedup), f"{low:.1f}–{high:.1f}", f"≥ {BATCH_TARGET:.0f}×", verdict(met)],
    ]
    text = "\n".join([
        "### Batched sends (`durable`)",
        "",
        f"{rounds} interleaved rounds: {n} single sends vs {batches} `send_many` calls of {BATCH} per round. "
        "µs per message (a batch's time ÷ its size); speedup = median of per-round (single ÷ batched).",
        "",
        markdown_table(["operation", "µs per message", "messages/s", "speedup", "spread", "target", "result"],
                       rows),
        "",
        "A batch is one transaction and one fsync, with one journal entry listing its ids.",
    ])
    return text, met


# ------------------------------------------------------------------------------ depth


class NaiveFileQueue:
    """The mailbox-directory pattern: one file per message, the oldest found by mtime."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.counter = 0
        os.makedirs(directory, exist_ok=True)

    def put(self, data: bytes) -> None:
        self.counter += 1
        with open(os.path.join(self.directory, f"{self.counter:012d}.msg"), "wb") as handle:
            handle.write(data)

    def take(self) -> bytes:
        paths = glob.glob(os.path.join(self.directory, "*.msg"))
        paths.sort(key=os.path.getmtime)
        with open(paths[0], "rb") as handle:
            data = handle.read()
        os.unlink(paths[0])
        return data


def _fill_channel(root: str, depth: int) -> float:
    started = time.perf_counter()
    with Coordinator.open(root) as coord:
        ch = coord.channel("deep", durability="fast")
        for start in range(0, depth, 5000):
            ch.send_many([PAYLOAD] * min(5000, depth - start))
    return time.perf_counter() - started


def _channel_case(root: str, ops: int) -> Callable[[], list[int]]:
    def run() -> list[int]:
        with Coordinator.open(root) as coord:
            ch = coord.channel("deep")
            samples = time_ops(lambda _: ch.ack(ch.receive("bench")), ops, WARMUP)
            ch.send_many([PAYLOAD] * (ops + WARMUP))  # hold the depth
            return samples

    return run


def _naive_case(queue: NaiveFileQueue, ops: int) -> Callable[[], list[int]]:
    def run() -> list[int]:
        samples = time_ops(lambda _: queue.take(), ops, 0)
        for _ in range(ops):
            queue.put(PAYLOAD)
        return samples

    return run


def bench_depth(scratch: str, rounds: int, depths: list[int], ops: int, naive_ops: dict[int, int]) -> tuple[str, bool]:
    cases: dict[str, Callable[[], list[int]]] = {}
    fill_notes = []
    for depth in depths:
        root = _fresh_dir(scratch, f"depth{depth}")
        seconds = _fill_channel(root, depth)
        fill_notes.append(f"{depth:,} in {seconds:.1f} s ({depth / seconds:,.0f} msgs/s)")
        print(f"  [depth] channel filled to {depth:,} in {seconds:.1f}s", file=sys.stderr, flush=True)
        cases[f"ours {depth}"] = _channel_case(root, ops)
    naive_depths = [d for d in depths if d <= NAIVE_CAP]
    for depth in naive_depths:
        queue = NaiveFileQueue(_fresh_dir(scratch, f"naive{depth}"))
        for _ in range(depth):
            queue.put(PAYLOAD)
        print(f"  [depth] naive queue filled to {depth:,}", file=sys.stderr, flush=True)
        cases[f"naive {depth}"] = _naive_case(queue, naive_ops[depth])
    res = interleaved_rounds(cases, rounds, label="depth")
    base, deepest = depths[0], depths[-1]
    ratio = res.ratio(f"ours {deepest}", f"ours {base}")
    met = ratio <= DEPTH_TARGET
    rows = []
    for depth in depths:
        ours = res.ratio(f"ours {depth}", f"ours {base}")
        naive = f"naive {depth}"
        rows.append([
            f"{depth:,}", fmt_us(res.median(f"ours {depth}")), fmt_ratio(ours),
            fmt_us(res.median(naive)) if naive in cases else "not built",
            fmt_ratio(res.ratio(naive, f"naive {base}")) if naive in cases else "",
            f"≤ {DEPTH_TARGET:.2f}×" if depth == deepest else "",
            verdict(met) if depth == deepest else "",
        ])
    skipped = [d for d in depths if d > NAIVE_CAP]
    text = "\n".join([
        "### Cost per message vs queue depth",
        "",
        f"{rounds} interleaved rounds. Ours: {ops} receive + ack per round on a `fast` channel held at "
        "its depth (each round sends back what it took, untimed). Naive: a directory of one file per "
        "message; taking one = `glob` + `stat` every file + sort by mtime + read + unlink "
        f"({', '.join(f'{naive_ops[d]} at {d:,}' for d in naive_depths)} per round). "
        "× 1k = median of per-round ratios to the same queue at 1k.",
        "",
        markdown_table(["depth", "ours µs/op", "ours × 1k", "naive µs/op", "naive × 1k", "target", "result"],
                       rows),
        "",
        f"Filling the channel with `send_many` of 5,000: {'; '.join(fill_notes)}.",
        *([f"The naive queue is capped at {NAIVE_CAP:,} files (not built at "
           f"{', '.join(f'{d:,}' for d in skipped)}): one take lists and stats every file, "
           f"{fmt_us(res.median(f'naive {NAIVE_CAP}'))} µs at {NAIVE_CAP:,}, and grows with the count."]
          if skipped and f"naive {NAIVE_CAP}" in cases else []),
    ])
    return text, met


# ------------------------------------------------------------------------------ anomalies at depth


def _watched_channel(root: str, depth: int) -> float:
    """A channel ``depth`` deep with an SLA, a worker watching it that did nothing, a few deliveries
    whose timeout ran out and a few messages past their deadline: every channel check has
    something to find. Returns the seconds it took to build."""
    started = time.perf_counter()
    with Coordinator.open(root) as coord:
        ch = coord.channel("watched", durability="fast", sla=0.5)
        for start in range(0, depth, ANOMALY_FILL):
            ch.send_many([PAYLOAD] * min(ANOMALY_FILL, depth - start))
        ch.send_many([PAYLOAD] * 3, deadline=0)
        coord.liveness.start("watcher", channels=["watched"])
        coord.liveness.start("consumer", channels=["watched"])
        ch.receive_many("consumer", 3, visibility_timeout=0)
    return time.perf_counter() - started


def _anomaly_case(root: str, ops: int, scan: bool) -> Callable[[], list[int]]:
    def run() -> list[int]:
        from agent_coherence.liveness import Liveness
        from channel_scan import ScanReference

        with Coordinator.open(root) as coord:
            backend = ScanReference(coord.backend) if scan else coord.backend
            liveness = Liveness(backend, zero_work_grace=0.0)  # type: ignore[arg-type]
            return time_ops(lambda _: liveness.anomalies(report=False), ops, 1)

    return run


def _anomaly_kinds(root: str, scan: bool) -> list[tuple[str, str]]:
    from agent_coherence.liveness import Liveness
    from channel_scan import ScanReference

    with Coordinator.open(root) as coord:
        backend = ScanReference(coord.backend) if scan else coord.backend
        found = Liveness(backend, zero_work_grace=0.0).anomalies(report=False)  # type: ignore[arg-type]
        return sorted((a.kind, a.subject) for a in found)


def bench_anomalies(scratch: str, rounds: int, depths: list[int], ops: int) -> tuple[str, bool]:
    cases: dict[str, Callable[[], list[int]]] = {}
    builds, same = [], True
    for depth in depths:
        root = _fresh_dir(scratch, f"watched{depth}")
        seconds = _watched_channel(root, depth)
        builds.append(f"{depth:,} in {seconds:.1f} s")
        print(f"  [anomalies] channel built to {depth:,} in {seconds:.1f}s", file=sys.stderr, flush=True)
        time.sleep(0.6)  # past the SLA: the channel is stale
        same = same and _anomaly_kinds(root, scan=False) == _anomaly_kinds(root, scan=True)
        cases[f"ours {depth}"] = _anomaly_case(root, ops, scan=False)
        cases[f"scan {depth}"] = _anomaly_case(root, 1, scan=True)
    res = interleaved_rounds(cases, rounds, label="anomalies")
    base, deepest = depths[0], depths[-1]
    flat = res.ratio(f"ours {deepest}", f"ours {base}")
    worst_ms = max(res.median(f"ours {d}") for d in depths) / 1e6
    met = same and worst_ms <= ANOMALY_BOUND_MS and flat <= ANOMALY_FLAT
    rows = [[f"{d:,}", f"{res.median(f'ours {d}') / 1e6:.2f}", fmt_ratio(res.ratio(f"ours {d}", f"ours {base}")),
             f"{res.median(f'scan {d}') / 1e6:,.1f}", fmt_ratio(res.ratio(f"scan {d}", f"ours {d}")),
             f"≤ {ANOMALY_BOUND_MS:.0f} ms, ≤ {ANOMALY_FLAT:.1f}× 1k" if d == deepest else "",
             verdict(met) if d == deepest else ""] for d in depths]
    text = "\n".join([
        "### `liveness.anomalies()` vs queue depth",
        "",
        f"{rounds} interleaved rounds; ours: {ops} calls per round, the scan: 1. One `fast` channel with an "
        "SLA (0.5 s, passed: it is stale), a watching worker that did nothing (zero work), 3 deliveries "
        "whose visibility timeout ran out while their consumer is alive and 3 messages past their "
        "deadline, on top of `depth` ready messages. *Scan* = the same checks reading every message "
        "(`tests/channel_scan.py`, what the backend did before it kept counts).",
        "",
        markdown_table(["depth", "ours ms", "ours × 1k", "scan ms", "scan ÷ ours", "target", "result"], rows),
        "",
        f"Both found the same anomalies at every depth: {'yes' if same else '**no**'}. "
        f"Built with `send_many` of {ANOMALY_FILL:,}: {'; '.join(builds)}.",
    ])
    return text, met


# ------------------------------------------------------------------------------ where the time goes


class _StatementCounter:
    """Counts the statements a connection runs, through SQLite's trace hook (so those run on the
    backend's kept cursor count too). SQLite traces a statement again as each trigger it fires
    starts: a repeat of the same text is not counted."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.count, self._last = 0, ""
        conn.set_trace_callback(self._seen)

    def _seen(self, sql: str) -> None:
        if sql != self._last:
            self.count += 1
        self._last = sql


def _wal_frames(side: sqlite3.Connection, operation: Callable[[], object]) -> int:
    """WAL frames (pages) ``operation`` appends: the WAL is checkpointed empty before it and its
    frame count read after it, from a side connection."""
    side.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    operation()
    return side.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]


def _counts(scratch: str, trips: int = 128) -> list[list[object]]:
    """Statements and WAL pages per transaction of our round trip, and of the floor's."""
    root = _fresh_dir(scratch, "counts")
    coord = Coordinator.open(root)
    ch = coord.channel("bench", durability="fast")
    backend = coord.backend
    side = sqlite3.connect(backend.path, isolation_level=None, timeout=5)
    counter = _StatementCounter(backend._connection())
    totals = {"send": [0, 0], "receive": [0, 0], "ack": [0, 0]}
    try:
        for _ in range(trips):
            delivery = []
            for step, op in (("send", lambda: ch.send(PAYLOAD)), ("receive", lambda: delivery.append(ch.receive("b"))),
                             ("ack", lambda: ch.ack(delivery[0]))):
                before = counter.count
                totals[step][1] += _wal_frames(side, op)
                totals[step][0] += counter.count - before
    finally:
        backend._connection().set_trace_callback(None)
        side.close()
        coord.close()
    floor_db = os.path.join(_fresh_dir(scratch, "counts-floor"), "floor.db")
    conn = sqlite3.connect(floor_db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, data BLOB NOT NULL, state INTEGER NOT NULL)")
    side = sqlite3.connect(floor_db, isolation_level=None, timeout=5)
    floor = sum(_wal_frames(side, lambda sql=sql: conn.execute(sql, args)) for sql, args in (
        ("INSERT INTO q (id, data, state) VALUES (1, ?, 0)", (PAYLOAD,)),
        ("UPDATE q SET state = 1 WHERE id = ?", (1,)), ("DELETE FROM q WHERE id = ?", (1,))))
    side.close()
    conn.close()
    rows = [[f"ours: {step}", f"{count / trips:.1f}", f"{frames / trips:.1f}"]
            for step, (count, frames) in totals.items()]
    rows.append(["ours: round trip", f"{sum(c for c, _ in totals.values()) / trips:.1f}",
                 f"{sum(f for _, f in totals.values()) / trips:.1f}"])
    rows.append(["floor: round trip", "3", str(floor)])
    return rows


def _without(parts: set[str], run: Callable[[], list[int]]) -> Callable[[], list[int]]:
    """``run`` with parts of the bookkeeping stubbed out -- a measuring device, never a mode."""
    from agent_coherence.backends.sqlite import SQLiteBackend
    from agent_coherence.backends.sqlite_channels import ChannelOps

    def measured() -> list[int]:
        saved = (SQLiteBackend._append, ChannelOps.__dict__["_touch_worker"])
        if "journal" in parts:
            SQLiteBackend._append = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
        if "liveness" in parts:
            ChannelOps._touch_worker = staticmethod(lambda *args: None)  # type: ignore[method-assign]
        try:
            return run()
        finally:
            SQLiteBackend._append, ChannelOps._touch_worker = saved  # type: ignore[method-assign]

    return measured


def profile_round_trip(scratch: str, rounds: int, n: int) -> str:
    def fast(parts: set[str]) -> Callable[[], list[int]]:
        return _without(parts, lambda: time_channel(_fresh_dir(scratch, "abl"), n, PAYLOAD, "fast"))

    cases = {
        "as shipped": fast(set()),
        "no journal": fast({"journal"}),
        "no journal, no liveness": fast({"journal", "liveness"}),
        "floor NORMAL": lambda: time_sqlite_floor(_fresh_dir(scratch, "ablf"), n, PAYLOAD, "NORMAL", warmup=WARMUP),
        "litequeue": lambda: time_litequeue(_fresh_dir(scratch, "ablq"), n, PAYLOAD, warmup=WARMUP),
    }
    res = interleaved_rounds(cases, rounds, label="profile")
    labels = {
        "as shipped": "`fast` round trip, as shipped",
        "no journal": "… without the journal entry",
        "no journal, no liveness": "… and without the consumer's liveness record",
        "floor NORMAL": "floor: bare SQLite NORMAL",
        "litequeue": "litequeue",
    }
    rows = [[labels[name], fmt_us(res.median(name)), fmt_ratio(res.ratio(name, "as shipped")),
             fmt_ratio(res.ratio("litequeue", name))] for name in cases]
    return "\n".join([
        "### Where a round trip's time goes",
        "",
        "Statements and WAL pages per transaction (deterministic; a WAL page is one database page: "
        "2 KiB in ours, as in every new database, 4 KiB in the floor's, SQLite's default; the statements "
        "include BEGIN, COMMIT and the config read before each transaction):",
        "",
        markdown_table(["transaction", "SQL statements", "WAL pages"], _counts(scratch)),
        "",
        f"The bookkeeping taken out one part at a time ({rounds} interleaved rounds × {n}, `fast`, so no "
        "fsync noise). The stubs are a measuring device, not a mode: without them the journal has no "
        "record of the delivery and liveness cannot count the work.",
        "",
        markdown_table(["variant", "median µs", "× as shipped", "lq ÷ variant"], rows),
    ])


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds; depth up to 100k (a few minutes)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5 quick, 11 full)")
    parser.add_argument("--dir", help="scratch directory (default: a fresh one under the system temp dir)")
    parser.add_argument("--profile", action="store_true", help="always print where a round trip's time goes")
    parser.add_argument("--no-profile", action="store_true", help="never print it")
    parser.add_argument("--only", choices=["anomalies", "round-trips", "steady"], help="run only this section")
    parser.add_argument("--baseline", metavar="SRC",
                        help="also time the round trips with the package from SRC (another revision's src "
                             "directory, e.g. from git worktree or git archive), side by side")
    parser.add_argument("--round-trips-of", choices=["durable", "fast"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=30, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.round_trips_of:  # one baseline case, in the interpreter --baseline started
        print(json.dumps(time_channel(args.dir, args.n, PAYLOAD, args.round_trips_of)))
        return 0

    rounds = args.rounds or (5 if args.quick else 11)
    n, batches = (30, 3) if args.quick else (100, 10)
    depths = [1_000, 100_000] if args.quick else [1_000, 100_000, 1_000_000]
    anomaly_depths = [1_000, 10_000, 100_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000]
    depth_ops = 300  # cheap at any depth: enough samples for a steady median even in --quick
    naive_ops = {1_000: 30, 100_000: 2} if args.quick else {1_000: 50, 100_000: 3}
    base = args.dir or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="ac-bench-channels-", dir=base)
    started = time.monotonic()
    try:
        sections, met = [], {}
        if args.only in (None, "round-trips"):
            text, met["round trip"] = bench_round_trips(scratch, rounds, n, args.baseline)
            sections.append(text)
        if args.only in (None, "round-trips", "steady"):
            sections.append(bench_steady(scratch, rounds, 1_000 if args.quick else 3_000, args.baseline))
        if args.only is None:
            text, met["batching"] = bench_batching(scratch, rounds, n, batches)
            sections.append(text)
            text, met["depth"] = bench_depth(scratch, rounds, depths, depth_ops, naive_ops)
            sections.append(text)
        if args.only in (None, "anomalies"):
            text, met["anomalies"] = bench_anomalies(scratch, rounds, anomaly_depths, 20)
            sections.append(text)
        if args.profile or (not met.get("round trip", True) and not args.no_profile):
            sections.append(profile_round_trip(scratch, rounds, 4 * n))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mode = "quick" if args.quick else "full"
    print(f"## Channels: round trips, batching, depth ({mode}, {rounds} rounds, "
          f"{time.monotonic() - started:.0f} s)\n")
    print("\n\n".join(sections))
    print()
    if not met.get("anomalies", True):
        print("bench_channels: liveness.anomalies() is not bounded in depth (see its table)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
