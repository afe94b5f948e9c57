"""Core benchmarks: confirmed durable writes, leases, and contended read-modify-write.

    python benchmarks/bench_core.py [--quick] [--rounds N] [--dir DIR] [--no-peer] [--profile]
                                    [--only writes|leases|contention] [--lease-cycles N]
                                    [--lease-baseline REV]

Everything is measured side by side in one run, in interleaved rounds (see ``_util``): the
figures quoted are medians of per-round medians, and every ratio is the median of per-round
ratios. Prints markdown to stdout (progress goes to stderr). Targets:

* a confirmed durable ``coord.write`` costs at most 1.5x the physical floor (temp + write +
  fsync + rename + directory fsync in plain Python), at 1 KiB and 64 KiB;
* it is at least 4x faster than the same write through the peer ``ccs`` (PyPI
  ``agent-coherence==0.15.0``, run in its own venv);
* an uncontended lease acquire + release costs at most 0.8x ``filelock.FileLock``, while also
  giving a TTL, a holder and a fencing token, and ``coord.acquire`` + ``release`` costs about
  what the backend's calls alone do (the ``× backend`` column);
* 2 and 8 processes contending through ``coord.update`` on one counter lose nothing: the final
  count equals the number of commits.

If the write (or the lease) misses its target, a profile of where its time goes is printed too
(``_profile.py``; ``--profile`` forces it).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import (  # noqa: E402
    RoundResults, fmt_rate, fmt_ratio, fmt_us, interleaved_rounds, markdown_table, median, time_ops, verdict,
)
from peers import time_filelock, time_floor_write, time_portalocker  # noqa: E402

from agent_coherence import Coordinator  # noqa: E402

WRITE_TARGETS = {"1 KiB": 1.3, "64 KiB": 1.2}  # x the floor
PEER_TARGET = 5.0  # x the peer's latency
LOCK_TARGET = 0.8  # x filelock
WARMUP = 5
STEADY_WARMUP = 200  # x 11 WAL pages per write: past SQLite's 1000-page auto-checkpoint
KEY = "bench/payload.bin"
SIZES = {"1 KiB": 1024, "64 KiB": 64 * 1024}
SECTIONS = ("writes", "leases", "contention")


def _fresh_dir(scratch: str, tag: str) -> str:
    return tempfile.mkdtemp(prefix=f"{tag}-", dir=scratch)


def _payloads(size: int) -> tuple[bytes, bytes]:
    """Two payloads of ``size`` bytes that differ, so consecutive writes really change the file."""
    base = os.urandom(size)
    return b"\x00" + base[1:], b"\x01" + base[1:]


# ----------------------------------------------------------------------------- durable writes


def _coordinator_case(scratch: str, size: int, n: int, mode: str) -> Callable[[], list[int]]:
    """One round of ``n`` timed operations on a fresh Coordinator in a fresh temp dir."""

    def run() -> list[int]:
        root = _fresh_dir(scratch, f"ours-{mode}")
        coord = Coordinator.open(root)
        if mode == "flush":  # the fallback mode, as without user xattrs: the intent is flushed
            coord.write_mode = "flush"
        a, b = _payloads(size)
        try:
            if mode in ("holder", "steady", "flush"):  # steady: past the first WAL checkpoint, the WAL is reused
                warmup = STEADY_WARMUP if mode == "steady" else WARMUP
                return time_ops(lambda i: coord.write(KEY, a if i % 2 else b, holder="bench"), n, warmup)
            if mode == "update":
                return time_ops(
                    lambda i: coord.update(KEY, lambda _old: a if i % 2 else b, holder="bench"), n, WARMUP)
            if mode == "lease":  # the lease is taken once; only the writes are timed
                with coord.lease(KEY, holder="bench", ttl=3600) as lease:
                    return time_ops(lambda i: coord.write(KEY, a if i % 2 else b, lease=lease), n, WARMUP)
            raise ValueError(mode)
        finally:
            coord.close()
            shutil.rmtree(root, ignore_errors=True)

    return run


def _floor_case(scratch: str, size: int, n: int) -> Callable[[], list[int]]:
    def run() -> list[int]:
        root = _fresh_dir(scratch, "floor")
        try:
            return time_floor_write(root, n, _payloads(size)[0], warmup=WARMUP)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return run


class PeerRuns:
    """Runs the ``ccs`` driver; keeps each run's p90 (the driver reports summaries, not samples)."""

    def __init__(self, python: str, scratch: str) -> None:
        self.python = python
        self.scratch = scratch
        self.p90_ns: dict[str, list[float]] = {}

    def case(self, name: str, size: int, n: int, method: str) -> Callable[[], list[int]]:
        from peer_env import run_ccs_driver

        def run() -> list[int]:
            result = run_ccs_driver(self.python, self.scratch, size=size, n=n, method=method)  # type: ignore[arg-type]
            self.p90_ns.setdefault(name, []).append(result["p90_us"] * 1000)
            return [int(result["median_us"] * 1000)]

        return run


def bench_writes(scratch: str, rounds: int, n: int, peer_n: int, use_peer: bool) -> tuple[str, bool]:
    cases: dict[str, Callable[[], list[int]]] = {}
    for label, size in SIZES.items():
        cases[f"floor {label}"] = _floor_case(scratch, size, n)
        for mode in ("holder", "flush", "steady", "lease", "update"):
            cases[f"{mode} {label}"] = _coordinator_case(scratch, size, n, mode)
    peers: PeerRuns | None = None
    peer_note = ""
    if use_peer:
        try:
            from peer_env import PEER_REQUIREMENT, ensure_peer_venv

            peers = PeerRuns(ensure_peer_venv(), scratch)
            peer_note = PEER_REQUIREMENT
            for label, size in SIZES.items():
                cases[f"ccs write {label}"] = peers.case(f"ccs write {label}", size, peer_n, "write")
                cases[f"ccs write_cas {label}"] = peers.case(f"ccs write_cas {label}", size, peer_n, "write_cas")
        except Exception as error:  # no network, no venv: report and carry on without the peer
            peers, peer_note = None, f"peer skipped: {str(error).splitlines()[0]}"
    res = interleaved_rounds(cases, rounds, label="writes")

    names = {
        "holder": "`coord.write(holder=)`",
        "flush": "`coord.write(holder=)`, flush mode (no xattrs: intent flushed)",
        "steady": f"`coord.write(holder=)`, steady state (after {STEADY_WARMUP} writes)",
        "lease": "`coord.write(lease=)` (lease held)",
        "update": "`coord.update()` (read + CAS write)",
    }
    rows, all_met = [], True
    for label in SIZES:
        floor = f"floor {label}"
        rows.append(["floor: temp + write + fsync + rename + dir fsync", label, fmt_us(res.median(floor)),
                     fmt_us(res.p90(floor)), fmt_rate(1e9 / res.median(floor)), "1.00×", "", "", ""])
        for mode, title in names.items():
            name = f"{mode} {label}"
            ratio = res.ratio(name, floor)
            lo, hi = res.ratio_spread(name, floor)
            target, met = "", ""
            if mode == "holder":
                limit = WRITE_TARGETS[label]
                target, met = f"≤ {limit:.2f}×", verdict(ratio <= limit)
                all_met &= ratio <= limit
            rows.append([title, label, fmt_us(res.median(name)), fmt_us(res.p90(name)),
                         fmt_rate(1e9 / res.median(name)), fmt_ratio(ratio), f"{lo:.2f}–{hi:.2f}", target, met])
    out = [
        "### Confirmed durable write vs the physical floor",
        "",
        f"{rounds} interleaved rounds × {n} writes (after {WARMUP} warm-up), each case on a fresh "
        "Coordinator in a fresh temp dir. µs = median of per-round medians; p90 over all samples; "
        "ratio = median of per-round (case / floor); spread = min–max of the per-round ratios. "
        f"The steady-state row first makes {STEADY_WARMUP} untimed writes, so SQLite has checkpointed and "
        "reuses its WAL (a long-lived coordinator's usual state); the other rows write into a growing WAL.",
        "",
        markdown_table(["operation", "payload", "median µs", "p90 µs", "ops/s", "× floor", "spread",
                        "target", "result"], rows),
    ]
    if peers is not None:
        out += ["", *_peer_table(res, peers, rounds, peer_n, peer_note)]
    else:
        out += ["", f"_Peer comparison not run ({peer_note or '--no-peer'})._"]
    return "\n".join(out), all_met


def _peer_table(res: RoundResults, peers: PeerRuns, rounds: int, peer_n: int, note: str) -> list[str]:
    pairs = [("write", "holder", "`coord.write(holder=)`"), ("write_cas", "update", "`coord.update()`")]
    rows = []
    for label in SIZES:
        for method, mode, ours_title in pairs:
            theirs, ours = f"ccs {method} {label}", f"{mode} {label}"
            ratio = res.ratio(theirs, ours)
            lo, hi = res.ratio_spread(theirs, ours)
            rows.append([f"`CoherentVolume.{method}`", label, fmt_us(res.median(theirs)),
                         fmt_us(median(peers.p90_ns.get(theirs, []))), ours_title, fmt_us(res.median(ours)),
                         fmt_ratio(ratio), f"{lo:.2f}–{hi:.2f}", f"≥ {PEER_TARGET:.0f}×",
                         verdict(ratio >= PEER_TARGET)])
    return [
        f"### Same write through the peer `ccs` ({note})",
        "",
        f"The peer runs in its own venv, {peer_n} timed writes per round after 5 warm-up, in the same "
        "interleaved rounds. Its writes fsync the file but not the directory, and its coordinator "
        "commits with SQLite `synchronous=NORMAL` over loopback HTTP. Ratio = ccs median / ours "
        "(throughput multiple), median of per-round ratios.",
        "",
        markdown_table(["peer operation", "payload", "ccs median µs", "ccs p90 µs", "ours", "ours median µs",
                        "ccs / ours", "spread", "target", "result"], rows),
    ]


# ----------------------------------------------------------------------------- leases


def _lease_case(scratch: str, n: int, mode: str) -> Callable[[], list[int]]:
    def run() -> list[int]:
        root = _fresh_dir(scratch, f"lease-{mode}")
        try:
            if mode == "filelock":
                return time_filelock(root, n, warmup=WARMUP)
            if mode == "portalocker":
                return time_portalocker(root, n, warmup=WARMUP)
            coord = Coordinator.open(root)
            try:
                key = "locks/resource.txt"
                if mode == "coord":
                    def cycle(_: int) -> None:
                        coord.release(coord.acquire(key, holder="bench", ttl=30))
                elif mode == "context":
                    def cycle(_: int) -> None:
                        with coord.lease(key, holder="bench", ttl=30):
                            pass
                elif mode == "backend":
                    backend, canonical = coord.backend, coord.key(key)

                    def cycle(_: int) -> None:
                        record = backend.acquire_lease(canonical, "bench", 30.0)
                        backend.release_lease(canonical, "bench", record.fence)
                else:
                    raise ValueError(mode)
                return time_ops(cycle, n, WARMUP)
            finally:
                coord.close()
        finally:
            shutil.rmtree(root, ignore_errors=True)

    return run


class _Baseline:
    """The lease cases of another revision (``lease_baseline.py`` in a process of its own),
    measured in the same rounds as this checkout's."""

    def __init__(self, scratch: str, revision: str) -> None:
        src = revision if os.path.isdir(revision) else self._export(scratch, revision)
        self.revision = revision
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("lease_baseline.py")), "--src", src, "--dir", scratch],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.imported = json.loads(self._line())

    @staticmethod
    def _export(scratch: str, revision: str) -> str:
        target = _fresh_dir(scratch, "baseline-src")
        archive = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent.parent), "archive", "--format=tar", revision, "src"],
                                 check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
        return os.path.join(target, "src")

    def _line(self) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the baseline driver for {self.revision} stopped (exit {self.proc.wait()})")
        return line

    def case(self, mode: str, n: int) -> Callable[[], list[int]]:
        def run() -> list[int]:
            assert self.proc.stdin is not None
            self.proc.stdin.write(f"{mode} {n}\n")
            self.proc.stdin.flush()
            return [int(ns) for ns in json.loads(self._line())]

        return run

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def bench_leases(scratch: str, rounds: int, n: int, baseline: str | None = None) -> tuple[str, bool]:
    modes = {
        "filelock": ("`filelock.FileLock` acquire + release", "no TTL, no holder, no fence"),
        "portalocker": ("`portalocker.Lock` acquire + release", "no TTL, no holder, no fence"),
        "coord": ("`coord.acquire` + `coord.release`", "TTL, holder, fence, journaled"),
        "context": ("`with coord.lease(...)`", "TTL, holder, fence, journaled"),
        "backend": ("`backend.acquire_lease` + `release_lease`", "TTL, holder, fence, journaled"),
    }
    cases = {m: _lease_case(scratch, n, m) for m in modes}
    other = _Baseline(scratch, baseline) if baseline else None
    if other is not None:
        for mode in ("coord", "backend"):
            title, gives = modes[mode]
            modes[f"{mode} (baseline)"] = (f"{title} at `{baseline}`", gives)
            cases[f"{mode} (baseline)"] = other.case(mode, n)
    try:
        res = interleaved_rounds(cases, rounds, label="leases")
    finally:
        if other is not None:
            other.close()
    rows, all_met = [], True
    for mode, (title, gives) in modes.items():
        ratio = res.ratio(mode, "filelock")
        target, met = "", ""
        if mode in ("coord", "backend"):
            target, met = f"≤ {LOCK_TARGET:.2f}×", verdict(ratio <= LOCK_TARGET)
            all_met &= ratio <= LOCK_TARGET
        over_backend = fmt_ratio(res.ratio(mode, "backend")) if mode in ("coord", "context", "backend") else ""
        if mode.endswith("(baseline)"):
            over_backend = fmt_ratio(res.ratio(mode, "backend (baseline)"))
        low, high = res.ratio_spread(mode, "filelock")
        spread = f"{low:.2f}–{high:.2f}" if mode != "filelock" else ""
        rows.append([title, fmt_us(res.median(mode)), fmt_us(res.p90(mode)), fmt_rate(1e9 / res.median(mode)),
                     fmt_ratio(ratio), spread, over_backend, gives, target, met])
    return "\n".join([
        "### Uncontended lease acquire + release vs file locks",
        "",
        f"{rounds} interleaved rounds × {n} cycles; key `locks/resource.txt` (a file key: the public API "
        "resolves and confines it on first use and remembers it per coordinator, as a lease only names a "
        "key and every write resolves its path again; the backend rows are handed the canonical key). Ours "
        "commits each step with SQLite WAL `synchronous=NORMAL` (survives a process crash, not power loss) "
        "and journals it: an acquire is one transaction of 6 statements, a release one of 5.",
        "",
        markdown_table(["operation", "median µs", "p90 µs", "cycles/s", "× filelock", "spread", "× backend",
                        "gives", "target", "result"], rows),
        *([] if other is None else [
            "",
            f"A/B in the same rounds: this checkout ÷ `{baseline}` (imported from {other.imported}): "
            + ", ".join(f"{mode} {fmt_ratio(res.ratio(mode, f'{mode} (baseline)'))} (spread "
                        + "–".join(f"{r:.2f}" for r in res.ratio_spread(mode, f"{mode} (baseline)")) + ")"
                        for mode in ("coord", "backend")) + "."]),
    ]), all_met


# ----------------------------------------------------------------------------- contention

COUNTER = "counter.txt"


def _increment(old: bytes) -> bytes:
    return str(int(old or b"0") + 1).encode()


def _contender(root: str, holder: str, duration: float, ready, start, results) -> None:  # type: ignore[no-untyped-def]
    """One process: ``coord.update`` the counter until ``duration`` runs out after ``start``."""
    coord = Coordinator.open(root, recover=False)
    calls = 0

    def fn(old: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return _increment(old)

    commits = failures = 0
    ready.put(holder)
    start.wait()
    t0 = time.monotonic()
    end = t0 + duration
    while time.monotonic() < end:
        try:
            coord.update(COUNTER, fn, holder=holder)
            commits += 1
        except Exception:  # retries exhausted: counted, not fatal to the benchmark
            failures += 1
    coord.close()
    results.put({"holder": holder, "commits": commits, "attempts": calls, "failures": failures,
                 "elapsed": time.monotonic() - t0})


def _collect(channel, workers: list, timeout: float) -> list:  # type: ignore[type-arg]
    """One item per worker from ``channel``; fails fast (RuntimeError) if a worker dies first."""
    import queue

    items, deadline = [], time.monotonic() + timeout
    while len(items) < len(workers):
        try:
            items.append(channel.get(timeout=0.2))
            continue
        except queue.Empty:
            pass
        dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
        if dead:
            raise RuntimeError(f"a contending process exited with status {dead[0]} (its traceback is on stderr)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"contending processes did not report within {timeout:.0f} s")
    return items


def _contend_once(scratch: str, procs: int, duration: float) -> dict[str, float]:
    root = _fresh_dir(scratch, f"contend{procs}")
    try:
        with Coordinator.open(root) as coord:
            coord.write(COUNTER, b"0", holder="setup")
        ctx = multiprocessing.get_context("spawn")  # no SQLite state inherited across fork
        ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
        workers = [ctx.Process(target=_contender, args=(root, f"p{i}", duration, ready, start, results))
                   for i in range(procs)]
        for worker in workers:
            worker.start()
        try:
            _collect(ready, workers, timeout=120)
            t0 = time.monotonic()
            start.set()
            reports = _collect(results, workers, timeout=duration + 180)
            wall = time.monotonic() - t0
        finally:
            for worker in workers:
                worker.join(timeout=30)
                if worker.is_alive():
                    worker.terminate()
        with Coordinator.open(root) as coord:
            snap = coord.read(COUNTER)
            conflicts = (coord.journal.count(kind="conflict.version", key=COUNTER)
                         + coord.journal.count(kind="conflict.lease", key=COUNTER))
            writes = coord.journal.count(kind="write", key=COUNTER) - 1  # minus the setup write
            final = int(snap.data)
            version = snap.version - 1
        commits = sum(r["commits"] for r in reports)
        attempts = sum(r["attempts"] for r in reports)
        per_proc = [r["commits"] for r in reports]
        return {
            "commits": commits, "attempts": attempts, "conflicts": conflicts, "wall": wall,
            "rate": commits / wall, "conflict_rate": conflicts / attempts if attempts else 0.0,
            "final": final, "ok": float(final == commits == writes == version),
            "min_share": min(per_proc) / commits if commits else 0.0,
            "max_share": max(per_proc) / commits if commits else 0.0,
            "failures": sum(r["failures"] for r in reports),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_contention(scratch: str, rounds: int, duration: float, counts: tuple[int, ...] = (2, 8)) -> tuple[str, bool]:
    runs: dict[int, list[dict[str, float]]] = {c: [] for c in counts}
    errors: dict[int, str] = {}
    for r in range(rounds):
        for procs in counts if r % 2 == 0 else tuple(reversed(counts)):
            try:
                runs[procs].append(_contend_once(scratch, procs, duration))
            except RuntimeError as error:  # reported in the table, the other sections still run
                errors.setdefault(procs, str(error))
            print(f"  [contention] {procs} processes, run {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    rows, all_ok = [], not errors
    for procs, results in runs.items():
        if not results:
            rows.append([procs, *["n/a"] * 8, f"**ERROR**: {errors.get(procs, 'no run')}"])
            continue
        ok = sum(int(x["ok"]) for x in results)
        all_ok &= ok == len(results)
        last = results[-1]
        rows.append([
            procs, f"{median(x['wall'] for x in results):.1f}", f"{median(x['attempts'] for x in results):,.0f}",
            f"{median(x['commits'] for x in results):,.0f}", fmt_rate(median(x["rate"] for x in results)),
            f"{median(x['conflicts'] for x in results):,.0f}",
            f"{100 * median(x['conflict_rate'] for x in results):.1f}%",
            f"{100 * median(x['min_share'] for x in results):.0f}–{100 * median(x['max_share'] for x in results):.0f}%",
            f"{last['final']:,.0f} = {last['commits']:,.0f}" if last["ok"] else f"{last['final']:,.0f} ≠ {last['commits']:,.0f}",
            f"{verdict(ok == len(results))} ({ok}/{len(results)} runs)"
            + (f"; **ERROR** in another run: {errors[procs]}" if procs in errors else ""),
        ])
    return "\n".join([
        "### Contended read-modify-write: `coord.update()` on one counter file",
        "",
        f"Real processes (multiprocessing, spawn), each incrementing the counter through `coord.update` for "
        f"{duration:.0f} s; {rounds} run(s) per process count, medians shown. Attempts = calls of the update "
        "function; conflicts = journal entries `conflict.version` + `conflict.lease` for the key; the check "
        "requires final count = commits counted by the processes = `write` journal entries = version bumps.",
        "",
        markdown_table(["processes", "wall s", "attempts", "commits", "commits/s", "conflicts", "conflict rate",
                        "commit share per process", "final count = commits (last run)", "no lost update"], rows),
    ]), all_ok


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and ops (under ~2 minutes)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5 quick, 11 full)")
    parser.add_argument("--dir", help="scratch directory (default: a fresh one under the system temp dir)")
    parser.add_argument("--no-peer", action="store_true", help="skip the ccs peer")
    parser.add_argument("--profile", action="store_true", help="always print the write profile")
    parser.add_argument("--no-profile", action="store_true", help="never print the write profile")
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run only this section (repeatable; default: all)")
    parser.add_argument("--lease-cycles", type=int, help="lease cycles per case per round (default 200 quick, 500 full)")
    parser.add_argument("--lease-baseline", metavar="REV",
                        help="also time the lease cases of this git revision (or src folder) in the same rounds")
    args = parser.parse_args(argv)

    rounds = args.rounds or (5 if args.quick else 11)
    n, peer_n, lease_n = (30, 15, 200) if args.quick else (80, 30, 500)
    lease_n = args.lease_cycles or lease_n
    sections = args.only or SECTIONS
    contention_rounds, duration = (1, 3.0) if args.quick else (3, 5.0)
    base = args.dir or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="ac-bench-core-", dir=base)
    started = time.monotonic()
    mode = "quick" if args.quick else "full"
    # Each section is printed as soon as it is done, so a failure later keeps the tables before it.
    print(f"## Core: durable writes, leases, contention ({mode}, {rounds} rounds)\n", flush=True)

    def emit(text: str) -> None:
        print(text + "\n", flush=True)

    met: dict[str, bool] = {}
    try:
        if "writes" in sections:
            text, met["write"] = bench_writes(scratch, rounds, n, peer_n, not args.no_peer)
            emit(text)
        if "leases" in sections:
            text, met["lease"] = bench_leases(scratch, rounds, lease_n, args.lease_baseline)
            emit(text)
        if "contention" in sections:
            text, met["contention"] = bench_contention(scratch, contention_rounds, duration)
            emit(text)
        from _profile import profile_lease, profile_write

        if "writes" in sections and (args.profile or (not met["write"] and not args.no_profile)):
            for size in SIZES.values():
                emit(profile_write(scratch, size, 100 if args.quick else 300))
        if "leases" in sections and (args.profile or (not met["lease"] and not args.no_profile)):
            emit(profile_lease(scratch, 300 if args.quick else 1000))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = ", ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in met.items())
    emit(f"_bench_core: {summary}; {time.monotonic() - started:.0f} s._")
    return 0


if __name__ == "__main__":
    sys.exit(main())
