"""The embedded backend: one SQLite database file in WAL mode, shared by every process on a host.

Every operation is one ``BEGIN IMMEDIATE`` transaction. SQLite's own busy handler is unfair under
contention (a writer can starve for seconds), so the connection uses ``busy_timeout=0`` and this
module retries with short jittered sleeps up to a deadline, then raises BackendUnavailable.

Durability: commits that confirm a write run with ``synchronous=FULL`` (they survive power loss);
everything else (leases, intents, conflicts) runs with ``NORMAL``, which survives any process crash
but may lose the last transactions on power loss, when every holder on the host dies too.
One connection per process: a connection is never used across ``fork``.
"""

from __future__ import annotations

import os
import time
from _thread import RLock  # what threading.RLock is, without importing threading (hook start-up)
from _weakref import ref  # what weakref.ref is, without importing weakref (hook start-up)
from _weakrefset import WeakSet  # what weakref.WeakSet is, already loaded at start-up
from os import getpid

try:
    # The C module behind the ``sqlite3`` package, the same connect/Connection/errors. The package
    # adds only datetime adapters (unused here) and imports datetime, which costs the Claude Code
    # hook's start-up a few milliseconds.
    import _sqlite3 as sqlite3
except ImportError:
    import sqlite3  # type: ignore[no-redef]

from .. import json_text  # json.loads/dumps without importing the json package (hook start-up)
from ..errors import BackendUnavailable
from ..journal import GENESIS, ChainWalk, chain_hash, encode_data, unreadable_entry, verify_entries
from ..logs import WARNING, log
from .sqlite_channels import ChannelOps
from .sqlite_leases import LeaseOps
from .sqlite_liveness import LivenessOps
from .sqlite_retention import INDEXED_KINDS, INDEXED_KINDS_SQL, JOURNAL_BOUNDS, RetentionOps
from .sqlite_schema import SchemaOps
from .sqlite_refs import RefOps
from .sqlite_writes import WriteOps
from .sqlite_tx import Deferred as _Deferred, database_error, is_busy as _is_busy
from .records import JournalRecord

TYPE_CHECKING = False  # typing is not imported at run time: this module is on the hook path
if TYPE_CHECKING:
    from typing import Any, Callable, Iterator, TypeVar

    T = TypeVar("T")

JOURNAL_PAGE = 2000  # journal entries fetched per read while iterating
_JOURNAL_HEAD = "SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1"
_JOURNAL_INSERT = "INSERT INTO journal(seq, ts, kind, key, holder, data, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?)"


def _jitter(limit: float) -> float:
    """A uniform random delay in [0, limit) (os.urandom: the random module costs the hook start-up)."""
    return limit * int.from_bytes(os.urandom(2), "big") / 65536


_BACKENDS: "WeakSet[SQLiteBackend]" = WeakSet()


class _Connection(sqlite3.Connection):
    """A connection this process can find again before a fork (the base class takes no weak
    references, and a connection can outlive its backend when garbage still refers to it).
    ``owner`` is a weak reference to the backend that opened it, ``pid`` the process that did.

    It is findable before the database is opened: an opening interrupted as it returned loses the
    connection with its result, and a lost connection stays open until the cycle collector runs
    (its statement cache refers back to it); its backend finds it and closes it instead."""

    owner: "Callable[[], SQLiteBackend | None]"
    pid: int

    def __init__(self, *args: Any, owner: "SQLiteBackend", **kwargs: Any) -> None:
        self.owner, self.pid = ref(owner), getpid()  # before it is findable: the fork hook reads it
        _CONNECTIONS.add(self)
        super().__init__(*args, **kwargs)


_CONNECTIONS: "WeakSet[_Connection]" = WeakSet()
_LOCKED_FOR_FORK: "list[SQLiteBackend]" = []  # backends whose lock the fork in progress holds


def _no_connection(*args: object) -> sqlite3.Cursor:
    raise RuntimeError("the backend's statement runner was used without its connection")


def _close_before_fork() -> None:
    """No SQLite connection may be open across ``fork``: the child inherits SQLite's per-process
    record of which files it has open and locked, but not the POSIX locks themselves, so even a
    connection the child opens afresh can believe it is alone and delete the WAL under the
    processes still writing to it (silently losing their commits). Every connection of this
    process is closed here, before the fork; each backend reopens its own on next use.

    Each backend's lock is taken first (another thread may be opening or using a connection under
    it: closing one under a running statement can crash the process) and held until the fork is
    done, so no thread opens a connection in between. A backend whose lock stays held for 5 s keeps
    its connection (see ``_after_fork_in_child``)."""
    for backend in list(_BACKENDS):
        if backend._lock.acquire(timeout=5):
            _LOCKED_FOR_FORK.append(backend)
            backend._close_connection()
    locked = [id(backend) for backend in _LOCKED_FOR_FORK]
    for conn in list(_CONNECTIONS):  # those of backends locked above, or of a backend that is gone
        owner = conn.owner()
        if owner is not None and id(owner) not in locked:
            continue  # its backend's lock is held elsewhere: the thread holding it may be using it
        try:
            conn.close()
        except Exception:
            pass


def _after_fork_in_parent() -> None:
    while _LOCKED_FOR_FORK:
        _LOCKED_FOR_FORK.pop()._lock.release()


def _after_fork_in_child() -> None:
    """Backstop for a connection that could not be closed before the fork (another thread held
    it): the child never uses it and never closes it (closing could delete the WAL, see above), so
    it is leaked on purpose."""
    _LOCKED_FOR_FORK.clear()
    for backend in list(_BACKENDS):
        if backend._conn is not None:
            import ctypes

            ctypes.pythonapi.Py_IncRef(ctypes.py_object(backend._conn))
            backend._conn, backend._run = None, _no_connection
        backend._lock = RLock()  # another thread may have held it at the fork


os.register_at_fork(before=_close_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


class SQLiteBackend(WriteOps, SchemaOps, LeaseOps, RefOps, LivenessOps, ChannelOps, RetentionOps):
    """Backend on one SQLite file. Safe for many processes and threads on one host."""

    name = "sqlite"

    def __init__(self, path: str, *, busy_deadline: float = 15.0) -> None:
        self.path = path
        self.busy_deadline = busy_deadline
        self._lock = RLock()
        self._conn: sqlite3.Connection | None = None
        # ``execute`` of one cursor of ``_conn``, kept for the statements whose result is read at
        # once (the transaction's BEGIN and COMMIT, the journal append, the lease steps): it spares
        # the cursor that ``Connection.execute`` makes per statement. Not for a result iterated
        # while other statements run: the next statement on it resets it.
        self._run: Callable[..., sqlite3.Cursor] = _no_connection
        self._pid = -1
        self.closes = 0
        self._maintenance_countdown = 1 << 62  # no retention step before the schema exists
        _BACKENDS.add(self)
        try:
            self._ensure_schema()
            self._start_maintenance_countdown()
        except BaseException:  # an interrupt too: nobody gets this backend to close it
            self.close()
            raise

    def __del__(self) -> None:
        # A backend dropped unclosed (one whose opening was interrupted as it returned, say)
        # would leave its connection open until the cycle collector frees it.
        try:
            self._close_connection()
        except Exception:
            pass  # at interpreter exit, or a connection failing to close: nothing to do better

    # -- connection and transactions --------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            try:
                conn = _Connection(self.path, owner=self, isolation_level=None, check_same_thread=False,
                                   timeout=0)
                conn.execute("PRAGMA busy_timeout=0")
                # A new database gets 2 KiB pages (an existing one keeps its own: the size is fixed
                # once the first table is made). Every page a transaction changes is written to the
                # WAL and checksummed whole, and a write changes 9 pages with a few hundred bytes
                # each: half the page is half that work, and these rows (leases, intents, versions,
                # journal entries) still fit a page several times over.
                conn.execute("PRAGMA page_size=2048")
                self._retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
                conn.execute("PRAGMA synchronous=NORMAL")
                self._conn, self._pid, self._run = conn, os.getpid(), conn.cursor().execute
            except BaseException:  # failed or interrupted (the connection found, if it was lost)
                self._close_connection()
                raise
        return self._conn

    def _statements(self, conn: sqlite3.Connection) -> Callable[..., sqlite3.Cursor]:
        """How to run a statement on ``conn`` whose result is read at once (see ``_run``)."""
        return self._run if conn is self._conn else conn.execute

    def _retry_busy(self, operation: Callable[..., T], *args: Any) -> T:
        """``operation(*args)``, retried while the database is busy, for up to ``busy_deadline``
        seconds from the first refusal; any other SQLite error becomes BackendUnavailable."""
        deadline = 0.0
        attempt = 0
        while True:
            try:
                return operation(*args)
            except sqlite3.DatabaseError as error:
                if not (isinstance(error, sqlite3.OperationalError) and _is_busy(error)):
                    raise database_error(self.path, self.name, error) from error
                if not attempt:
                    deadline = time.monotonic() + self.busy_deadline
                elif time.monotonic() > deadline:
                    log("backends.sqlite", WARNING, "SQLite database %s stayed busy for %.0fs", self.path,
                        self.busy_deadline)
                    raise BackendUnavailable(
                        f"SQLite database {self.path} stayed busy for {self.busy_deadline:.0f}s",
                        backend=self.name, detail=str(error), reason="busy", errno=None, path=self.path,
                    ) from error
            attempt += 1
            # Short jittered sleeps: fair between processes, unlike SQLite's busy handler.
            time.sleep(_jitter(min(0.002, 0.0002 * (1 + attempt // 8))))

    def transaction(self, work: Callable[[sqlite3.Connection], T | _Deferred], *, durable: bool = False) -> T:
        """Run ``work`` in one BEGIN IMMEDIATE transaction, retried while the database is busy.

        ``durable=True`` commits with synchronous=FULL (survives power loss). If ``work`` returns
        a ``_Deferred`` error, the transaction commits (keeping its journal entry) and the error is
        raised afterwards.
        """
        # A bounded retention step every so many transactions, before this one rather than after:
        # an interrupt during the step then comes before the caller's change, never after it.
        if self._maintenance_countdown > 1:  # ``maintenance_due`` when it has nothing to do, inline
            self._maintenance_countdown -= 1
        else:
            self.maintenance_due()
        result = self._retry_busy(self._attempt, work, durable)
        if result.__class__ is _Deferred:
            raise result.error  # type: ignore[union-attr]
        return result  # type: ignore[return-value]

    def _attempt(self, work: Callable[[sqlite3.Connection], T], durable: bool) -> T:
        """One try of ``transaction``. An interrupt (any BaseException) between two of its
        statements leaves the transaction committed or rolled back; one that lands inside the
        rollback itself leaves it open until the next use rolls it back (``in_transaction``).
        Never half applied."""
        with self._lock:
            conn = self._conn
            if conn is None or self._pid != getpid():
                conn = self._connection()
            if durable:
                conn.execute("PRAGMA synchronous=FULL")
            if conn.in_transaction:  # left open by an interruption (KeyboardInterrupt) mid-way
                conn.execute("ROLLBACK")
            try:
                try:
                    run = self._run
                    run("BEGIN IMMEDIATE")
                    result = work(conn)
                    run("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result
            finally:
                if durable:
                    conn.execute("PRAGMA synchronous=NORMAL")

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return self._retry_busy(self._read_once, work)

    def _read_once(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return work(self._connection())

    def close(self) -> None:
        """Close the connection (the next use opens a new one) and end the background renewal of
        leases taken before it (``closes``)."""
        with self._lock:
            self.closes += 1
            try:
                if self._conn is not None and self._pid == os.getpid():
                    self._chain_before_close()
            finally:
                self._close_connection()

    def _close_connection(self) -> None:
        """Close this process's connections of this backend: the one in use, and one whose
        opening failed or was interrupted before it was taken into use."""
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn, self._run = None, _no_connection
        pid = getpid()
        for conn in list(_CONNECTIONS):
            if conn.owner() is self and conn.pid == pid:
                try:
                    conn.close()  # closed already: nothing happens
                except sqlite3.ProgrammingError:
                    pass  # its opening never began (interrupted before the base __init__)

    def now(self) -> float:
        return time.time()

    # -- journal ----------------------------------------------------------------------------

    def _append(
        self, conn: sqlite3.Connection, kind: str, key: str | None, holder: str | None,
        data: dict[str, Any], ts: float | None = None,
    ) -> tuple[int, float, str, str]:
        """Append one entry inside the caller's transaction; returns (seq, ts, prev_hash, hash)."""
        return self._append_text(self._statements(conn), kind, key, holder, encode_data(data),
                                 self.now() if ts is None else ts)

    @staticmethod
    def _append_text(
        run: Callable[..., sqlite3.Cursor], kind: str, key: str | None, holder: str | None, data_text: str,
        ts: float,
    ) -> tuple[int, float, str, str]:
        """``_append`` given the data's text (what ``encode_data`` makes of it) and a statement
        runner of the transaction's connection (``_statements``)."""
        head = run(_JOURNAL_HEAD).fetchone()
        seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
        digest = chain_hash(prev, seq, ts, kind, key, holder, data_text)
        run(_JOURNAL_INSERT, (seq, ts, kind, key, holder, data_text, prev, digest))
        return seq, ts, prev, digest

    def journal_append(
        self, kind: str, key: str | None, holder: str | None, data: dict[str, Any]
    ) -> JournalRecord:
        seq, ts, prev, digest = self.transaction(lambda conn: self._append(conn, kind, key, holder, data))
        data_text = encode_data(data)
        return JournalRecord(seq, ts, kind, key, holder, json_text.loads(data_text), prev, digest, data_text)

    def journal_entries(
        self, key: str | None = None, after: int = 0, limit: int | None = None
    ) -> Iterator[JournalRecord]:
        """Read in pages of JOURNAL_PAGE entries, so a long journal is never held in memory at once.
        Raises JournalCorrupt for an entry whose data is not JSON."""
        sql = "SELECT seq, ts, kind, key, holder, data, prev_hash, hash FROM journal WHERE seq > ?"
        if key is not None:
            sql += " AND key = ?"
        sql += " ORDER BY seq LIMIT ?"
        remaining = limit
        while remaining is None or remaining > 0:
            page = JOURNAL_PAGE if remaining is None else min(JOURNAL_PAGE, remaining)
            params = (after, key, page) if key is not None else (after, page)
            rows = self.read(lambda conn: conn.execute(sql, params).fetchall())
            for seq, ts, kind, k, holder, data, prev, digest in rows:
                try:
                    parsed = json_text.loads(data)
                except (TypeError, ValueError) as error:
                    raise unreadable_entry(seq, f"its data is not JSON ({error})") from error
                yield JournalRecord(seq, ts, kind, k, holder, parsed, prev, digest, data)
            if len(rows) < page:
                return
            after, fetched = rows[-1][0], len(rows)
            del rows  # one page in memory at a time, not two while the next is fetched
            if remaining is not None:
                remaining -= fetched

    def journal_verify(self, on_entry: Callable[[int], None] | None = None, anchor: str | None = None) -> ChainWalk:
        """The one chain, streamed from its first kept entry (see ``journal.ChainWalk``)."""
        walk = ChainWalk(anchor)
        verify_entries(self.journal_entries(), on_entry, walk)
        return walk

    def journal_count(self, kind: str | None = None, key: str | None = None) -> int:
        """Entries (of ``kind``, about ``key``). Without either, from the bounds of the sequence,
        which has no gaps here (a gap is for ``verify`` to find), so no count scans the journal;
        the kinds in INDEXED_KINDS are counted from their index."""
        if kind is None and key is None:
            first, last = self.read(lambda conn: conn.execute(JOURNAL_BOUNDS).fetchone())
            return 0 if first is None else last - first + 1
        sql, params = "SELECT count(*) FROM journal WHERE 1=1", []
        if kind is not None:
            if key is not None:
                sql += " AND kind || '' = ?"  # prefer the key index
            else:
                sql += " AND kind = ?" + (f" AND {INDEXED_KINDS_SQL}" if kind in INDEXED_KINDS else "")
            params.append(kind)
        if key is not None:
            sql += " AND key = ?"
            params.append(key)
        return self.read(lambda conn: conn.execute(sql, params).fetchone()[0])

    def journal_tail(self, count: int) -> list[JournalRecord]:
        """The newest ``count`` entries, oldest first (by sequence number: compaction leaves the
        first entries missing, so a count is not a position)."""
        if count <= 0:
            return []
        start = self.read(lambda conn: conn.execute(
            "SELECT seq FROM journal ORDER BY seq DESC LIMIT 1 OFFSET ?", (count - 1,)).fetchone())
        if start is None:
            return list(self.journal_entries())
        return list(self.journal_entries(after=start[0] - 1))[-count:]

