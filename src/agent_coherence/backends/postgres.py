"""The distributed backend: one PostgreSQL schema shared by agents on any number of hosts.

Guarantees and how they are kept:

* **One clock.** Every expiry (leases, visibility timeouts, dedup, effects) is judged inside SQL by
  ``ac_now()``: the server's ``clock_timestamp()`` (plus a skew that is 0 outside tests), never a
  client's clock. ``now()`` returns the same server clock.
* **Durable commits.** Sessions run with ``synchronous_commit=on``: a lease, fence, intent,
  version, send or ack is acknowledged only after the server flushed it. Only a lease *release*
  and a *receive* commit without waiting for the flush (``SET LOCAL synchronous_commit=off``):
  losing one to a server crash delays the next holder until the lease expires (the fence still
  grows) or redelivers the message.
* **READ COMMITTED with guarded writes.** Every state change is an ``UPDATE ... WHERE`` on the
  condition it depends on (or a ``SELECT ... FOR UPDATE`` of the row first), one transaction per
  operation; sessions set ``lock_timeout``, ``statement_timeout`` and
  ``idle_in_transaction_session_timeout`` so a stalled client cannot hold rows (and turn off a
  server-wide ``transaction_timeout``, which would cut long reads short).
* **Outcomes are never guessed.** A transaction that fails before its COMMIT was sent did not
  happen and is retried. One whose COMMIT was sent but not answered (connection lost, server
  restarted) is *in doubt*: it is re-checked after reconnecting (by the journal row it wrote, or an
  operation's own check, e.g. the intent id), reported as done only if it was, retried if it was
  not, and raised as BackendUnavailable when it cannot be told. Transient failures are retried
  (tenacity, jittered backoff) up to ``retry_deadline`` seconds, then BackendUnavailable.
* **Schema creation** runs under a transaction-scoped advisory lock, so many clients may start at
  once; an older schema is migrated in the same transaction; a schema written by a newer release
  is refused.

The journal's chains are in ``postgres_journal.py``; leases and writes in ``postgres_writes.py``;
channels, their depth figures, liveness and retention in their own modules. psycopg is imported here, so this module is only
loaded when a ``postgresql://`` URL is opened.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import threading
import time
import weakref
from typing import Any, Callable, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from ..errors import BackendUnavailable
from ..logs import WARNING, log
from .postgres_channel_depth import DEPTH_MIGRATION, DEPTH_SCHEMA, ChannelDepthOps
from .postgres_channels import CHANNEL_CLOCK_SCHEMA, CHANNEL_SCHEMA, ChannelOps
from .postgres_journal import JOURNAL_MIGRATION, JOURNAL_SCHEMA, JournalOps
from .postgres_tx import JOURNAL_PARTITIONS, Tx
from .postgres_url import check_url, split_url, url_prepare_threshold
from .postgres_liveness import LIVENESS_SCHEMA, LivenessOps
from .postgres_refs import REFS_SCHEMA, RefOps
from .postgres_retention import RetentionOps
from .postgres_writes import WRITES_SCHEMA, Contended, WriteOps
from .sqlite_tx import Deferred

T = TypeVar("T")

SCHEMA_VERSION = 3
# Migrations from an earlier schema version: version -> statements that bring it to version + 1.
# 1 -> 2: refs and channel time; 2 -> 3: compaction (removed counts on the chain heads, the
# checkpoint index) and the channel counters.
MIGRATIONS: dict[int, str] = {1: REFS_SCHEMA + CHANNEL_CLOCK_SCHEMA, 2: JOURNAL_MIGRATION + DEPTH_MIGRATION}

BASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS @meta (name text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS @clock_skew (
    id int PRIMARY KEY DEFAULT 1 CHECK (id = 1), seconds double precision NOT NULL DEFAULT 0);
INSERT INTO @clock_skew(id, seconds) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE OR REPLACE FUNCTION @ac_now() RETURNS double precision LANGUAGE sql VOLATILE AS
$$ SELECT extract(epoch FROM clock_timestamp())::double precision
          + coalesce((SELECT seconds FROM @clock_skew WHERE id = 1), 0) $$;
"""


# The pool reports each failed reconnection as a warning. Without any logging configured, Python
# would print those on stderr, which is where the Claude Code hook writes its refusals; an
# application that configures logging still receives them (they propagate to its handlers).
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())

_SESSIONS: "weakref.WeakSet[psycopg.Connection[Any]]" = weakref.WeakSet()


def _detach_inherited_sessions() -> None:
    """In a forked child: point every inherited connection's socket at /dev/null. The child
    shares those sockets with its parent; if the child closed one (a pool or a connection being
    collected sends libpq's Terminate message), the parent's session would end under it."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for conn in list(_SESSIONS):
            try:
                os.dup2(devnull, conn.fileno())
            except (OSError, psycopg.Error):
                pass
    finally:
        os.close(devnull)
    _SESSIONS.clear()


os.register_at_fork(after_in_child=_detach_inherited_sessions)


class _Retry(Exception):
    """A transaction that certainly did not commit and may run again."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _roll_back(conn: psycopg.Connection) -> bool:
    """Roll back a transaction that was never committed; False when the connection is lost (the
    server has rolled the transaction back itself, and the pool discards a broken connection)."""
    if conn.closed or conn.broken:
        return False
    try:
        conn.rollback()
    except psycopg.Error:
        return False
    return True


def _connection_lost(error: BaseException, conn: psycopg.Connection[Any] | None) -> bool:
    """Whether the session is gone (server restart, network): judged by the connection, not by
    SQLSTATE, which is None for most of these."""
    if isinstance(error, (PoolTimeout, pg_errors.AdminShutdown, pg_errors.CrashShutdown,
                          pg_errors.CannotConnectNow, pg_errors.IdleInTransactionSessionTimeout)):
        return True
    return conn is not None and (conn.closed or conn.broken)


# libpq reports a refused login without a SQLSTATE; these words in its message mean the server
# itself turned the client away (password, role, database, pg_hba.conf), or the URL's sslmode asks
# for what this server cannot give (SSL from a server without it, a certificate it does not have),
# which no retry changes.
_LOGIN_REFUSED = ("authentication failed", "does not exist", "no pg_hba.conf entry", "permission denied",
                  "does not support SSL", "certificate verify failed")


# program_limit_exceeded: raised for an index entry larger than a btree page allows.
_VALUE_TOO_LARGE_TO_INDEX = "54000"

# Errors after which the same transaction may simply run again (nothing of it committed).
_TRANSIENT = (pg_errors.LockNotAvailable, pg_errors.QueryCanceled, pg_errors.DeadlockDetected,
              pg_errors.SerializationFailure, pg_errors.UniqueViolation)


class PostgresBackend(WriteOps, JournalOps, ChannelDepthOps, ChannelOps, LivenessOps, RefOps, RetentionOps):
    """Backend on one PostgreSQL schema. Safe for many processes and threads on many hosts.

    ``url``: a libpq URL; an extra ``schema=<name>`` parameter picks the schema (default
    ``agent_coherence``, created if missing). ``prepare_threshold=None`` (or the URL's
    ``prepare_threshold=none``, which wins) disables server-side prepared statements (needed
    behind PgBouncer in transaction mode). ``journal_chains``: how
    many journal chains a schema created by this client gets (1 makes the journal a single
    chain, which serialises every journaled commit: for comparison only). ``create=False``: a
    missing schema is not created (BackendUnavailable, ``reason="missing"``); an older one is
    still upgraded.
    """

    name = "postgresql"

    def __init__(
        self, url: str, *, pool_size: int = 4, retry_deadline: float = 30.0, connect_timeout: float = 5.0,
        lock_timeout: float = 10.0, statement_timeout: float = 30.0, idle_timeout: float = 30.0,
        prepare_threshold: int | None = 5, journal_chains: int = JOURNAL_PARTITIONS, create: bool = True,
    ) -> None:
        self.url = url
        self.conninfo, self.schema = split_url(url)
        self.prepare_threshold = url_prepare_threshold(url, prepare_threshold)
        self.retry_deadline = retry_deadline
        self.journal_chains = journal_chains  # for a schema created here; else the schema's own
        self._pool_size = pool_size
        # How long one attempt waits for a pooled connection before asking the server directly
        # why none came: a refused login is then reported at once, and the whole retry stays
        # near ``retry_deadline`` instead of one full deadline per attempt.
        self._connection_wait = min(retry_deadline, connect_timeout + 1.0)
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": False, "prepare_threshold": self.prepare_threshold,
            "connect_timeout": max(1, int(connect_timeout)),
        }
        self._session = (
            f"SET lock_timeout = '{int(lock_timeout * 1000)}ms'; "
            f"SET statement_timeout = '{int(statement_timeout * 1000)}ms'; "
            f"SET idle_in_transaction_session_timeout = '{int(idle_timeout * 1000)}ms'; "
            "SET synchronous_commit = on; SET TIME ZONE 'UTC'"
        )
        self._prefix = f'"{self.schema}".'
        self._sql_cache: dict[str, str] = {}
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._pool_pid = -1
        self.closes = 0
        self._pool_lock = threading.Lock()
        # This process's connections out of the pool, for as long as any code can reach them: one
        # an interrupt took from the code that would have returned it is dropped once unreachable.
        self._held: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self._maintenance_countdown = 1 << 62  # no retention step before the schema exists
        check_url(url)
        try:
            self._ensure_schema(create)
            self._start_maintenance_countdown()
        except BaseException:  # an interrupt too: nobody gets this backend to close its pool
            self.close()
            raise

    # -- SQL and connections ----------------------------------------------------------------

    def sql(self, text: str) -> str:
        """``text`` with ``@name`` made the schema-qualified ``"schema".name``."""
        cached = self._sql_cache.get(text)
        if cached is None:
            cached = self._sql_cache[text] = text.replace("@", self._prefix)
        return cached

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        _SESSIONS.add(conn)
        conn.execute(self._session)
        if conn.info.server_version >= 170000:
            # A server- or role-wide transaction_timeout would end the session in the middle of a
            # long read (a journal verify's snapshot); each statement is bounded by ours instead.
            conn.execute("SET transaction_timeout = 0")
        conn.commit()

    def pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        """This process's pool. A pool inherited over ``fork`` is abandoned, never closed: closing
        it would end the parent's sessions, whose sockets the child shares."""
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():
                if self._pool_pid != os.getpid():
                    self._held = weakref.WeakSet()  # the parent's, inherited over fork
                pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                    self.conninfo, min_size=1, max_size=self._pool_size, kwargs=self._connect_kwargs,
                    configure=self._configure, check=self._held.add, open=False, timeout=self._connection_wait,
                    reconnect_timeout=self.retry_deadline, name=f"agent-coherence-{os.getpid()}",
                )
                pool.open(wait=False)
                self._pool, self._pool_pid = pool, os.getpid()
            return self._pool

    def _lost_connections(self, pool: ConnectionPool[psycopg.Connection[Any]]) -> bool:
        """Whether ``pool`` has no connection left to give and some of those out of it are held
        by no code here (lost to interrupts): waiting for one to come back would be in vain."""
        stats = pool.get_stats()
        return (stats["pool_available"] == 0 and stats["pool_size"] >= stats["pool_max"]
                and len(self._held) < stats["pool_max"])

    def _replace_lost_pool(self, lost: ConnectionPool[psycopg.Connection[Any]]) -> ConnectionPool[psycopg.Connection[Any]]:
        """A new pool in place of ``lost``, whose connections are all out although code here holds
        fewer: interrupts (KeyboardInterrupt) landed between the pool handing one out and the code
        that gives it back. Without this, every transaction would wait ``retry_deadline`` for a
        connection, then fail. Connections still held return to the old pool, which closes them."""
        log("backends.postgres", WARNING, "connections of the pool were lost to interrupts: opening a new pool")
        with self._pool_lock:
            if self._pool is lost:
                self._pool = None
        lost.close()
        return self.pool()

    def _why_no_connection(self, timeout: PoolTimeout) -> BaseException:
        """Why the pool gave no connection, learnt from one direct connection attempt (the pool
        keeps its own failures to itself): the attempt's error when it may pass (server down or
        starting), ``timeout`` when the server accepts logins (the pool is busy). A login the
        server refuses raises BackendUnavailable at once."""
        try:
            psycopg.connect(self.conninfo, **self._connect_kwargs).close()
        except psycopg.OperationalError as error:
            if any(words in str(error) for words in _LOGIN_REFUSED):
                raise BackendUnavailable(
                    f"PostgreSQL refused the login for schema {self.schema!r}: {error}",
                    recover=("check the URL's user, password (or ~/.pgpass) and database, and the "
                             "server's pg_hba.conf; retrying will not help"),
                    backend=self.name, detail=str(error),
                ) from None
            return error
        return timeout

    def close(self) -> None:
        """Close the pool (the next use opens a new one) and end the background renewal of leases
        taken before it (``closes``)."""
        with self._pool_lock:
            self.closes += 1
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.close()
            self._pool = None

    # -- transactions -----------------------------------------------------------------------

    def transaction(
        self, work: Callable[[Tx], T | Deferred], *, idempotent: bool = False,
        check: Callable[[Tx], T | None] | None = None, durable: bool = True,
    ) -> T:
        """Run ``work`` in one READ COMMITTED transaction with its journal entries, then commit.

        A failure before COMMIT is retried (nothing happened). A COMMIT left unanswered is in
        doubt: the journal row this transaction wrote, else ``check`` (returns the result if the
        transaction committed, None if not), else — for ``idempotent`` work — running it again,
        decides; without any of these, BackendUnavailable says the outcome is unknown.
        ``durable=False`` commits without waiting for the flush. A ``Deferred`` returned by
        ``work`` is raised after the commit (its journal entry stays). Every so many transactions
        a bounded retention step runs first (``postgres_retention.py``).
        """
        self.maintenance_due()
        result = self._retrying(lambda wait: self._attempt(work, idempotent, check, durable, wait=wait))
        if isinstance(result, Deferred):
            raise result.error
        return result

    def read(self, work: Callable[[Tx], T]) -> T:
        """Run read-only ``work`` in autocommit (one snapshot per statement, no BEGIN or COMMIT
        round trips), retried on any transient failure."""
        result = self._retrying(lambda wait: self._attempt(work, True, None, True, read_only=True, wait=wait))
        assert not isinstance(result, Deferred)
        return result

    def snapshot(self, work: Callable[[Tx], T]) -> T:
        """Run read-only ``work`` in one transaction (``work`` may set its isolation level first:
        ``postgres_journal`` reads the whole journal in one REPEATABLE READ snapshot); retried on
        a transient failure, without a retention step."""
        result = self._retrying(lambda wait: self._attempt(work, True, None, True, wait=wait))
        assert not isinstance(result, Deferred)
        return result

    def _retrying(self, attempt: Callable[[float], T]) -> T:
        """Run ``attempt`` until it succeeds or ``retry_deadline`` has passed since the first try.
        Each try is given how long it may wait for a pooled connection, never past the deadline:
        the whole call takes the deadline plus at most one backoff and one try's own work."""
        started = time.monotonic()
        try:
            return attempt(self._connection_wait)  # the common case, without building a retry loop
        except _Retry:
            pass
        deadline = started + self.retry_deadline
        retrying = Retrying(
            retry=retry_if_exception_type(_Retry), stop=stop_after_delay(max(0.0, deadline - time.monotonic())),
            wait=wait_random_exponential(multiplier=0.02, max=1.0), reraise=True,
        )
        try:
            return retrying(lambda: attempt(min(self._connection_wait, max(0.01, deadline - time.monotonic()))))
        except _Retry as failed:
            raise BackendUnavailable(
                f"PostgreSQL ({self.schema}) stayed unavailable for {self.retry_deadline:g}s: {failed.cause}",
                backend=self.name, detail=str(failed.cause),
            ) from failed.cause

    def _attempt(
        self, work: Callable[[Tx], T | Deferred], idempotent: bool, check: Callable[[Tx], T | None] | None,
        durable: bool, read_only: bool = False, *, wait: float,
    ) -> T | Deferred:
        """One try of a transaction, waiting up to ``wait`` seconds for a pooled connection."""
        pool = self.pool()
        if self._lost_connections(pool):
            pool = self._replace_lost_pool(pool)
        try:
            conn = pool.getconn(timeout=wait)
        except PoolClosed as error:  # replaced (or closed) by another thread while this one waited
            raise _Retry(error) from error
        except PoolTimeout as error:
            gc.collect()  # a connection an interrupt lost may be held by a reference cycle only
            cause = self._why_no_connection(error)
            raise _Retry(cause) from cause
        try:  # the pool's check recorded ``conn`` as held inside getconn, so no interrupt can lose it
            tx = Tx(self, conn, flush=durable)
            commit_sent = False
            in_doubt: psycopg.Error | None = None
            try:
                if read_only:
                    conn.autocommit = True
                    try:
                        return work(tx)
                    finally:
                        if not conn.closed and not conn.broken:
                            conn.autocommit = False
                if conn.autocommit:
                    # Left on by a read whose reset an interrupt cut short (it can land just after
                    # the switch above, or in the finally before the switch back): this work
                    # needs a transaction, a snapshot's DECLARE CURSOR too.
                    conn.autocommit = False
                result = work(tx)
                tx.flush_journal()
                commit_sent = True
                conn.commit()
                return result
            except psycopg.Error as error:
                if isinstance(error, psycopg.DataError) and error.sqlstate is None:
                    # psycopg would not send an argument (a NUL in text): the caller's value is
                    # refused, as a bad argument is everywhere else; the server is not at fault.
                    _roll_back(conn)
                    raise ValueError(f"PostgreSQL cannot store a value given: {error}") from None
                if error.sqlstate == _VALUE_TOO_LARGE_TO_INDEX:
                    # A name (a key, a ref) past what a btree entry holds, about 2.7 kB after
                    # compression: the value is refused, and retrying cannot help.
                    _roll_back(conn)
                    raise ValueError(f"PostgreSQL cannot index a name this long (use a shorter key, "
                                     f"thread id or name): {error}") from None
                lost = _connection_lost(error, conn)
                if not lost:
                    lost = not _roll_back(conn)
                if not commit_sent or not lost:
                    if lost or isinstance(error, _TRANSIENT):
                        raise _Retry(error) from error
                    if isinstance(error, pg_errors.ReadOnlySqlTransaction):
                        raise BackendUnavailable(
                            f"PostgreSQL refuses writes to {self.schema}: the server or session is read-only",
                            recover="point the URL at the primary (this is a standby), or turn "
                                    "default_transaction_read_only off for this role and database",
                            backend=self.name, detail=f"{type(error).__name__}: {error}", reason="read_only",
                        ) from error
                    raise BackendUnavailable(
                        f"PostgreSQL error in {self.schema}: {error}", backend=self.name,
                        detail=f"{type(error).__name__}: {error}",
                    ) from error
                in_doubt = error
            except Contended as error:
                _roll_back(conn)
                raise _Retry(error) from error
            except BaseException:
                _roll_back(conn)  # the error raised in the work (a refusal, an interrupt) stays the error
                raise
        finally:
            # Discarded first: interrupted between the two, the connection counts as lost. The
            # put back in a finally of its own: an interrupt landing at the discard would
            # otherwise keep the connection out of the pool yet counted as held while anything
            # (the caller's kept exception) references it, and the next transactions would wait
            # the pool's timeout for it.
            try:
                self._held.discard(conn)
            finally:
                pool.putconn(conn)  # before any check: a pool of one needs it back
        assert in_doubt is not None  # every other path returned or raised above
        return self._settle_in_doubt(tx, result, in_doubt, idempotent, check)

    def _settle_in_doubt(
        self, lost_tx: Tx, result: T | Deferred, error: psycopg.Error, idempotent: bool,
        check: Callable[[Tx], T | None] | None,
    ) -> T | Deferred:
        """Decide a transaction whose COMMIT went unanswered, on a fresh connection."""
        if lost_tx.records:
            # By its hash as well as its seq: a crash can take back the sequence numbers of a
            # transaction whose commit was lost, and the server then hands the same seq to
            # another transaction, whose row would pass for this one's.
            first = lost_tx.records[0]
            found = self._retrying(lambda wait: self._attempt(
                lambda tx: tx.one("SELECT 1 FROM @journal WHERE seq = %s AND hash = %s", (first.seq, first.hash)),
                True, None, False, wait=wait))
            if found:
                return result
            raise _Retry(error)
        if check is not None:
            committed = self._retrying(lambda wait: self._attempt(check, True, None, False, wait=wait))
            if committed is not None:
                return committed
            raise _Retry(error)
        if idempotent:
            raise _Retry(error)
        raise BackendUnavailable(
            f"the server connection was lost while committing; the outcome is unknown: {error}",
            recover="re-read the state (lease, version, message) before acting on it",
            backend=self.name, detail="in doubt",
        )

    # -- schema -----------------------------------------------------------------------------

    def _ensure_schema(self, may_create: bool) -> None:
        statements = (BASE_SCHEMA + WRITES_SCHEMA + JOURNAL_SCHEMA + CHANNEL_SCHEMA + DEPTH_SCHEMA + LIVENESS_SCHEMA
                      + REFS_SCHEMA)

        def create(tx: Tx) -> None:
            # One creator at a time; the others wait here and then find everything in place.
            tx.run("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"agent-coherence:{self.schema}",))
            tx.run(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            if tx.one("SELECT to_regclass(%s)", (f'"{self.schema}".meta',))[0] is None:  # type: ignore[index]
                self._refuse_clashing_tables(tx, statements)
                tx.run(self.sql(statements))
                tx.run("INSERT INTO @journal_heads(part, pseq, hash) SELECT p, 0, %s "
                       "FROM generate_series(0, %s) AS p ON CONFLICT (part) DO NOTHING",
                       (tx.genesis, self.journal_chains - 1))
                tx.run("INSERT INTO @meta(name, value) VALUES ('schema_version', %s)", (str(SCHEMA_VERSION),))
                return
            version = self._stored_version(tx)
            while version in MIGRATIONS:
                tx.run(self.sql(MIGRATIONS[version]))
                version += 1
                tx.run("UPDATE @meta SET value = %s WHERE name = 'schema_version'", (str(version),))
            self._refuse_newer(version)

        def probe(tx: Tx) -> int | None:
            if tx.one("SELECT to_regclass(%s)", (f'"{self.schema}".meta',))[0] is None:  # type: ignore[index]
                return None
            return self._stored_version(tx)

        current = self.read(probe)
        if current is None and not may_create:
            raise BackendUnavailable(
                f"no agent-coherence schema {self.schema!r} on the server yet (nothing has been coordinated there)",
                recover="check the URL's schema= parameter; a coordinator opened with create=True (the default) makes it",
                backend=self.name, detail="no schema", errno=None, reason="missing",
            )
        if current is not None:
            self._refuse_newer(current)
        if current != SCHEMA_VERSION:
            self.transaction(create, idempotent=True)
        # The chain count is fixed when the schema is created: every client uses the schema's.
        self.journal_chains = int(self.read(lambda tx: tx.one("SELECT count(*) FROM @journal_heads"))[0])  # type: ignore[index]

    def _stored_version(self, tx: Tx) -> int:
        """The schema's version; a ``meta`` table agent-coherence did not write (other columns, no
        version or not a number) is refused: migrating or using it would fail at some later
        statement with an error that names neither the schema nor the cause."""
        try:
            row = tx.one("SELECT value FROM @meta WHERE name = 'schema_version'")
        except pg_errors.UndefinedColumn:
            row = None
        version = row[0] if row else ""
        if not version.isdigit() or int(version) < 1:
            raise self._foreign("its meta table holds no agent-coherence schema version",
                                f"schema_version {version!r}" if row else "no schema_version")
        return int(version)

    def _refuse_clashing_tables(self, tx: Tx, statements: str) -> None:
        """Before creating the tables in a schema without ``meta``: refuse it if it already holds
        a table of one of their names, which ``CREATE TABLE IF NOT EXISTS`` would take as ours."""
        names = re.findall(r"CREATE TABLE IF NOT EXISTS @(\w+)", statements)
        found = tx.all("SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace AND relname = ANY(%s) "
                       "ORDER BY relname", (f'"{self.schema}"', names))
        if found:
            tables = ", ".join(row[0] for row in found)
            raise self._foreign(f"it already holds tables agent-coherence did not create ({tables})",
                                f"tables {tables}")

    def _foreign(self, why: str, detail: str) -> BackendUnavailable:
        return BackendUnavailable(
            f"schema {self.schema!r} is not an agent-coherence schema: {why}",
            recover="pick another schema with the URL's schema= parameter, or drop this one if nothing else uses it",
            backend=self.name, detail=detail,
        )

    def _refuse_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise BackendUnavailable(
                f"schema {self.schema!r} was written by a newer release of agent-coherence "
                f"(schema version {version}; this release knows up to {SCHEMA_VERSION})",
                recover="upgrade agent-coherence on this host to the release the other hosts run",
                backend=self.name, detail=f"schema version {version}",
            )

    # -- clock ------------------------------------------------------------------------------

    def now(self) -> float:
        """The server's clock (epoch seconds): the one every expiry is judged by."""
        row = self.read(lambda tx: tx.one("SELECT @ac_now()"))
        return float(row[0])  # type: ignore[index]

    def skew_clock(self, seconds: float) -> float:
        """Move the schema's clock by ``seconds`` for every client of it (tests only: expiry
        can then be tested without waiting). Returns the total skew."""
        row = self.transaction(lambda tx: tx.one(
            "UPDATE @clock_skew SET seconds = seconds + %s WHERE id = 1 RETURNING seconds", (seconds,)),
            idempotent=False, check=None)
        return float(row[0])  # type: ignore[index]
