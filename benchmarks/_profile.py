"""Profiles for ``bench_core.py``: where a confirmed write and a lease cycle spend their time.

Imported by ``bench_core.main`` only when a target is missed (or with ``--profile``). Each profile
prints unprofiled references measured side by side, then a call tree built with ``CallTimer``
wrappers around the coordinator's helpers, the file system calls, the backend methods and every
SQL statement.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

from _util import (
    CallTimer, RoundResults, SQLStatementTimer, filesystem_of, fmt_ratio, fmt_us, interleaved_rounds,
    markdown_table, median, profile_tables, time_ops,
)
from agent_coherence import stamps
from bench_core import KEY, WARMUP, _coordinator_case, _floor_case, _fresh_dir, _payloads
from peers import time_sqlite_commit

from agent_coherence import Coordinator




def _wal_frames_per_write(root: str, coord: Coordinator, payload: bytes, writes: int) -> dict[str, float]:
    """WAL frames (pages) each transaction of a write appends, from a side connection that
    checkpoints the WAL empty before each transaction and reads the frame count after it."""
    db = os.path.join(root, ".agent-coherence", "state.db")
    side = sqlite3.connect(db, isolation_level=None, timeout=5, check_same_thread=False)
    counts: dict[str, list[int]] = {}
    backend = coord.backend
    originals = {name: getattr(backend, name) for name in ("begin_write", "sync_intent", "commit_write")
                 if hasattr(backend, name)}

    def counting(name: str) -> Callable[..., object]:
        def wrapper(*args: object, **kwargs: object) -> object:
            side.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            try:
                return originals[name](*args, **kwargs)
            finally:
                counts.setdefault(name, []).append(side.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
        return wrapper

    for name in originals:
        setattr(backend, name, counting(name))
    try:
        for i in range(writes):
            coord.write(KEY, payload + bytes([i % 2]), holder="bench")
    finally:
        for name in originals:
            delattr(backend, name)
        page = side.execute("PRAGMA page_size").fetchone()[0]
        side.close()
    out = {name: median(values) for name, values in counts.items()}
    out["page_size"] = page
    return out


# The size of the stamp (user.agent-coherence) a write of KEY by "bench" sets once the key's version
# and fence have passed 127 (45 bytes in format 2; format 1, before, was 117).
STAMP_BYTES = len(stamps.encode_fields(os.urandom(8).hex(), KEY, "bench", 200, 200, hashlib.sha256(b"new").hexdigest(),
                                       hashlib.sha256(b"old").hexdigest()))


def _time_skeleton(dirpath: str, n: int, payload: bytes, *, stamp: bool, transactions: bool) -> list[int]:
    """The design's I/O without our code, in plain ``os`` + ``sqlite3``: the floor; with ``stamp``
    an extended attribute of the stamp's size set on the temp file before its fsync; with
    ``transactions`` a 1-statement intent transaction before it and a 3-statement confirmation
    transaction after it, both SQLite WAL ``synchronous=NORMAL`` (what a write in the stamp mode
    commits)."""
    root = Path(dirpath)
    target, tmp = root / "floor.bin", root / "floor.bin.tmp"
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    conn = sqlite3.connect(str(root / "confirm.db"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE intents (k TEXT PRIMARY KEY, v INTEGER)")
    conn.execute("CREATE TABLE artifacts (k TEXT PRIMARY KEY, v INTEGER, sha TEXT)")
    conn.execute("CREATE TABLE journal (seq INTEGER PRIMARY KEY, k TEXT, data TEXT)")
    stamp_value = b"s" * STAMP_BYTES

    def op(i: int) -> None:
        if transactions:
            conn.execute("INSERT OR REPLACE INTO intents VALUES ('k', ?)", (i,))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, payload)
            if stamp:
                os.setxattr(fd, "user.agent-coherence", stamp_value)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        os.fsync(dir_fd)
        if transactions:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM intents WHERE k = 'k'")
            conn.execute("INSERT OR REPLACE INTO artifacts VALUES ('k', ?, ?)", (i, str(i)))
            conn.execute("INSERT INTO journal (k, data) VALUES ('k', ?)", (str(i),))
            conn.execute("COMMIT")

    try:
        return time_ops(op, n, WARMUP)
    finally:
        os.close(dir_fd)
        conn.close()


def _instrument_backend(timer: CallTimer, backend: object, methods: tuple[str, ...]) -> Callable[[], None]:
    """Wrap ``methods`` of the backend and time every SQL statement; returns the undo."""
    for name in methods + ("transaction", "read", "_append"):
        timer.wrap(backend, name, f"backend.{name}")
    backend._connection()  # type: ignore[attr-defined]
    real_conn = backend._conn  # type: ignore[attr-defined]
    real_run = backend._run  # type: ignore[attr-defined]
    backend._conn = SQLStatementTimer(real_conn, timer)  # type: ignore[attr-defined]
    backend._run = backend._conn.execute  # type: ignore[attr-defined]  # the reused cursor's statements too

    def undo() -> None:
        backend._conn, backend._run = real_conn, real_run  # type: ignore[attr-defined]

    return undo


def _write_references(scratch: str, size: int, n: int, label: str) -> RoundResults:
    """Unprofiled figures, side by side in small interleaved rounds."""
    payload = _payloads(size)[0]
    return interleaved_rounds({
        "floor": _floor_case(scratch, size, n),
        "stamped floor": lambda: _time_skeleton(_fresh_dir(scratch, "psk"), n, payload, stamp=True,
                                                transactions=False),
        "NORMAL txn + stamped floor + NORMAL txn": lambda: _time_skeleton(
            _fresh_dir(scratch, "psk"), n, payload, stamp=True, transactions=True),
        "bare FULL commit": lambda: time_sqlite_commit(_fresh_dir(scratch, "pcommit"), n),
        "write": _coordinator_case(scratch, size, n, "holder"),
    }, 5, label=label)


def _profiled_writes(scratch: str, size: int, n: int) -> CallTimer:
    """``n`` writes with the coordinator's helpers, the file system calls, the backend methods
    and every SQL statement wrapped in timers."""
    import agent_coherence.coordinator as cm
    import agent_coherence.durable as dm
    import agent_coherence.recovery as rm

    root = _fresh_dir(scratch, "profile")
    coord = Coordinator.open(root)
    a, b = _payloads(size)
    timer = CallTimer()
    try:
        for i in range(20):
            coord.write(KEY, a if i % 2 else b, holder="bench")
        for name in ("resolve_file_key", "sha256_hex", "temp_path_for", "read_bytes", "ensure_parent",
                     "file_mode", "write_temp", "rename_into_place", "WriteReceipt", "WriteRequest"):
            if hasattr(cm, name):
                timer.wrap(cm, name)
        timer.wrap(dm, "fsync_dir")
        timer.wrap(rm, "own_identity")
        for name in ("open", "write", "fsync", "rename", "close"):
            timer.wrap(os, name, f"os.{name}")
        undo = _instrument_backend(timer, coord.backend, tuple(
            name for name in ("begin_write", "sync_intent", "commit_write", "get_version", "check_fence", "get_intent",
                              "abort_write", "_take_lease", "_live_lease_or_lost", "_version_row",
                              "_intent_row", "_store_version", "_drop_intent")
            if hasattr(coord.backend, name)))
        timer.wrap(coord, "write", "coord.write")
        try:
            for i in range(n):
                coord.write(KEY, a if i % 2 else b, holder="bench")
        finally:
            timer.restore()
            undo()
    finally:
        coord.close()
        shutil.rmtree(root, ignore_errors=True)
    return timer


def _tmpfs_scratch() -> str | None:
    """A scratch dir on tmpfs (where fsync is nearly free), if the machine has one."""
    if os.path.isdir("/dev/shm") and filesystem_of("/dev/shm").startswith("tmpfs"):
        return tempfile.mkdtemp(prefix="ac-bench-core-", dir="/dev/shm")
    return None


def profile_write(scratch: str, size: int, n: int) -> str:
    """Attribute the time of ``coord.write(holder=)`` to its steps, on the disk and on tmpfs."""
    kib = f"{size // 1024} KiB"
    refs = _write_references(scratch, size, max(10, n // 5), f"profile refs {kib}")
    memory = _tmpfs_scratch()
    try:
        mem_refs = _write_references(memory, size, max(10, n // 5), f"profile refs {kib} tmpfs") if memory else None
        root = _fresh_dir(scratch, "frames")
        with Coordinator.open(root) as coord:
            frames = _wal_frames_per_write(root, coord, _payloads(size)[0], 30)
        timer = _profiled_writes(scratch, size, n)
        mem_timer = _profiled_writes(memory, size, n) if memory else None
    finally:
        if memory:
            shutil.rmtree(memory, ignore_errors=True)

    commits = {label: timer.calls.get(label, 0) / n for label in timer.calls if label.startswith("sql COMMIT")}
    statements = sum(c for label, c in timer.calls.items() if label.startswith("sql ")) / n
    page = frames.pop("page_size", 4096)
    ref_rows = []
    for name in ("floor", "stamped floor", "NORMAL txn + stamped floor + NORMAL txn", "bare FULL commit", "write"):
        row = [name, fmt_us(refs.median(name)), fmt_ratio(refs.ratio(name, "floor"))]
        if mem_refs is not None:
            row += [fmt_us(mem_refs.median(name)), fmt_us(refs.median(name) - mem_refs.median(name))]
        ref_rows.append(row)
    headers = ["reference", "disk µs", "× floor"] + (["tmpfs µs (≈ CPU)", "disk − tmpfs (≈ I/O wait)"]
                                                     if mem_refs is not None else [])
    out = [
        f"### Profile: where a {kib} `coord.write(holder=)` spends its time",
        "",
        "Unprofiled references, 5 interleaved rounds measured just before the profile. The `stamped` "
        "rows are the write's I/O skeleton in plain `os` + `sqlite3` (no agent-coherence code): the floor "
        f"with a {STAMP_BYTES}-byte extended attribute (the stamp's size) set on the temp file before its "
        "fsync, then the same between a 1-statement intent transaction and a 3-statement confirmation "
        "transaction, both `synchronous=NORMAL` as a write in the stamp mode commits them. On tmpfs an fsync "
        "is nearly free, so the tmpfs column is roughly the CPU cost of each operation and the last column "
        "roughly its wait for the disk.",
        "",
        markdown_table(headers, ref_rows),
        "",
        f"Per write: {statements:.1f} SQL statements; commits "
        + ", ".join(f"{label[4:]} × {c:.0f}" for label, c in sorted(commits.items()))
        + f"; WAL pages appended ({page}-byte pages): "
        + ", ".join(f"`{name}` {count:.0f}" for name, count in frames.items()) + ".",
        "",
        f"**On the disk** ({n} profiled writes, {fmt_us(timer.inclusive['coord.write'] / n)} µs per write):",
        "",
        *profile_tables(timer, "coord.write", n),
    ]
    if mem_timer is not None:
        out += ["", f"**On tmpfs: the CPU side** ({n} profiled writes, "
                f"{fmt_us(mem_timer.inclusive['coord.write'] / n)} µs per write):", "",
                *profile_tables(mem_timer, "coord.write", n, tree=size <= 4096)]
    return "\n".join(out)


def profile_lease(scratch: str, n: int) -> str:
    """Attribute the time of an uncontended ``coord.acquire`` + ``coord.release`` cycle."""
    import agent_coherence.leases as lm

    root = _fresh_dir(scratch, "profile-lease")
    coord = Coordinator.open(root)
    key = "locks/resource.txt"
    try:
        for _ in range(20):
            coord.release(coord.acquire(key, holder="bench", ttl=30))
        timer = CallTimer()
        timer.wrap(coord, "_lease_keys", "lease key (cached)")
        timer.wrap(lm, "normalize_key")
        undo = _instrument_backend(timer, coord.backend, (
            "acquire_lease", "release_lease", "_take_lease"))

        def cycle() -> None:
            coord.release(coord.acquire(key, holder="bench", ttl=30))

        timed_cycle = timer.timed("acquire + release", cycle)
        try:
            for _ in range(n):
                timed_cycle()
        finally:
            timer.restore()
            undo()
    finally:
        coord.close()
        shutil.rmtree(root, ignore_errors=True)
    commits = {label: timer.calls.get(label, 0) / n for label in timer.calls if label.startswith("sql COMMIT")}
    return "\n".join([
        "### Profile: an uncontended `coord.acquire` + `coord.release` cycle",
        "",
        f"Profiled run: {n} cycles, {fmt_us(timer.inclusive['acquire + release'] / n)} µs per cycle; commits "
        + ", ".join(f"{label[4:]} × {c:.0f}" for label, c in sorted(commits.items())) + ".",
        "",
        *profile_tables(timer, "acquire + release", n),
    ])
