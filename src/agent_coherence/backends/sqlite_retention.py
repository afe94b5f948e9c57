"""Retention on SQLite: the stored policy, bounded compaction steps, the fence floor.

A mixin of SQLiteBackend: it relies on ``transaction``, ``read``, ``now``, ``_append`` and
``_channel_time``. What is kept and why is in ``retention.py``; how it is done here:

* each step runs in one transaction and examines at most ``batch`` rows per table: the journal
  from its oldest entry; every other table through a rowid cursor kept in ``meta`` that wraps
  around, so no step scans a whole table and no index is added to a hot path for it; acknowledged
  messages kept for their channel's ``retention`` through the ``messages_acked`` index the
  channels already keep, by a channel-name cursor (``_sweep_acked``);
* the journal keeps ``cap`` entries besides its newest checkpoint, and a step that would remove
  no more entries than the one checkpoint it appends does nothing, so reruns settle;
* the journal entries a step removes are verified first (from the newest checkpoint's anchor), so
  compaction never launders an edited entry into a checkpoint: a damaged start stops it;
* a removed lease row's fence raises ``meta.fence_floor``, and a lease row made afresh starts
  above the floor (``fence_floor``), so a fence is never handed out twice for a key.

A dry run (``compact(dry_run=True)``) counts what a full pass would remove, read-only (it scans,
but takes no lock that writers wait for).
"""

from __future__ import annotations

from .. import json_text  # json.loads/dumps without importing the json package (hook start-up)
from ..journal import CHECKPOINT_ENTRY, GENESIS, ChainWalk, stored_checkpoint, unreadable_entry
from ..retention import CompactionReport, Retention, StepSchedule, check_compact_limits, stored_policy
from .records import JournalRecord

try:
    import _sqlite3 as sqlite3  # see sqlite.py: the C module, without the package's imports
except ImportError:
    import sqlite3  # type: ignore[no-redef]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Journal kinds with an index (a partial one: ordinary writes and leases are not in it). A count
# or lookup of one of them must repeat the index's condition for SQLite to use it. The condition
# is spelled with OR, not as ``kind IN (...)``: SQLite evaluates it at every journal append, and
# an IN list of constants makes it build a temporary b-tree each time (about 3.5 µs per append,
# measured; the OR form costs nothing measurable).
INDEXED_KINDS = ("conflict.lease", "conflict.version", "write.failed", CHECKPOINT_ENTRY)
INDEXED_KINDS_SQL = "(" + " OR ".join(f"kind = '{kind}'" for kind in INDEXED_KINDS) + ")"
JOURNAL_BY_KIND = f"CREATE INDEX IF NOT EXISTS journal_by_kind ON journal(kind, seq) WHERE {INDEXED_KINDS_SQL}"
RETENTION_SCHEMA = f"""
{JOURNAL_BY_KIND};
"""
# Channels whose kept acknowledged messages one step looks at (each one index descent and range).
ACKED_CHANNELS_PER_STEP = 32
# Two subqueries: each is one b-tree descent; ``SELECT min(seq), max(seq)`` would scan the table.
JOURNAL_BOUNDS = "SELECT (SELECT min(seq) FROM journal), (SELECT max(seq) FROM journal)"

# (table, the condition under which a row goes, its parameters' names): see _sweep.
_SWEEPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("leases", "expires_at < :lease_cutoff AND NOT EXISTS (SELECT 1 FROM intents WHERE intents.key = leases.key)",
     ("lease_cutoff",)),
    ("dedup", "expires_at <= :channel_now", ("channel_now",)),
    ("effects", "expires_at <= :channel_now", ("channel_now",)),
    ("assignments", "completed_at IS NOT NULL AND completed_at < :assignment_cutoff", ("assignment_cutoff",)),
    ("workers", "ended_at IS NOT NULL AND ended_at < :worker_cutoff AND NOT EXISTS (SELECT 1 FROM assignments "
                "WHERE assignments.worker = workers.worker AND completed_at IS NULL)", ("worker_cutoff",)),
)


def _meta(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else row[0]


def _set_meta(conn: sqlite3.Connection, name: str, value: str) -> None:
    conn.execute("INSERT INTO meta(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                 (name, value))


class RetentionOps(StepSchedule):
    """The retention policy and its steps (see the module docstring and ``retention.py``)."""

    path: str

    # -- the policy -------------------------------------------------------------------------

    def retention(self, update: Retention | None = None) -> Retention:
        """The stored policy (the default if none was stored); ``update`` stores a new one."""
        if update is not None:
            text = json_text.dumps(update.as_dict(), sort_keys=True)
            self.transaction(lambda conn: _set_meta(conn, "retention", text))  # type: ignore[attr-defined]
            return update
        text = self.read(lambda conn: _meta(conn, "retention"))  # type: ignore[attr-defined]
        return Retention() if text is None else stored_policy(text, self.name, self.path)  # type: ignore[attr-defined]

    @staticmethod
    def fence_floor(conn: sqlite3.Connection) -> int:
        """The highest fence of a removed lease row: a new lease row starts above it."""
        value = _meta(conn, "fence_floor")
        if value is None:
            return 0
        try:
            return int(value)
        except (TypeError, ValueError):
            # Not reset to 0: that could hand out a fence again. A damaged database, reported so.
            raise sqlite3.DatabaseError(f"fence_floor is {value!r}, not a number") from None

    # -- steps ------------------------------------------------------------------------------

    database_errors = (sqlite3.Error,)

    def scheduled_step(self, policy: Retention) -> None:
        self.compact(policy)

    def compact(
        self, policy: Retention | None = None, *, before: float | None = None, keep: int | None = None,
        dry_run: bool = False,
    ) -> CompactionReport:
        """One bounded retention step in one transaction (``dry_run``: count what a full pass
        would remove instead, changing nothing). ``before`` (a timestamp) and ``keep`` (a number
        of entries) replace the policy's journal limits. Raises JournalCorrupt, removing nothing,
        when the entries it would remove do not verify."""
        policy = self.retention() if policy is None else policy
        check_compact_limits(before, keep)
        if dry_run:
            return self.read(lambda conn: self._estimate(conn, policy, before, keep))  # type: ignore[attr-defined]
        return self.transaction(lambda conn: self._step(conn, policy, before, keep))  # type: ignore[attr-defined]

    def _cutoffs(self, conn: sqlite3.Connection, policy: Retention) -> dict[str, float]:
        now: float = self.now()  # type: ignore[attr-defined]
        never = float("-inf")  # a cutoff nothing is older than
        ages = {"lease_cutoff": "lease_days", "assignment_cutoff": "assignment_days", "worker_cutoff": "worker_days"}
        values: dict[str, float] = {}
        for name, field in ages.items():
            seconds = policy.seconds(field)
            values[name] = never if seconds is None else now - seconds
        values["channel_now"] = self._channel_time(conn)  # type: ignore[attr-defined]
        return values

    def _journal_limits(self, policy: Retention, before: float | None, keep: int | None) -> tuple[float | None, int | None]:
        if before is None and keep is None:
            seconds = policy.seconds("journal_days")
            return (None if seconds is None else self.now() - seconds), policy.journal_entries  # type: ignore[attr-defined]
        return before, keep

    def _step(self, conn: sqlite3.Connection, policy: Retention, before: float | None,
              keep: int | None) -> CompactionReport:
        report = CompactionReport()
        older_than, cap = self._journal_limits(policy, before, keep)
        self._compact_journal(conn, policy.batch, older_than, cap, report)
        values = self._cutoffs(conn, policy)
        for table, condition, names in _SWEEPS:
            removed, more = self._sweep(conn, table, condition, {n: values[n] for n in names}, policy.batch)
            setattr(report, table, removed)
            report.more = report.more or more
        report.messages, more = self._sweep_acked(conn, values["channel_now"], policy.batch)
        report.more = report.more or more
        return report

    def _sweep(self, conn: sqlite3.Connection, table: str, condition: str, params: dict[str, float],
               batch: int) -> tuple[int, bool]:
        """Examine the next ``batch`` rows of ``table`` after the stored cursor; remove those
        meeting ``condition``. Returns (removed, whether rows remain after these)."""
        cursor_name = f"retention.cursor.{table}"
        stored = _meta(conn, cursor_name) or "0"
        # Only where the last step stopped: one that is not a rowid (an edited row) starts over.
        cursor = int(stored) if stored.isdecimal() else 0
        fence = ", fence" if table == "leases" else ""
        rows = conn.execute(
            f"SELECT rowid, ({condition}){fence} FROM {table} WHERE rowid > :cursor ORDER BY rowid LIMIT :batch",
            dict(params, cursor=cursor, batch=batch)).fetchall()
        doomed = [row for row in rows if row[1]]
        if doomed:
            if table == "leases":
                floor = max(self.fence_floor(conn), max(row[2] for row in doomed))
                _set_meta(conn, "fence_floor", str(floor))
            conn.executemany(f"DELETE FROM {table} WHERE rowid = ?", [(row[0],) for row in doomed])
        more = len(rows) == batch
        _set_meta(conn, cursor_name, str(rows[-1][0] if more else 0))
        return len(doomed), more

    def _compact_journal(self, conn: sqlite3.Connection, batch: int, older_than: float | None,
                         cap: int | None, report: CompactionReport) -> None:
        first, last = conn.execute(JOURNAL_BOUNDS).fetchone()
        if first is None:
            return
        anchor = self._newest_checkpoint(conn)
        anchored = int(anchor is not None)
        # The newest entry always stays: the checkpoint links to it (and takes the next seq). Behind
        # a checkpoint a step takes at least 2 entries, even at batch=1: one alone gains nothing.
        limit = min(first - 1 + max(batch, 1 + anchored), last - 1)
        cut = first - 1
        if cap is not None and last - first + 1 - anchored > cap:
            # ``cap`` entries are kept besides the newest checkpoint (an older one among them counts
            # as one of them): removing up to ``last - cap`` and appending a checkpoint leaves that.
            cut = max(cut, last - cap)
        if older_than is not None:
            young = conn.execute("SELECT min(seq) FROM journal WHERE seq BETWEEN ? AND ? AND ts >= ?",
                                 (first, limit, older_than)).fetchone()[0]
            cut = max(cut, limit if young is None else young - 1)
        cut = min(cut, limit)
        if cut - first + 1 <= anchored:
            # Removing one entry behind a new checkpoint, when a checkpoint is already there, leaves
            # as many entries as before: a rerun would churn forever instead of settling.
            return
        report.more = cut == limit < last - 1  # the batch ended the step, not the policy
        removed_before = self._verify_removed(conn, first, cut, anchor)
        through_hash = conn.execute("SELECT hash FROM journal WHERE seq = ?", (cut,)).fetchone()[0]
        deleted = conn.execute("DELETE FROM journal WHERE seq <= ?", (cut,)).rowcount
        seq = self._append(conn, CHECKPOINT_ENTRY, None, None,  # type: ignore[attr-defined]
                           {"through": cut, "through_hash": through_hash, "removed": removed_before + deleted})[0]
        report.journal, report.journal_through, report.checkpoint_seq = deleted, cut, seq

    @staticmethod
    def _newest_checkpoint(conn: sqlite3.Connection) -> tuple[int, str, int] | None:
        """(through, through_hash, removed) of the newest checkpoint entry (through journal_by_kind),
        None when there is none. Raises JournalCorrupt when its data is not a checkpoint's."""
        row = conn.execute(
            f"SELECT seq, data FROM journal WHERE kind = ? AND {INDEXED_KINDS_SQL} ORDER BY seq DESC LIMIT 1",
            (CHECKPOINT_ENTRY,)).fetchone()
        return None if row is None else stored_checkpoint(row[0], row[1], row[0])

    @staticmethod
    def _verify_removed(conn: sqlite3.Connection, first: int, cut: int, checkpoint: tuple[int, str, int] | None) -> int:
        """Verify entries ``first``..``cut`` from the newest checkpoint's anchor (GENESIS when
        there is none); return how many entries earlier compactions removed. Raises JournalCorrupt."""
        walk = ChainWalk()
        removed = 0
        if checkpoint is not None:
            through, through_hash, removed = checkpoint
            walk.start_at(through + 1, through_hash)
        else:
            walk.start_at(1, GENESIS)
        for seq, ts, kind, key, holder, data, prev, digest in conn.execute(
                "SELECT seq, ts, kind, key, holder, data, prev_hash, hash FROM journal "
                "WHERE seq BETWEEN ? AND ? ORDER BY seq", (first, cut)):
            try:
                parsed = json_text.loads(data)
            except (TypeError, ValueError) as error:  # refused as verify refuses it, not a traceback
                raise unreadable_entry(seq, f"its data is not JSON ({error})") from error
            walk.check(JournalRecord(seq, ts, kind, key, holder, parsed, prev, digest, data))
        return removed

    def _sweep_acked(self, conn: sqlite3.Connection, channel_now: float, batch: int) -> tuple[int, bool]:
        """Remove acknowledged messages kept longer than their channel's ``retention`` (0 when the
        channel has no configuration row): at most ``batch`` rows and ACKED_CHANNELS_PER_STEP
        channels, from a channel-name cursor in ``meta`` that wraps around. Only messages_acked
        is read, so channels without kept rows cost nothing, and a message not acknowledged or
        one awaiting its batch (it still has a receipt) is never touched. Returns (removed, more)."""
        cursor_name = "retention.cursor.messages"
        after = _meta(conn, cursor_name) or ""  # channel names are never empty: '' is before all
        budget, removed = batch, 0
        for _ in range(min(batch, ACKED_CHANNELS_PER_STEP)):
            row = conn.execute(
                "SELECT channel FROM messages INDEXED BY messages_acked WHERE channel > ? AND acked_at IS NOT NULL "
                "AND receipt IS NULL ORDER BY channel LIMIT 1", (after,)).fetchone()
            if row is None:
                _set_meta(conn, cursor_name, "")
                return removed, False
            channel = row[0]
            config = conn.execute("SELECT retention FROM channels WHERE name = ?", (channel,)).fetchone()
            keep_for = 0.0 if config is None else float(config[0])
            gone = conn.execute(
                "DELETE FROM messages WHERE rowid IN (SELECT rowid FROM messages INDEXED BY messages_acked "
                "WHERE channel = ? AND acked_at IS NOT NULL AND receipt IS NULL AND acked_at < ? "
                "ORDER BY acked_at LIMIT ?)", (channel, channel_now - keep_for, budget)).rowcount
            removed, budget = removed + gone, budget - gone
            if budget == 0:  # this channel may hold more: the next step starts at it again
                break
            after = channel
        _set_meta(conn, cursor_name, after)
        return removed, True

    def _estimate(self, conn: sqlite3.Connection, policy: Retention, before: float | None,
                  keep: int | None) -> CompactionReport:
        report = CompactionReport(dry_run=True)
        older_than, cap = self._journal_limits(policy, before, keep)
        first, last = conn.execute(JOURNAL_BOUNDS).fetchone()
        if first is not None:
            anchor = self._newest_checkpoint(conn)
            anchored = int(anchor is not None)
            cut = first - 1
            if cap is not None and last - first + 1 - anchored > cap:
                cut = max(cut, last - cap)
            if older_than is not None:
                young = conn.execute("SELECT min(seq) FROM journal WHERE ts >= ?", (older_than,)).fetchone()[0]
                cut = max(cut, last if young is None else young - 1)
            cut = min(cut, last - 1)
            if cut - first + 1 > anchored:
                # A real pass verifies what it removes and refuses a damaged journal: so does the
                # dry run, or it would promise a removal that the real pass then refuses.
                self._verify_removed(conn, first, cut, anchor)
                report.journal, report.journal_through = cut - first + 1, cut
        values = self._cutoffs(conn, policy)
        for table, condition, names in _SWEEPS:
            count = conn.execute(f"SELECT count(*) FROM {table} WHERE {condition}",
                                 {n: values[n] for n in names}).fetchone()[0]
            setattr(report, table, count)
        report.messages = conn.execute(
            "SELECT count(*) FROM messages m LEFT JOIN channels c ON c.name = m.channel WHERE m.acked_at IS NOT NULL "
            "AND m.receipt IS NULL AND m.acked_at < ? - coalesce(c.retention, 0)", (values["channel_now"],)).fetchone()[0]
        return report
