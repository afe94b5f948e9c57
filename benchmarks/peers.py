"""In-process peers and physical floors for the benchmarks.

Every ``time_*`` function runs its operation ``warmup`` times untimed, then
``n`` times timed with ``time.perf_counter_ns``, and returns the ``n``
per-op (or per-round-trip) durations in nanoseconds. All are single-threaded
and uncontended; each works inside ``dirpath`` (created if missing) using its
own file names, so one directory can host all of them.

Durability of the queue peers (versions pinned in pyproject's ``bench`` extra;
checked against persist-queue 1.1.0 and litequeue 0.9):

* persist-queue ``SQLiteAckQueue(path, auto_commit=True, multithreading=False)``
  opens SQLite with ``journal_mode=WAL`` and never sets ``synchronous``, so it
  gets the SQLite build default -- ``FULL`` (2) for CPython's bundled SQLite
  and Debian's (``DEFAULT_WAL_SYNCHRONOUS=2``); verify with
  :func:`peer_durability`. ``auto_commit=False`` is refused by the ack queue
  (it warns and forces ``True``). ``put``, ``get`` (marks the row *unack*) and
  ``ack`` (marks it *acked*) are each one committed transaction, so every
  step is fsynced before it returns. Acked rows stay in the table until
  ``clear_acked_data()``. ``multithreading=True`` only opens a second
  connection with ``check_same_thread=False``; it does not change durability.
* litequeue ``LiteQueue(path)`` sets ``journal_mode=WAL`` and
  ``synchronous=NORMAL`` itself: each ``put`` / ``pop`` / ``done`` is one
  autocommitted transaction, atomic and safe against a process crash, but a
  WAL commit under NORMAL is not fsynced -- the last commits can be lost on
  power failure / OS crash. ``synchronous=`` here re-issues the PRAGMA after
  construction for a like-for-like run. Done rows stay until ``prune()``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import filelock
import litequeue
import persistqueue
import portalocker

DEFAULT_WARMUP = 3
_SYNC_LEVELS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})


def _dir(dirpath: str | os.PathLike[str]) -> Path:
    path = Path(dirpath)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _time_ops(op: Callable[[int], object], n: int, warmup: int) -> list[int]:
    """Run ``op(i)`` ``warmup`` times untimed, then ``n`` times timed; return ns per call."""
    if n < 1 or warmup < 0:
        raise ValueError("need n >= 1 and warmup >= 0")
    for i in range(warmup):
        op(i)
    samples: list[int] = []
    clock = time.perf_counter_ns
    for i in range(warmup, warmup + n):
        t0 = clock()
        op(i)
        samples.append(clock() - t0)
    return samples


def _sync_level(synchronous: str) -> str:
    level = synchronous.upper()
    if level not in _SYNC_LEVELS:
        raise ValueError(f"synchronous must be one of {sorted(_SYNC_LEVELS)}, got {synchronous!r}")
    return level


# --------------------------------------------------------------------------- locks


def time_filelock(dirpath: str | os.PathLike[str], n: int, *, warmup: int = DEFAULT_WARMUP) -> list[int]:
    """Uncontended ``filelock.FileLock`` acquire + release cycles (defaults:
    native ``flock``; the lock file is opened on acquire, closed on release,
    and left in place)."""
    lock = filelock.FileLock(str(_dir(dirpath) / "filelock.lock"))

    def cycle(_: int) -> None:
        lock.acquire()
        lock.release()

    return _time_ops(cycle, n, warmup)


def time_portalocker(dirpath: str | os.PathLike[str], n: int, *, warmup: int = DEFAULT_WARMUP) -> list[int]:
    """Uncontended ``portalocker.Lock`` acquire + release cycles (defaults:
    ``LOCK_EX | LOCK_NB``, file opened in mode ``"a"`` on acquire, closed on
    release)."""
    lock = portalocker.Lock(str(_dir(dirpath) / "portalocker.lock"))

    def cycle(_: int) -> None:
        lock.acquire()
        lock.release()

    return _time_ops(cycle, n, warmup)


# -------------------------------------------------------------------------- queues


def time_persist_queue(
    dirpath: str | os.PathLike[str],
    n: int,
    payload: bytes,
    *,
    synchronous: str | None = None,
    warmup: int = DEFAULT_WARMUP,
) -> list[int]:
    """persist-queue ``SQLiteAckQueue`` round trips: ``put`` + ``get`` + ``ack``
    (three committed transactions; WAL, library-default ``synchronous`` --
    FULL on common builds -- unless ``synchronous`` overrides it)."""
    queue = persistqueue.SQLiteAckQueue(
        str(_dir(dirpath) / "persist-queue"),
        auto_commit=True,  # the only mode the ack queue supports
        multithreading=False,  # single-threaded driver; one connection
    )
    try:
        if synchronous is not None:
            queue._putter.execute(f"PRAGMA synchronous={_sync_level(synchronous)}")

        def round_trip(_: int) -> None:
            queue.put(payload)
            item = queue.get(block=False, raw=True)
            queue.ack(id=item["pqid"])

        return _time_ops(round_trip, n, warmup)
    finally:
        queue.close()


def time_litequeue(
    dirpath: str | os.PathLike[str],
    n: int,
    payload: bytes,
    *,
    synchronous: str | None = None,
    warmup: int = DEFAULT_WARMUP,
) -> list[int]:
    """litequeue ``LiteQueue`` round trips: ``put`` + ``pop`` + ``done`` (three
    autocommitted transactions; WAL, ``synchronous=NORMAL`` as the library sets
    it, unless ``synchronous`` overrides it). ``payload`` is stored as-is, as a
    BLOB in the TEXT column (litequeue's hint says ``str``; SQLite keeps bytes
    byte-for-byte, so no encoding cost is added)."""
    queue = litequeue.LiteQueue(str(_dir(dirpath) / "litequeue.db"))
    try:
        if synchronous is not None:
            queue.conn.execute(f"PRAGMA synchronous={_sync_level(synchronous)}")

        def round_trip(_: int) -> None:
            queue.put(payload)  # type: ignore[arg-type]
            message = queue.pop()
            assert message is not None
            queue.done(message.message_id)

        return _time_ops(round_trip, n, warmup)
    finally:
        queue.close()


def peer_durability(dirpath: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """The effective SQLite ``journal_mode`` / ``synchronous`` of each queue peer
    as constructed by the timing functions above (no overrides)."""
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    root = _dir(dirpath)
    pq = persistqueue.SQLiteAckQueue(str(root / "durability-persist-queue"), auto_commit=True)
    lq = litequeue.LiteQueue(str(root / "durability-litequeue.db"))
    try:
        conns = {"persist-queue": pq._putter, "litequeue": lq.conn}
        return {
            name: {
                "journal_mode": str(conn.execute("PRAGMA journal_mode").fetchone()[0]),
                "synchronous": names.get(conn.execute("PRAGMA synchronous").fetchone()[0], "?"),
            }
            for name, conn in conns.items()
        }
    finally:
        pq.close()
        lq.close()


# -------------------------------------------------------------------------- floors


def time_floor_write(
    dirpath: str | os.PathLike[str], n: int, payload: bytes, *, warmup: int = DEFAULT_WARMUP
) -> list[int]:
    """The physical floor of a durable file replace: create a temp file,
    write ``payload``, ``fsync`` it, ``os.replace`` it over the target, and
    ``fsync`` the directory (directory fd opened once, outside the timing)."""
    root = _dir(dirpath)
    target = root / "floor.bin"
    tmp = root / "floor.bin.tmp"
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    view = memoryview(payload)

    def durable_replace(_: int) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            written = 0
            while written < len(view):
                written += os.write(fd, view[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        os.fsync(dir_fd)

    try:
        return _time_ops(durable_replace, n, warmup)
    finally:
        os.close(dir_fd)


def _wal_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None)  # autocommit: one statement, one commit
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={_sync_level(synchronous)}")
    return conn


def time_sqlite_floor(
    dirpath: str | os.PathLike[str],
    n: int,
    payload: bytes,
    synchronous: str = "FULL",
    *,
    warmup: int = DEFAULT_WARMUP,
) -> list[int]:
    """The queue floor: bare sqlite3 (WAL, given ``synchronous``) round trips of
    INSERT a row holding ``payload``, UPDATE it, DELETE it -- three separate
    autocommitted transactions, i.e. enqueue, claim, acknowledge."""
    conn = _wal_connection(_dir(dirpath) / f"sqlite-floor-{_sync_level(synchronous).lower()}.db", synchronous)
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, data BLOB NOT NULL, state INTEGER NOT NULL)"
        )

        def round_trip(_: int) -> None:
            row_id = conn.execute("INSERT INTO q (data, state) VALUES (?, 0)", (payload,)).lastrowid
            conn.execute("UPDATE q SET state = 1 WHERE id = ?", (row_id,))
            conn.execute("DELETE FROM q WHERE id = ?", (row_id,))

        return _time_ops(round_trip, n, warmup)
    finally:
        conn.close()


def time_sqlite_commit(dirpath: str | os.PathLike[str], n: int, *, warmup: int = DEFAULT_WARMUP) -> list[int]:
    """One bare sqlite3 commit: a single-row INSERT of an integer in its own
    autocommitted transaction (WAL, ``synchronous=FULL``)."""
    conn = _wal_connection(_dir(dirpath) / "sqlite-commit.db", "FULL")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS c (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")

        def commit(i: int) -> None:
            conn.execute("INSERT INTO c (v) VALUES (?)", (i,))

        return _time_ops(commit, n, warmup)
    finally:
        conn.close()


if __name__ == "__main__":  # smoke run: python benchmarks/peers.py [DIR] [N]
    import statistics
    import sys
    import tempfile

    scratch = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="peers-")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    kib = b"\xa5" * 1024
    runs: dict[str, Callable[[], list[int]]] = {
        "filelock": lambda: time_filelock(scratch, count),
        "portalocker": lambda: time_portalocker(scratch, count),
        "persist_queue 1KiB": lambda: time_persist_queue(scratch, count, kib),
        "litequeue 1KiB": lambda: time_litequeue(scratch, count, kib),
        "floor_write 1KiB": lambda: time_floor_write(scratch, count, kib),
        "sqlite_floor FULL 1KiB": lambda: time_sqlite_floor(scratch, count, kib, "FULL"),
        "sqlite_floor NORMAL 1KiB": lambda: time_sqlite_floor(scratch, count, kib, "NORMAL"),
        "sqlite_commit": lambda: time_sqlite_commit(scratch, count),
    }
    for label, run in runs.items():
        ns = run()
        print(f"{label:26s} median {statistics.median(ns) / 1000:10.1f} us  (n={len(ns)})")
    print(peer_durability(scratch))
