"""The SQLite backend's schema: creating it, upgrading an older one in place, refusing a newer
one, and the state directory it lives in (with its own ``.gitignore``).

A mixin of SQLiteBackend: it relies on ``path``, ``name``, ``transaction``, ``read`` and
``_append``.
"""

from __future__ import annotations

import os

from ..errors import BackendUnavailable
from ..journal import FORMAT, FORMAT_ENTRY
from ..logs import INFO, WARNING, log
from ..paths import STATE_DIR
from .sqlite_channel_fast import SEND_SCHEMA
from .sqlite_channel_depth import (
    COUNT_TRIGGERS, DEPTH_SCHEMA, SETTLED_ACK_TRIGGERS, migrate_last_ids, migrate_to_counts)
from .sqlite_channel_record import migrate_to_unchained
from .sqlite_channels import ACKED_INDEX, CHANNEL_SCHEMA
from .sqlite_liveness import LIVENESS_SCHEMA
from .sqlite_retention import JOURNAL_BY_KIND, RETENTION_SCHEMA
from .sqlite_tx import is_busy

try:
    import _sqlite3 as sqlite3  # see sqlite.py: the C module, without the package's imports
except ImportError:
    import sqlite3  # type: ignore[no-redef]

# 1: the first release. 2: intents.synced. 3: the journal's unambiguous encoding, and the
# channel clock. 4: channel counts (liveness reads them instead of the messages). 5: the index of
# notable journal kinds (retention's checkpoints, status's counts; made by the CREATE statements
# that every upgrade runs). 6: that index made again with its condition spelled with OR (cheaper at
# every append; see sqlite_retention). 7: triggers that count acks and the consumers' work, and a
# view whose trigger sends one message, so a fast channel's common operations are single statements
# (made by the CREATE statements that every upgrade runs; the counts are exact already). 8: the
# artifacts and intents tables WITHOUT ROWID, and leases.own_write, whose rows the holder index
# leaves out (a write appends four WAL pages fewer). 9: a fast ack awaiting its batch writes only
# its row: it stays counted and its work is credited when the batch is chained, it waits at
# UNCHAINED in messages_queue (which replaced messages_ready and messages_inflight), and
# messages_acked holds settled rows only (sqlite_channel_record.migrate_to_unchained); a channel's
# id counter is in its counts row (sqlite_channel_depth.migrate_last_ids). 10: no trigger on the
# update of an ack (a retained ack's transaction counts and credits it: COUNT_TRIGGERS), and the
# send view's trigger updates the counts row, which the single-statement send requires. 11: the
# send view's trigger checks the send's conditions itself (the view has the columns it needs), so
# the single-statement send inserts VALUES. A database of a later version is refused, never used
# (see _check_version).
SCHEMA_VERSION = 11
GITIGNORE = "# Made by agent-coherence: coordination state of this machine, never committed.\n*\n"

# Tables keyed by the key alone, stored in their primary-key b-tree (WITHOUT ROWID): a rowid table
# with a TEXT primary key is two b-trees, both rewritten by an insert or delete (an intent's, twice
# per write) and both descended by a look-up. ``{name}`` is filled in (the upgrade builds a copy).
_ARTIFACTS = """CREATE TABLE IF NOT EXISTS {name} (
    key TEXT PRIMARY KEY, version INTEGER NOT NULL, sha256 TEXT, size INTEGER NOT NULL,
    writer TEXT NOT NULL, fence INTEGER NOT NULL, updated_at REAL NOT NULL) WITHOUT ROWID"""
_INTENTS = """CREATE TABLE IF NOT EXISTS {name} (
    key TEXT PRIMARY KEY, intent_id TEXT NOT NULL, holder TEXT NOT NULL, fence INTEGER NOT NULL,
    base_version INTEGER NOT NULL, base_sha256 TEXT, new_version INTEGER NOT NULL, new_sha256 TEXT,
    size INTEGER NOT NULL, temp_path TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    pid_start TEXT NOT NULL, created_at REAL NOT NULL, auto_lease INTEGER NOT NULL,
    synced INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID"""
_KEYED_TABLES = (("artifacts", _ARTIFACTS), ("intents", _INTENTS))
# Without the rows of a write's own lease, which come and go with every write (see sqlite_leases).
_LEASES_BY_HOLDER = (
    "CREATE INDEX IF NOT EXISTS leases_by_holder ON leases(holder) WHERE holder IS NOT NULL AND own_write = 0")

_SCHEMA = _ARTIFACTS.format(name="artifacts") + ";\n" + _INTENTS.format(name="intents") + """;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY, holder TEXT, fence INTEGER NOT NULL,
    acquired_at REAL NOT NULL, expires_at REAL NOT NULL, own_write INTEGER NOT NULL DEFAULT 0);
""" + _LEASES_BY_HOLDER + """;
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, key TEXT, holder TEXT,
    data TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS journal_by_key ON journal(key, seq) WHERE key IS NOT NULL;
"""


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def _rebuild(conn: sqlite3.Connection, table: str, definition: str) -> None:
    """Rebuild ``table`` as ``definition`` makes it, rows and all, inside the open transaction
    (the same columns in the same order; no trigger, view or index refers to it)."""
    columns = ", ".join(_columns(conn, table))
    conn.execute(f"DROP TABLE IF EXISTS {table}_rebuilt")
    conn.execute(definition.format(name=f"{table}_rebuilt"))
    conn.execute(f"INSERT INTO {table}_rebuilt({columns}) SELECT {columns} FROM {table}")
    conn.execute(f"DROP TABLE {table}")
    conn.execute(f"ALTER TABLE {table}_rebuilt RENAME TO {table}")


class SchemaOps:
    """Schema creation and migration (see the module docstring)."""

    path: str  # of the database file (set by SQLiteBackend)
    name: str

    def _ensure_schema(self) -> None:
        """Create the schema, or bring an older one up to date, in one immediate transaction (so
        processes opening a fresh root at once do not race). A database made by a newer release
        is refused before anything in it is touched."""
        directory = os.path.dirname(self.path)
        created = bool(directory) and self._ensure_directory(directory)
        stored = self._schema_version()
        if stored == SCHEMA_VERSION:
            if created:
                self._ensure_gitignore(directory)
            return
        self._check_version(stored)

        def create(conn: sqlite3.Connection) -> int | None:
            version = self._stored_version(conn)
            self._check_version(version)
            schema = _SCHEMA + LIVENESS_SCHEMA + CHANNEL_SCHEMA + DEPTH_SCHEMA + RETENTION_SCHEMA
            for statement in filter(str.strip, schema.split(";")):
                conn.execute(statement)
            for statement in COUNT_TRIGGERS + SEND_SCHEMA:  # each one: ';' inside
                conn.execute(statement)
            if version is None:
                conn.execute("INSERT INTO meta(name, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                return None
            for older in range(version, SCHEMA_VERSION):
                self._migrate(conn, older)
            conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),))
            return version

        migrated_from = self.transaction(create)  # type: ignore[attr-defined]
        if migrated_from is None:
            log("backends.sqlite", INFO, "created the state database %s (schema %d)", self.path, SCHEMA_VERSION)
        elif migrated_from != SCHEMA_VERSION:
            log("backends.sqlite", INFO, "migrated the state database %s from schema %d to %d", self.path,
                migrated_from, SCHEMA_VERSION)
        if directory:
            self._ensure_gitignore(directory)

    def _migrate(self, conn: sqlite3.Connection, version: int) -> None:
        """Bring a database of schema ``version`` to ``version + 1`` (inside the open transaction)."""
        if version == 1:
            conn.execute("ALTER TABLE intents ADD COLUMN synced INTEGER NOT NULL DEFAULT 0")
        elif version == 2:
            # The journal's entries so far keep the old encoding; this entry, hashed in the new one,
            # records where they end, and every entry after it uses the new one.
            head = conn.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
            if head is not None:
                self._append(conn, FORMAT_ENTRY, None, None,  # type: ignore[attr-defined]
                             {"format": FORMAT, "previous_entries": head[0], "previous_head": head[1]})
        elif version == 3:
            migrate_to_counts(conn)
        elif version == 5:
            conn.execute("DROP INDEX IF EXISTS journal_by_kind")
            conn.execute(JOURNAL_BY_KIND)
        elif version == 7:
            for table, definition in _KEYED_TABLES:
                _rebuild(conn, table, definition)
            if "own_write" not in _columns(conn, "leases"):  # made by this schema, then marked older
                conn.execute("ALTER TABLE leases ADD COLUMN own_write INTEGER NOT NULL DEFAULT 0")
            conn.execute("DROP INDEX IF EXISTS leases_by_holder")
            conn.execute(_LEASES_BY_HOLDER)
        elif version == 8:
            migrate_to_unchained(conn)
            for index in ("messages_ready", "messages_inflight"):  # messages_queue holds both
                conn.execute(f"DROP INDEX IF EXISTS {index}")
            conn.execute("DROP TRIGGER IF EXISTS message_sends_insert")
            migrate_last_ids(conn)
            for statement in (ACKED_INDEX, *SEND_SCHEMA):  # for the ones dropped
                conn.execute(statement)
        elif version == 9:
            for trigger in (*SETTLED_ACK_TRIGGERS, "message_sends_insert"):
                conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
            conn.execute(SEND_SCHEMA[1])  # its counts row updated, not upserted
        elif version == 10:
            # The view gains the trigger's columns: both made again (the CREATE statements above
            # kept the old ones, which exist).
            conn.execute("DROP TRIGGER IF EXISTS message_sends_insert")
            conn.execute("DROP VIEW IF EXISTS message_sends")
            for statement in SEND_SCHEMA:
                conn.execute(statement)

    def _check_version(self, version: int | None) -> None:
        if version is not None and version > SCHEMA_VERSION:
            from .. import __version__

            raise BackendUnavailable(
                f"the state database {self.path} was created by a newer agent-coherence (schema "
                f"{version}; this release, {__version__}, reads schema {SCHEMA_VERSION} and older)",
                recover="upgrade agent-coherence in this environment (every process on the root must run the "
                        "same release); the database was not changed",
                backend=self.name, detail=f"schema {version}", reason="newer", path=self.path)

    @staticmethod
    def _stored_version(conn: sqlite3.Connection) -> int | None:
        """The schema version stored in the database (None: no schema yet)."""
        try:
            row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        except sqlite3.OperationalError as error:
            if is_busy(error) or "no such table" not in str(error):
                raise
            return None  # no meta table yet: a fresh database
        if row is None:
            return None
        try:
            return int(row[0])
        except (TypeError, ValueError):
            raise sqlite3.DatabaseError(f"schema_version is {row[0]!r}, not a number") from None

    def _schema_version(self) -> int | None:
        """The stored schema version, read without taking the write lock."""
        return self.read(self._stored_version)  # type: ignore[attr-defined]

    def _ensure_directory(self, directory: str) -> bool:
        """Create the database's directory if missing; True if it was created here."""
        if os.path.isdir(directory):
            return False
        try:
            os.makedirs(directory)
        except FileExistsError:
            if os.path.isdir(directory):
                return False  # another process made it first
            raise self._directory_error(directory, "it exists and is not a directory") from None
        except OSError as error:
            raise self._directory_error(directory, error.strerror or str(error)) from error
        return True

    def _directory_error(self, directory: str, why: str) -> BackendUnavailable:
        return BackendUnavailable(
            f"cannot create the state directory {directory}: {why}",
            recover=(f"move whatever is at {directory} (or a parent of it that is a file) out of the way, "
                     "or check the permissions; or open with url='sqlite:///<another file>'"),
            backend=self.name, detail=why, reason="state directory", path=directory)

    @staticmethod
    def _ensure_gitignore(directory: str) -> None:
        """Keep the state directory out of git: its own ``.gitignore`` that ignores everything in it
        (itself included). Only in a directory named like the default state directory."""
        if os.path.basename(directory) != STATE_DIR:
            return
        try:
            fd = os.open(os.path.join(directory, ".gitignore"),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            return
        except OSError as error:
            log("backends.sqlite", WARNING, "cannot write %s/.gitignore: %s", directory, error)
            return
        try:
            os.write(fd, GITIGNORE.encode("ascii"))
        finally:
            os.close(fd)
