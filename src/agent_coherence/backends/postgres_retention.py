"""The retention policy on PostgreSQL: stored and read, never applied, in this release.

The policy lives in the schema's ``meta`` table (name ``retention``) like on the embedded backend,
so every process on the schema reads the same one and a policy stored here carries over unchanged.
What is not implemented here: removing anything. No automatic retention step runs on PostgreSQL,
and ``compact()`` refuses with ``BackendUnavailable`` (reason ``unsupported``) before it changes
anything, so the journal, released lease rows, expired dedup and effect rows, ended workers and
finished assignments keep growing. Compacting 64 chains needs a ``journal.checkpoint`` entry per
chain and a fence floor; until that exists, a refusal is the honest answer, not a no-op report.
"""

from __future__ import annotations

import json

from ..errors import BackendUnavailable
from ..retention import CompactionReport, Retention, check_compact_limits
from .postgres_tx import Tx, TxRunner

COMPACTION_UNSUPPORTED = (
    "retention and journal compaction are embedded-backend only in this release: PostgreSQL keeps "
    "every row"
)


class RetentionOps(TxRunner):
    """Retention operations of PostgresBackend (see the Backend protocol for the contract)."""

    def retention(self, update: Retention | None = None) -> Retention:
        """The stored policy (the default if none was stored); ``update`` stores a new one. The
        policy is recorded for every process, but nothing applies it on PostgreSQL (see the
        module docstring)."""
        if update is not None:
            text = json.dumps(update.as_dict(), sort_keys=True)

            def store(tx: Tx) -> None:
                tx.run("INSERT INTO @meta(name, value) VALUES ('retention', %s) "
                       "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value", (text,))

            self.transaction(store)
            return update
        row = self.read(lambda tx: tx.one("SELECT value FROM @meta WHERE name = 'retention'"))
        return Retention() if row is None else Retention.from_dict(json.loads(row[0]))

    def compact(
        self, policy: Retention | None = None, *, before: float | None = None, keep: int | None = None,
        dry_run: bool = False,
    ) -> CompactionReport:
        """Refused on PostgreSQL in this release, also as a dry run: raises BackendUnavailable
        (``reason="unsupported"``) and changes nothing; bad ``before``/``keep`` get the same
        ValueError as on the embedded backend first."""
        check_compact_limits(before, keep)
        raise BackendUnavailable(
            COMPACTION_UNSUPPORTED, backend=self.name, detail="compaction unsupported", errno=None,
            reason="unsupported",
            recover="keep the journal (it still verifies), or run the state on the embedded backend to compact it",
        )
