"""Processes that open the same fresh root at the same instant all work: the state directory and
schema are created once, inside a transaction, with no "database is locked" and no missing table.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from agent_coherence import Coordinator

from conftest import FORK

PROCESSES = 8
ROUNDS = 5


def open_and_write(root: str, barrier, results, worker: int) -> None:
    try:
        barrier.wait(30)
        with Coordinator.open(root) as coord:
            own = coord.write(f"own/{worker}.txt", f"worker {worker}", holder=f"w{worker}")
            shared = coord.update("shared.txt", lambda old: str(int(old or b"0") + 1), holder=f"w{worker}")
            results.put((worker, own.version, shared.version, None))
    except BaseException as error:
        results.put((worker, None, None, repr(error)))


def race(root: str) -> list[tuple]:
    barrier = FORK.Barrier(PROCESSES)
    results = FORK.Queue()
    procs = [FORK.Process(target=open_and_write, args=(root, barrier, results, i)) for i in range(PROCESSES)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(30)
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    return sorted(outcomes)


@pytest.mark.timeout(120)
def test_simultaneous_opens_of_a_fresh_root_all_work(tmp_path):
    for round_ in range(ROUNDS):
        root = tmp_path / f"fresh-{round_}" / "root"  # not even the root directory exists yet
        outcomes = race(str(root))
        assert [error for *_, error in outcomes] == [None] * PROCESSES
        assert [own for _, own, _, _ in outcomes] == [1] * PROCESSES
        assert sorted(shared for _, _, shared, _ in outcomes) == list(range(1, PROCESSES + 1))
        with Coordinator.open(root) as coord:
            for worker in range(PROCESSES):
                assert coord.read(f"own/{worker}.txt").data == f"worker {worker}".encode()
            assert coord.read("shared.txt").data == str(PROCESSES).encode()
            assert coord.journal.count(kind="write") == 2 * PROCESSES
            coord.journal.verify()


def naive_open(path: str, barrier, results) -> None:
    """What a first attempt looks like: create the schema outside any transaction, no retry."""
    try:
        barrier.wait(30)
        conn = sqlite3.connect(path, timeout=0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(
            "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);"
            "CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, data TEXT);"
            "INSERT OR IGNORE INTO meta VALUES ('schema_version', '1');"
        )
        conn.execute("INSERT INTO journal(data) VALUES ('opened')")
        conn.commit()
        conn.close()
        results.put(None)
    except BaseException as error:
        results.put(repr(error))


@pytest.mark.timeout(120)
def test_the_naive_schema_setup_races(tmp_path):
    """The baseline: the same simultaneous start fails with "database is locked" without the
    backend's immediate transaction and jittered retry."""
    failures = []
    deadline = time.monotonic() + 30
    round_ = 0
    while not failures and time.monotonic() < deadline:
        round_ += 1
        barrier = FORK.Barrier(PROCESSES)
        results = FORK.Queue()
        path = str(tmp_path / f"naive-{round_}.db")
        procs = [FORK.Process(target=naive_open, args=(path, barrier, results)) for _ in range(PROCESSES)]
        for proc in procs:
            proc.start()
        failures += [r for r in (results.get(timeout=60) for _ in procs) if r is not None]
        for proc in procs:
            proc.join(30)
    assert failures and all("locked" in f or "busy" in f for f in failures), failures
