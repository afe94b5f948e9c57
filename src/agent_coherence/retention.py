"""How long the coordination state keeps what it no longer needs: the retention policy.

Without one, the state grows with every operation: journal entries, released lease rows, expired
dedup and effect rows, ended workers and finished assignments are never deleted. A ``Retention``
says what may go; the backend stores it, so every process on the state applies the same policy
(``Coordinator.open(..., retention=Retention(...))`` stores a new one), and applies it
incrementally: every ``every`` transactions one bounded step (at most ``batch`` rows per table),
or on demand with ``Coordinator.compact()`` / ``agent-coherence journal compact``.

What retention never removes, whatever the policy: a live lease, a lease row of a key with an
unresolved intent, a message that is not acknowledged, a dedup or effect row inside its window, an
open assignment, a worker with an open assignment. Fences keep growing after a lease row is
removed: the backend keeps the highest removed fence and starts new lease rows above it.

Journal entries are removed oldest first, and each step that removes some appends a
``journal.checkpoint`` entry naming the last removed entry's sequence number and hash and how many
were removed in all, so the remaining journal still verifies (see ``journal.py``). A cap of N
entries keeps N besides that checkpoint (one per compacted chain on PostgreSQL; an older
checkpoint among the N counts as one of them), and a step that would remove no more entries than
the checkpoint it appends does nothing: once within its limits the journal stays as it is.
Acknowledged channel messages kept for their channel's ``retention`` go once it has passed.

This module is imported by the backend: it stays free of typing, pydantic and dataclasses.
"""

from __future__ import annotations

import os

from . import json_text
from .errors import BackendUnavailable, CoherenceError
from .logs import ERROR, WARNING, log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DAY = 86400.0
DISABLED_RECHECK = 5000  # transactions before a process re-reads a policy that turned steps off

_FIELDS = ("journal_days", "journal_entries", "lease_days", "worker_days", "assignment_days", "every", "batch")
_OPTIONAL_AGES = ("journal_days", "lease_days", "worker_days", "assignment_days")


class Retention:
    """A retention policy (immutable). ``None`` for an age or a count keeps that kind of row forever.

    * ``journal_days``: journal entries older than this are removed;
    * ``journal_entries``: at most this many journal entries are kept besides the checkpoint
      anchoring the removed ones (the oldest go first);
    * ``lease_days``: a lease row released or expired this long ago is removed (its fence is kept);
    * ``worker_days``: an ended worker with no open assignment, ended this long ago, is removed;
    * ``assignment_days``: a completed assignment, completed this long ago, is removed;
    * expired dedup and effect rows are always removed (their window has passed), and so are
      acknowledged messages kept longer than their channel's ``retention``;
    * ``every``: transactions of one process between two automatic steps (0: never automatically);
    * ``batch``: the most rows one step examines per table (bounds the pause of a step).
    """

    __slots__ = _FIELDS
    if TYPE_CHECKING:
        journal_days: float | None
        journal_entries: int | None
        lease_days: float | None
        worker_days: float | None
        assignment_days: float | None
        every: int
        batch: int

    def __init__(
        self, *, journal_days: float | None = 30.0, journal_entries: int | None = 100_000,
        lease_days: float | None = 1.0, worker_days: float | None = 7.0, assignment_days: float | None = 7.0,
        every: int = 200, batch: int = 500,
    ) -> None:
        values = {"journal_days": journal_days, "journal_entries": journal_entries, "lease_days": lease_days,
                  "worker_days": worker_days, "assignment_days": assignment_days, "every": every, "batch": batch}
        for name in _OPTIONAL_AGES:
            value = values[name]
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not value >= 0):
                raise ValueError(f"Retention({name}={value!r}): give a number of days >= 0, or None to keep forever")
        count = values["journal_entries"]
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError(f"Retention(journal_entries={count!r}): give an integer >= 1, or None for no cap")
        for name, least in (("every", 0), ("batch", 1)):
            value = values[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"Retention({name}={value!r}): give an integer >= {least}")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def keep_everything(cls) -> "Retention":
        """The policy of releases before retention: nothing is ever removed."""
        return cls(journal_days=None, journal_entries=None, lease_days=None, worker_days=None,
                   assignment_days=None, every=0)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Retention is immutable (cannot set {name!r}); make a new one")

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Retention":
        """The policy stored as ``as_dict()``; unknown names are refused (a newer release's policy)."""
        unknown = set(values) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown retention settings {sorted(unknown)}")
        return cls(**values)

    def seconds(self, name: str) -> float | None:
        """An age of the policy in seconds (None: kept forever)."""
        days = getattr(self, name)
        return None if days is None else float(days) * DAY

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Retention) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.as_dict().items()))

    def __repr__(self) -> str:
        return "Retention(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"


def stored_policy(text: str, backend: str, where: str) -> Retention:
    """The policy stored as ``text`` (``as_dict()`` as JSON) in ``where``; BackendUnavailable when
    it cannot be read (an edited row, or settings of a newer release), so that a write whose
    automatic step reads it logs and skips the step, and ``journal compact`` reports it, rather
    than either raising a ValueError."""
    try:
        values = json_text.loads(text)
        if not isinstance(values, dict):
            raise ValueError(f"not a JSON object: {text[:80]!r}")
        return Retention.from_dict(values)
    except (TypeError, ValueError) as error:
        raise BackendUnavailable(
            f"the retention policy stored in {where} cannot be read: {error}",
            recover=("store one again with Coordinator.open(root, retention=Retention(...)); every process "
                     "on the root must run the same release"),
            backend=backend, detail=str(error), reason="error") from None


def check_compact_limits(before: float | None, keep: int | None) -> None:
    """Refuse a bad ``before`` (a timestamp) or ``keep`` (entries) of a compaction with ValueError."""
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
        raise ValueError(f"keep={keep!r}: give a number of journal entries >= 0")
    if before is not None and (isinstance(before, bool) or not isinstance(before, (int, float))
                               or before != before):
        raise ValueError(f"before={before!r}: give a timestamp (epoch seconds)")


class CompactionReport:
    """What one or more retention steps removed (or, in a dry run, would remove).

    ``journal_through``: the sequence number of the last journal entry removed (0: none);
    ``checkpoint_seq``: the checkpoint entry appended (0: none, also in a dry run); ``messages``:
    acknowledged channel messages whose channel's ``retention`` had passed; ``more``: the last
    step stopped at its batch limit, so another step has work.
    """

    __slots__ = ("journal", "journal_through", "checkpoint_seq", "leases", "dedup", "effects", "workers",
                 "assignments", "messages", "more", "dry_run")
    if TYPE_CHECKING:
        journal: int
        journal_through: int
        checkpoint_seq: int
        leases: int
        dedup: int
        effects: int
        workers: int
        assignments: int
        messages: int
        more: bool
        dry_run: bool

    ROWS = ("journal", "leases", "dedup", "effects", "workers", "assignments", "messages")

    def __init__(self, dry_run: bool = False) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)
        self.more = False
        self.dry_run = dry_run

    def add(self, other: "CompactionReport") -> None:
        """Fold a later step's report into this one."""
        for name in self.ROWS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.journal_through = max(self.journal_through, other.journal_through)
        self.checkpoint_seq = max(self.checkpoint_seq, other.checkpoint_seq)
        self.more = other.more

    @property
    def removed(self) -> int:
        return sum(getattr(self, name) for name in self.ROWS)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return "CompactionReport(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"


class StepSchedule:
    """When a backend runs its automatic retention steps (mixed into each backend's RetentionOps).

    Every ``every`` transactions of a process, one step (``scheduled_step``), counted from a random
    start so that short-lived processes (a hook per event) take their share. A policy with
    ``every=0`` is re-read only every ``DISABLED_RECHECK`` transactions. A failed step is logged,
    never raised into the operation that triggered it; ``database_errors`` names the driver's
    errors that count as a failed step."""

    _maintenance_countdown: int
    database_errors: tuple[type[Exception], ...] = ()

    if TYPE_CHECKING:
        def retention(self, update: Retention | None = None) -> Retention: ...

    def _start_maintenance_countdown(self) -> None:
        self._maintenance_countdown = 1 + int.from_bytes(os.urandom(2), "big") % Retention().every

    def scheduled_step(self, policy: Retention) -> None:
        """Run one bounded step under ``policy`` (the backend's own)."""
        raise NotImplementedError

    def maintenance_due(self) -> None:
        """Called before each transaction: one step when this process's count comes round."""
        self._maintenance_countdown -= 1
        if self._maintenance_countdown > 0:
            return
        self._maintenance_countdown = DISABLED_RECHECK  # also while the step below runs
        read = False
        try:
            policy = self.retention()
            read = True
            if policy.every == 0:
                return
            try:
                self.scheduled_step(policy)
            finally:
                self._maintenance_countdown = policy.every
        except CoherenceError as error:
            level = ERROR if error.facts.get("reason") in ("gap", "broken link", "hash mismatch") else WARNING
            log("retention", level, "retention step skipped: %s", error.message)
        except self.database_errors as error:
            log("retention", WARNING, "retention step skipped: %s", error)
        except Exception as error:  # noqa: BLE001 - a step is housekeeping: the write it rode on goes on
            log("retention", ERROR, "retention step failed, skipped: %s: %s", type(error).__name__, error)
        except BaseException as error:
            if not read and not isinstance(error, Exception):
                # Interrupted before it had the policy: read it at the next transaction, rather
                # than run no step for DISABLED_RECHECK transactions as if the policy were off.
                self._maintenance_countdown = 1
            raise
