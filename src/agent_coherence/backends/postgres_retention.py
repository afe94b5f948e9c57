"""Retention on PostgreSQL: the stored policy, bounded compaction steps, the fence floor.

The policy and what it keeps are those of ``retention.py`` (one policy, stored in the schema's
``meta`` table so every process on every host applies the same one); the record format of a
checkpoint is that of ``journal.py``. How a step is done here, safe with writers on many hosts:

* **One step at a time, never a fleet-wide wait.** A step runs in one transaction under a
  transaction-scoped advisory lock of the schema; an automatic step that finds it taken skips
  (another host is doing the work), ``compact()`` waits for it. Writers never take that lock.
* **Rows** (leases, dedup, effects, assignments, workers) are examined ``batch`` at a time in
  primary-key order from a cursor kept in ``meta`` that wraps around; a row goes only if it meets
  its condition when the DELETE locks it (READ COMMITTED re-checks a row another transaction
  changed meanwhile), so a lease taken again, a dedup key claimed again, ... stays.
* **Fences never repeat.** A removed lease row's fence raises ``meta.fence_floor`` in the same
  transaction; a lease row made afresh starts above the floor. An acquire that waited for the
  step's lock on the row finds it gone and inserts in a *new* statement, which sees the floor.
* **The journal's 64 chains are compacted one by one.** The step takes the oldest entries by
  global ``seq`` (at most ``batch``) that the policy lets go; on each chain they touch, it verifies
  the entries to be removed from the chain's newest checkpoint (so an edited entry is never
  laundered into a checkpoint), deletes them, keeps the chain's newest entry, and appends a
  ``journal.checkpoint`` entry to *that* chain (positions are the chain's, as ``ChainWalk``
  checks them). The head rows are locked last, in chain order, for the checkpoints only: a
  writer waits at most for the end of one step, and only if it picked a compacted chain. So
  the journal keeps at least its newest entry per chain; on a schema of several chains a step
  looks at no fewer than 4 entries per chain (256 on 64).
* **A cap of N entries counts the entries besides each compacted chain's newest checkpoint**
  (so at most N plus one checkpoint per chain remain, the embedded backend's rule on one chain),
  and a chain from which a step would take no more entries than the checkpoint it appends (one
  entry, on a chain that already has a checkpoint) is left as it is: reruns settle instead of
  replacing entries by checkpoints. A cap below about one entry per chain is not reached.
* **Acknowledged messages kept for a channel's ``retention``** go once it has passed (0 for a
  channel without a configuration row), oldest first: the step walks the channels that have
  such rows through ``messages_acked`` from a cursor in ``meta``, at most
  ACKED_CHANNELS_PER_STEP channels and ``batch`` rows per step (``_sweep_acked``).

A dry run counts what a full pass would remove, read-only (it may scan).

An ``assign`` takes the same advisory lock *shared* (``take_retention_lock_shared``): it waits
for a running step, and a step waits for (or, when automatic, skips past) an assign in flight. So a
step never removes an ended worker whose open assignment is about to commit.
"""

from __future__ import annotations

import json
import psycopg

from ..journal import CHECKPOINT_ENTRY, GENESIS, ChainWalk, encode_data, stored_checkpoint
from ..retention import CompactionReport, Retention, StepSchedule, check_compact_limits, stored_policy
from .postgres_journal import record_of
from .postgres_tx import Tx, TxRunner


# (table, primary key columns, the condition under which a row goes, its parameters' names).
_SWEEPS: tuple[tuple[str, tuple[str, ...], str, tuple[str, ...]], ...] = (
    ("leases", ("key",), "t.expires_at < %(lease_cutoff)s AND NOT EXISTS "
     "(SELECT 1 FROM @intents i WHERE i.key = t.key)", ("lease_cutoff",)),
    ("dedup", ("channel", "key"), "t.expires_at <= %(channel_now)s", ("channel_now",)),
    ("effects", ("channel", "effect_key"), "t.expires_at <= %(channel_now)s", ("channel_now",)),
    ("assignments", ("task_id",), "t.completed_at IS NOT NULL AND t.completed_at < %(assignment_cutoff)s",
     ("assignment_cutoff",)),
    ("workers", ("worker",), "t.ended_at IS NOT NULL AND t.ended_at < %(worker_cutoff)s AND NOT EXISTS "
     "(SELECT 1 FROM @assignments a WHERE a.worker = t.worker AND a.completed_at IS NULL)", ("worker_cutoff",)),
)
_SET_META = ("INSERT INTO @meta(name, value) VALUES (%s, %s) "
             "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value")
_CHECKPOINT_COLUMNS = "seq, ts, kind, key, holder, data, prev_hash, hash"
# Channels whose kept acknowledged messages one step looks at (one statement each).
ACKED_CHANNELS_PER_STEP = 32
# The next channel after %(after)s with acknowledged rows, and its rows past its retention (the
# oldest %(budget)s) removed: both through messages_acked. Returns (channel or NULL, removed).
_SWEEP_ACKED = (
    "WITH c AS (SELECT m.channel, coalesce((SELECT k.retention FROM @channels k WHERE k.name = m.channel), 0) AS "
    "keep_for FROM @messages m WHERE m.channel > %(after)s AND m.acked_at IS NOT NULL ORDER BY m.channel LIMIT 1), "
    "d AS (DELETE FROM @messages t WHERE (t.channel, t.grp, t.id) IN (SELECT m.channel, m.grp, m.id FROM "
    "@messages m, c WHERE m.channel = c.channel AND m.acked_at IS NOT NULL AND m.acked_at < @ac_channel_now() - "
    "c.keep_for ORDER BY m.acked_at LIMIT %(budget)s) AND t.acked_at IS NOT NULL RETURNING 1) "
    "SELECT (SELECT channel FROM c), (SELECT count(*) FROM d)")


def _meta(tx: Tx, name: str) -> str | None:
    row = tx.one("SELECT value FROM @meta WHERE name = %s", (name,))
    return None if row is None else str(row[0])



def retention_lock_key(schema: str) -> str:
    """The name of the schema's retention advisory lock (a step holds it exclusively)."""
    return f"agent-coherence-retention:{schema}"


def take_retention_lock_shared(tx: Tx, schema: str) -> None:
    """Hold the retention lock shared until ``tx`` ends: no step runs while ``tx`` is open."""
    tx.run("SELECT pg_advisory_xact_lock_shared(hashtext(%s))", (retention_lock_key(schema),))


class RetentionOps(StepSchedule, TxRunner):
    """Retention operations of PostgresBackend (see the Backend protocol for the contract)."""

    schema: str

    # -- the policy -------------------------------------------------------------------------

    def retention(self, update: Retention | None = None) -> Retention:
        """The stored policy (the default if none was stored); ``update`` stores a new one."""
        if update is not None:
            text = json.dumps(update.as_dict(), sort_keys=True)
            self.transaction(lambda tx: tx.run(_SET_META, ("retention", text)), idempotent=True)
            return update
        row = self.read(lambda tx: tx.one("SELECT value FROM @meta WHERE name = 'retention'"))
        return Retention() if row is None else stored_policy(str(row[0]), self.name, f"the schema {self.schema!r}")

    # -- steps ------------------------------------------------------------------------------

    database_errors = (psycopg.Error,)

    def scheduled_step(self, policy: Retention) -> None:
        """One step, skipped when another process is running one."""
        self.transaction(lambda tx: self._step(tx, policy, None, None, wait=False), idempotent=True)

    def compact(
        self, policy: Retention | None = None, *, before: float | None = None, keep: int | None = None,
        dry_run: bool = False,
    ) -> CompactionReport:
        """One bounded retention step in one transaction (``dry_run``: count what a full pass
        would remove instead, changing nothing). ``before`` (a timestamp) and ``keep`` (a number
        of entries) replace the policy's journal limits. Waits for a step another process is
        running. Raises JournalCorrupt, removing nothing, when the entries it would remove do
        not verify."""
        check_compact_limits(before, keep)
        policy = self.retention() if policy is None else policy
        if dry_run:
            return self.read(lambda tx: self._estimate(tx, policy, before, keep))
        # Running it again after an unanswered COMMIT is a step of its own: harmless.
        return self.transaction(lambda tx: self._step(tx, policy, before, keep, wait=True), idempotent=True)

    def _cutoffs(self, tx: Tx, policy: Retention) -> dict[str, float]:
        row = tx.one("SELECT @ac_now(), @ac_channel_now()")
        assert row is not None
        now = float(row[0])
        values = {"channel_now": float(row[1])}
        ages = {"lease_cutoff": "lease_days", "assignment_cutoff": "assignment_days", "worker_cutoff": "worker_days"}
        for name, field in ages.items():
            seconds = policy.seconds(field)
            values[name] = float("-inf") if seconds is None else now - seconds
        return values

    def _journal_limits(self, tx: Tx, policy: Retention, before: float | None,
                        keep: int | None) -> tuple[float | None, int | None]:
        if before is None and keep is None:
            seconds = policy.seconds("journal_days")
            if seconds is None:
                return None, policy.journal_entries
            row = tx.one("SELECT @ac_now()")
            return float(row[0]) - seconds, policy.journal_entries  # type: ignore[index]
        return before, keep

    def _step(self, tx: Tx, policy: Retention, before: float | None, keep: int | None,
              wait: bool) -> CompactionReport:
        report = CompactionReport()
        lock_key = retention_lock_key(self.schema)
        if wait:
            tx.run("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock_key,))
        elif not tx.one("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (lock_key,))[0]:  # type: ignore[index]
            return report  # another process is running a step
        values = self._cutoffs(tx, policy)
        # Rows first, journal last: the head rows are the last locks this transaction takes.
        for table, key, condition, names in _SWEEPS:
            removed, more = self._sweep(tx, table, key, condition, {n: values[n] for n in names}, policy.batch)
            setattr(report, table, removed)
            report.more = report.more or more
        report.messages, more = self._sweep_acked(tx, policy.batch)
        report.more = report.more or more
        older_than, cap = self._journal_limits(tx, policy, before, keep)
        self._compact_journal(tx, policy.batch, older_than, cap, report)
        return report

    @staticmethod
    def _sweep(tx: Tx, table: str, key: tuple[str, ...], condition: str, params: dict[str, float],
               batch: int) -> tuple[int, bool]:
        """Examine the next ``batch`` rows of ``table`` after the stored cursor; remove those
        meeting ``condition``. Returns (removed, whether rows remain after these)."""
        cursor_name = f"retention.cursor.{table}"
        stored = _meta(tx, cursor_name)
        try:
            cursor = json.loads(stored) if stored else None
        except ValueError:
            cursor = None  # only where the last step stopped: one that cannot be read starts over
        if not (cursor is None or (isinstance(cursor, list) and len(cursor) == len(key))):
            cursor = None
        columns = ", ".join(key)
        after = f"WHERE ({columns}) > ({', '.join(['%(c' + str(i) + ')s' for i in range(len(key))])})" if cursor else ""
        match = " AND ".join(f"t.{column} = b.{column}" for column in key)
        fence = "t.fence" if table == "leases" else "0"
        row = tx.one(
            f"WITH b AS (SELECT {columns} FROM @{table} {after} ORDER BY {columns} LIMIT %(batch)s), "
            f"g AS (DELETE FROM @{table} t USING b WHERE {match} AND {condition} RETURNING {fence} AS fence) "
            f"SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM g), (SELECT max(fence) FROM g), "
            f"(SELECT json_build_array({columns}) FROM b ORDER BY {', '.join(c + ' DESC' for c in key)} LIMIT 1)",
            dict(params, batch=batch, **{f"c{i}": value for i, value in enumerate(cursor or [])}))
        assert row is not None
        examined, removed, highest, last = int(row[0]), int(row[1]), row[2], row[3]
        if table == "leases" and removed:
            tx.run("INSERT INTO @meta(name, value) VALUES ('fence_floor', %s) ON CONFLICT (name) DO UPDATE "
                   "SET value = greatest(@meta.value::bigint, EXCLUDED.value::bigint)::text", (str(highest),))
        more = examined == batch
        tx.run(_SET_META, (cursor_name, json.dumps(last) if more else ""))
        return removed, more

    def _compact_journal(self, tx: Tx, batch: int, older_than: float | None, cap: int | None,
                         report: CompactionReport) -> None:
        chains = self.journal_chains
        # On several chains the window is at least 4 entries per chain: a step that took one entry
        # from each chain would append as many checkpoints as it removed.
        window = max(batch, 2) if chains == 1 else max(batch, 4 * chains)
        oldest = tx.all("SELECT seq, ts, part, pseq FROM @journal ORDER BY seq LIMIT %s", (window,))
        if not oldest:
            return
        heads = {part: (int(pseq), int(removed)) for part, pseq, removed in
                 tx.all("SELECT part, pseq, removed FROM @journal_heads")}
        # ``cap`` counts the entries besides each compacted chain's newest checkpoint (a chain that
        # had entries removed holds one), as the embedded backend counts its one chain's.
        kept = sum(pseq - removed - (removed > 0) for pseq, removed in heads.values())
        taken: dict[int, list[int]] = {}  # chain -> the positions this step removes, oldest first
        due = False  # the window ended while entries were still due (another step has work)
        for index, (_, ts, part, pseq) in enumerate(oldest):
            capped = cap is not None and kept > cap
            if not (capped or (older_than is not None and ts < older_than)):
                break
            due = index == window - 1
            if pseq >= heads[part][0]:
                continue  # the chain's newest entry stays: its checkpoint links to it
            positions = taken.setdefault(part, [])
            # The first entry taken from a compacted chain frees nothing: its checkpoint becomes an
            # ordinary entry and the new one anchors.
            if positions or heads[part][1] == 0:
                kept -= 1
            positions.append(int(pseq))
        plans: list[tuple[int, int, str, int, int]] = []  # (chain, last removed position, its hash, removed
        # from the chain in all, removed now)
        deleted_total = through_seq = 0
        for part in sorted(taken):
            first, cut = taken[part][0], taken[part][-1]
            if len(taken[part]) <= (heads[part][1] > 0):
                continue  # one entry for one checkpoint leaves as many as before: reruns would churn
            removed_before, through_hash = self._verify_removed(tx, part, first, cut)
            row = tx.one("WITH d AS (DELETE FROM @journal WHERE part = %s AND pseq <= %s RETURNING seq) "
                         "SELECT count(*), max(seq) FROM d", (part, cut))
            assert row is not None
            deleted = int(row[0])
            deleted_total += deleted
            through_seq = max(through_seq, int(row[1] or 0))
            plans.append((part, cut, through_hash, removed_before + deleted, deleted))
        for part, cut, through_hash, removed, now_removed in plans:  # the head locks, last, in chain order
            data = encode_data({"through": cut, "through_hash": through_hash, "removed": removed})
            seq = tx.write_on_chain(part, [(CHECKPOINT_ENTRY, None, None, data)], removed=now_removed)[0]
            report.checkpoint_seq = max(report.checkpoint_seq, seq)
        report.journal = deleted_total
        report.journal_through = through_seq
        report.more = report.more or (due and deleted_total > 0)

    @staticmethod
    def _verify_removed(tx: Tx, part: int, first: int, cut: int) -> tuple[int, str]:
        """Verify positions ``first``..``cut`` of chain ``part`` from its newest checkpoint's
        anchor (GENESIS when there is none); return (entries removed from the chain before, the
        hash of entry ``cut``). Raises JournalCorrupt."""
        row = tx.one(f"SELECT seq, pseq, data FROM @journal WHERE part = %s AND kind = '{CHECKPOINT_ENTRY}' "
                     "ORDER BY pseq DESC LIMIT 1", (part,))
        walk = ChainWalk()
        removed = 0
        if row is not None:
            through, through_hash, removed = stored_checkpoint(int(row[0]), row[2], int(row[1]))
            walk.start_at(through + 1, through_hash)
        else:
            walk.start_at(1, GENESIS)
        for entry_row in tx.all(f"SELECT pseq, {_CHECKPOINT_COLUMNS} FROM @journal WHERE part = %s "
                                "AND pseq BETWEEN %s AND %s ORDER BY pseq", (part, first, cut)):
            walk.check(record_of(entry_row[1:]), position=entry_row[0])
        return removed, walk.head

    @staticmethod
    def _sweep_acked(tx: Tx, batch: int) -> tuple[int, bool]:
        """Remove acknowledged messages kept longer than their channel's ``retention`` (0 when the
        channel has no configuration row): at most ``batch`` rows and ACKED_CHANNELS_PER_STEP
        channels, from a channel-name cursor in ``meta`` that wraps around. Each channel is one
        statement over messages_acked (the partial index of acknowledged rows), so channels
        without kept rows cost nothing and no unacknowledged row is read. Returns (removed, more)."""
        cursor_name = "retention.cursor.messages"
        after = _meta(tx, cursor_name) or ""  # channel names are never empty: '' is before all
        budget, removed = batch, 0
        for _ in range(min(batch, ACKED_CHANNELS_PER_STEP)):
            row = tx.one(_SWEEP_ACKED, {"after": after, "budget": budget})
            assert row is not None
            if row[0] is None:
                tx.run(_SET_META, (cursor_name, ""))
                return removed, False
            gone = int(row[1])
            removed, budget = removed + gone, budget - gone
            if budget == 0:  # this channel may hold more: the next step starts at it again
                break
            after = str(row[0])
        tx.run(_SET_META, (cursor_name, after))
        return removed, True

    def _estimate(self, tx: Tx, policy: Retention, before: float | None, keep: int | None) -> CompactionReport:
        report = CompactionReport(dry_run=True)
        older_than, cap = self._journal_limits(tx, policy, before, keep)
        cut: int | None = None
        if cap is not None:
            kept = int(tx.one("SELECT coalesce(sum(pseq - removed - (removed > 0)::int), 0) "  # type: ignore[index]
                              "FROM @journal_heads")[0])
            if kept > cap:
                row = tx.one("SELECT seq FROM @journal ORDER BY seq OFFSET %s LIMIT 1", (kept - cap - 1,))
                cut = None if row is None else int(row[0])
        if older_than is not None:
            row = tx.one("SELECT (SELECT min(seq) FROM @journal WHERE ts >= %s), (SELECT max(seq) FROM @journal)",
                         (older_than,))
            assert row is not None
            if row[1] is not None:
                young = int(row[1]) + 1 if row[0] is None else int(row[0])
                cut = max(cut or 0, young - 1)
        if cut:
            # A real pass verifies what it removes and refuses a damaged journal: so does the dry
            # run, or it would promise a removal that the real pass then refuses.
            for part, first, last in tx.all(
                    "SELECT j.part, min(j.pseq), max(j.pseq) FROM @journal j JOIN @journal_heads h ON h.part = j.part "
                    "WHERE j.seq <= %s AND j.pseq < h.pseq GROUP BY j.part ORDER BY j.part", (cut,)):
                self._verify_removed(tx, int(part), int(first), int(last))
            row = tx.one("SELECT count(*), max(j.seq) FROM @journal j JOIN @journal_heads h ON h.part = j.part "
                         "WHERE j.seq <= %s AND j.pseq < h.pseq", (cut,))
            assert row is not None
            report.journal, report.journal_through = int(row[0]), int(row[1] or 0)
        values = self._cutoffs(tx, policy)
        for table, _, condition, names in _SWEEPS:
            count = tx.one(f"SELECT count(*) FROM @{table} t WHERE {condition}", {n: values[n] for n in names})
            setattr(report, table, int(count[0]))  # type: ignore[index]
        count = tx.one("SELECT count(*) FROM @messages m LEFT JOIN @channels c ON c.name = m.channel "
                       "WHERE m.acked_at IS NOT NULL AND m.acked_at < @ac_channel_now() - coalesce(c.retention, 0)")
        report.messages = int(count[0])  # type: ignore[index]
        return report
