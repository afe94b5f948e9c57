"""Lost updates: the broken way beside the fixed way.

Several processes each add 1 to a shared counter file, many times. Done naively (read the file, add
1, write it back) two processes read the same value and both write value+1: one increment vanishes,
and every process still exits 0. Done through ``coord.update(key, fn, holder=...)``, a write based
on a stale read is refused (VersionConflict) and retried on the fresh bytes, so the count is exact.

Both runs use the same "think time" between reading and writing, the window in which an agent
reasons about what it read. Offline, no model, a few seconds::

    python examples/lost_update.py                 # in a temporary directory
    python examples/lost_update.py --root ./scratch --processes 4 --increments 50

``run(root, processes, increments)`` returns the counts, for tests and for ``examples/demo.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

NAIVE_FILE = "naive-counter.txt"
COORDINATED_KEY = "counter.txt"
THINK_TIME = 0.001  # seconds between reading and writing, the same in both runs
GO_FILE = ".lost-update-go"


def _increment(old: bytes) -> bytes:
    """The change both runs make: the number in the file, plus one."""
    time.sleep(THINK_TIME)
    return str(int(old.strip() or b"0") + 1).encode()


# -- the workers (each runs in its own process) ------------------------------------------------


def naive_worker(root: str, increments: int) -> dict[str, Any]:
    path = os.path.join(root, NAIVE_FILE)
    empty_reads = 0
    _ready_and_wait(root)
    for _ in range(increments):
        with open(path, "rb") as handle:
            old = handle.read()
        if not old.strip():  # caught another process between its truncate and its write
            empty_reads += 1
        new = _increment(old)
        with open(path, "wb") as handle:  # truncate + write: what `>` and open(..., "w") do
            handle.write(new)
    return {"empty_reads": empty_reads}


def coordinated_worker(root: str, increments: int, name: str) -> dict[str, Any]:
    from agent_coherence import Coordinator

    with Coordinator.open(root) as coord:
        _ready_and_wait(root)
        receipt = None
        for _ in range(increments):
            receipt = coord.update(COORDINATED_KEY, _increment, holder=name)
    return {"receipt": receipt.model_dump() if receipt else None}


def _ready_and_wait(root: str) -> None:
    """Tell the parent this process is started, then wait for the common start signal, so the
    processes really run at the same time (start-up takes longer than the work)."""
    print("ready", flush=True)
    go = os.path.join(root, GO_FILE)
    while not os.path.exists(go):
        time.sleep(0.001)


# -- the runner ---------------------------------------------------------------------------------


def _race(root: str, mode: str, processes: int, increments: int) -> tuple[list[dict[str, Any]], float]:
    """Start the workers, release them together, wait; returns their results and the seconds."""
    go = os.path.join(root, GO_FILE)
    if os.path.exists(go):
        os.unlink(go)
    workers = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", mode, "--root", root,
             "--increments", str(increments), "--name", f"worker-{number}"],
            stdout=subprocess.PIPE, text=True,
        )
        for number in range(processes)
    ]
    try:
        for worker in workers:
            if worker.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
                raise RuntimeError(f"a {mode} worker failed to start")
        started = time.monotonic()
        with open(go, "w"):
            pass
        outputs = [worker.communicate()[0] for worker in workers]
        elapsed = time.monotonic() - started
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        if os.path.exists(go):
            os.unlink(go)
    for worker in workers:
        if worker.returncode != 0:
            raise RuntimeError(f"a {mode} worker exited with {worker.returncode}")
    return [json.loads(output.strip().splitlines()[-1]) for output in outputs], elapsed


def run(root: str, processes: int = 4, increments: int = 50, *, quiet: bool = False) -> dict[str, Any]:
    """Run both races in ``root`` and return the counts.

    Keys: ``expected``; ``naive`` and ``coordinated`` (the final counts); ``naive_lost``,
    ``coordinated_lost``, ``naive_empty_reads``; ``final_version`` and ``expected_version`` (of the
    coordinated counter); ``refused`` (stale writes the layer refused and retried); ``receipts``;
    ``journal_entries``, ``journal_head``; ``naive_seconds``, ``coordinated_seconds``.
    """
    from agent_coherence import Coordinator

    say = (lambda *args: None) if quiet else print
    root = os.path.realpath(root)
    os.makedirs(root, exist_ok=True)
    expected = processes * increments
    say(f"Lost updates: {processes} processes each add 1 to a counter file {increments} times "
        f"(expected total {expected}).\n")

    with open(os.path.join(root, NAIVE_FILE), "wb") as handle:
        handle.write(b"0")
    naive_results, naive_seconds = _race(root, "naive", processes, increments)
    empty_reads = sum(result["empty_reads"] for result in naive_results)
    with open(os.path.join(root, NAIVE_FILE), "rb") as handle:
        naive_actual = int(handle.read().strip() or b"0")
    say("The broken way: read the file, add 1, write it back")
    say(f"  expected {expected}, actual {naive_actual}: {expected - naive_actual} updates lost, "
        f"and every process exited 0 ({naive_seconds:.2f}s)")
    say(f"  two processes read the same value and both wrote value+1; {empty_reads} reads even saw "
        "the file empty, between another process's truncate and its write\n")

    with Coordinator.open(root) as coord:
        start = coord.write(COORDINATED_KEY, b"0", holder="setup")
        refused_before = _refusals(coord)
        results, coordinated_seconds = _race(root, "coordinated", processes, increments)
        final = coord.read(COORDINATED_KEY)
        coordinated_actual = int(final.data.strip() or b"0")
        refused = _refusals(coord) - refused_before
        receipts = [result["receipt"] for result in results if result.get("receipt")]
        say("The fixed way: coord.update(key, fn, holder=...) -- the same read, +1, write")
        say(f"  expected {expected}, actual {coordinated_actual}: {expected - coordinated_actual} lost "
            f"({coordinated_seconds:.2f}s); version {final.version}")
        say(f"  {refused} writes based on a stale read were refused (VersionConflict / LeaseHeld) "
            "and redone on fresh bytes\n")
        say("Two of the receipts (a receipt means: fsynced, renamed, read back, committed):")
        for receipt in receipts[:2]:
            say(f"  {receipt['holder']}: {receipt['key']} version {receipt['version']} "
                f"sha256 {receipt['sha256'][:12]} size {receipt['size']} fence {receipt['fence']} "
                f"durable={receipt['durable']}")
        say("\nThe last journal entries:")
        for event in coord.journal.tail(5):
            data = " ".join(f"{k}={str(v)[:12]}" for k, v in event.data.items())
            say(f"  {event.seq:>6}  {event.kind:<16}  {event.key or '-'}  {event.holder or '-'}  {data}")
        entries = coord.journal.verify()
        head = coord.journal.head()
        say(f"\njournal.verify(): {entries} entries, hash chain intact, head {head[:16]}...")

    return {
        "expected": expected,
        "naive": naive_actual,
        "naive_lost": expected - naive_actual,
        "naive_empty_reads": empty_reads,
        "coordinated": coordinated_actual,
        "coordinated_lost": expected - coordinated_actual,
        "final_version": final.version,
        "expected_version": start.version + expected,
        "refused": refused,
        "receipts": receipts,
        "journal_entries": entries,
        "journal_head": head,
        "naive_seconds": naive_seconds,
        "coordinated_seconds": coordinated_seconds,
    }


def _refusals(coord: Any) -> int:
    return coord.journal.count(kind="conflict.version") + coord.journal.count(kind="conflict.lease")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="workspace directory (default: a temporary one, removed after)")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--increments", type=int, default=50)
    parser.add_argument("--worker", choices=["naive", "coordinated"], help=argparse.SUPPRESS)
    parser.add_argument("--name", default="worker", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)

    if options.worker:
        if options.worker == "naive":
            result = naive_worker(options.root, options.increments)
        else:
            result = coordinated_worker(options.root, options.increments, options.name)
        print(json.dumps(result), flush=True)
        return 0

    if options.root:
        counts = run(options.root, options.processes, options.increments)
    else:
        with tempfile.TemporaryDirectory(prefix="lost-update-") as root:
            counts = run(root, options.processes, options.increments)
    if counts["coordinated_lost"] != 0:
        print("UNEXPECTED: the coordinated run lost updates", file=sys.stderr)
        return 1
    if counts["naive_lost"] == 0:
        print("(the naive run happened to lose nothing this time; the race is still there)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
