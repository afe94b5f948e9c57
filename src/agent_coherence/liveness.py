"""Liveness checks aimed at the work, not at the workers.

An exit code of 0 says a process ended; it does not say the work happened. These checks read the
shared state instead and report, as :class:`~agent_coherence.models.Anomaly`:

- ``zero_work``: a worker session that started (and possibly already ended) and did no work while
  a watched channel had messages ready or a task was assigned to it;
- ``overdue_delivery``: a message not acknowledged by its deadline;
- ``stale_channel``: a channel whose oldest ready message is older than its SLA;
- ``lease_expired_in_flight``: a write whose lease expired before it committed, or a delivery whose
  visibility timeout ran out while its consumer was still alive;
- ``overdue_assignment``: an assigned task past its deadline;
- ``missed_heartbeat``: a worker that promised heartbeats and stopped sending them;
- ``clock_step``: the backend's clock stepped back (journaled by the channels as ``clock.step``;
  reported while the step is less than ``ended_window`` old).

Each new anomaly goes to the journal (``anomaly.<kind>``), to the ``agent_coherence.liveness``
logger, and to an optional callback. Work is counted from acknowledged messages, from
:meth:`Liveness.record_work`, and from writes recorded by the adapters.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .arguments import is_text
from .backends.records import CLOCK_KEY
from .models import Anomaly

if TYPE_CHECKING:
    from .backends.base import Backend, MessageRecord, WorkerRecord
    from .coordinator import Coordinator

_SECONDS = (int, float)
logger = logging.getLogger("agent_coherence.liveness")
logger.addHandler(logging.NullHandler())


def _name(value: object, what: str) -> str:
    """A worker, task or channel name: a non-empty str (an int was stored as given, a blank name
    matched nothing)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value.strip() or "\x00" in value or not is_text(value):
        raise ValueError(f"{what} must be a non-empty name of valid text (no NUL, no lone surrogate), not {value!r}")
    return value


def _seconds(value: object, what: str, above_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (above_zero and value == 0):
        raise ValueError(f"{what} must be a finite number of seconds, {'above' if above_zero else 'at least'} 0, "
                         f"not {value!r}")
    return float(value)


def _amount(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be 0 or more, not {value}")
    return value


class Liveness:
    """Heartbeats, assignments and anomaly checks over one backend."""

    def __init__(
        self, backend: "Backend", *, zero_work_grace: float = 5.0, ended_window: float = 3600.0,
        on_anomaly: Callable[[Anomaly], None] | None = None,
    ) -> None:
        self._backend = backend
        self.zero_work_grace = zero_work_grace
        self.ended_window = ended_window
        self.on_anomaly = on_anomaly
        self._reported: set[tuple[str, str]] = set()
        # Reports whose journal append may have committed unseen: (report_id, journal seq before).
        self._in_doubt: dict[tuple[str, str], tuple[str, int]] = {}

    # Settings are checked when set, the constructor's and later assignments alike: a wrong
    # value would otherwise surface only inside a later ``anomalies()``, far from its cause.

    @property
    def zero_work_grace(self) -> float:
        """Seconds a started worker may go without work before it counts as zero work."""
        return self._zero_work_grace

    @zero_work_grace.setter
    def zero_work_grace(self, value: float) -> None:
        self._zero_work_grace = _seconds(value, "zero_work_grace")

    @property
    def ended_window(self) -> float:
        """Seconds an ended worker, or a clock step, stays reportable."""
        return self._ended_window

    @ended_window.setter
    def ended_window(self, value: float) -> None:
        self._ended_window = _seconds(value, "ended_window")

    @property
    def on_anomaly(self) -> Callable[[Anomaly], None] | None:
        """Called with each new anomaly (None: journal and log only)."""
        return self._on_anomaly

    @on_anomaly.setter
    def on_anomaly(self, value: Callable[[Anomaly], None] | None) -> None:
        if value is not None and not callable(value):
            raise TypeError(f"on_anomaly must be a function of the anomaly or None, not {type(value).__name__} {value!r}")
        self._on_anomaly = value

    # -- what workers tell us ---------------------------------------------------------------

    def start(self, worker: str, *, channels: Iterable[str] = (), heartbeat_every: float | None = None,
              **info: Any) -> None:
        """A worker session begins (its work count starts at zero). ``channels`` are the ones it
        consumes: messages ready there while it does nothing make it a zero-work anomaly."""
        # Checked before anything is stored: a bad value in the worker's row would be read by
        # every later anomalies() call (status, watch) in every process.
        if isinstance(channels, (str, bytes)) or not isinstance(channels, Iterable):
            # iterated, "tasks" would watch the channels "t", "a", "s" and "k": never reported
            raise TypeError(f"channels must be a list of channel names, not {type(channels).__name__} "
                            f"(for one channel: channels=[{channels!r}])")
        names = [_name(channel, "a channel name") for channel in channels]
        details = dict(info, channels=names)
        if heartbeat_every is not None:
            details["heartbeat_every"] = _seconds(heartbeat_every, "heartbeat_every", above_zero=True)
        self._backend.worker_start(_name(worker, "worker"), details)

    def heartbeat(self, worker: str, work: int = 0) -> None:
        """``worker`` is alive (and did ``work`` more units of work)."""
        self._backend.worker_beat(_name(worker, "worker"), _amount(work, "work"))

    def record_work(self, worker: str, amount: int = 1) -> None:
        """Count work done by ``worker`` (acks of channel messages are counted automatically)."""
        self._backend.worker_beat(_name(worker, "worker"), _amount(amount, "amount"))

    def end(self, worker: str) -> None:
        """The worker's session ended."""
        self._backend.worker_end(_name(worker, "worker"))

    def assign(self, task_id: str, worker: str, deadline: float | None = None, **info: Any) -> None:
        """Assign ``task_id`` to ``worker``; ``deadline`` is seconds from now."""
        task_id, worker = _name(task_id, "task_id"), _name(worker, "worker")
        due = self._backend.now() + _seconds(deadline, "deadline") if deadline is not None else None
        self._backend.assign(task_id, worker, due, info)

    def complete(self, task_id: str) -> bool:
        """The task is done; False if it was not assigned (or already completed)."""
        return self._backend.complete_assignment(_name(task_id, "task_id"))

    # -- checks -----------------------------------------------------------------------------

    def anomalies(self, report: bool = True) -> list[Anomaly]:
        """Every anomaly visible now. With ``report``, new ones (not yet reported by this object)
        are journaled, logged and passed to ``on_anomaly``."""
        now = self._backend.now()
        found = [
            *self._zero_work(now),
            *self._overdue_deliveries(now),
            *self._stale_channels(now),
            *self._expired_in_flight(now),
            *self._overdue_assignments(now),
            *self._missed_heartbeats(now),
            *self._clock_steps(now),
        ]
        if report:
            for anomaly in found:
                self.report(anomaly)
        return found

    def report(self, anomaly: Anomaly) -> bool:
        """Report an anomaly found by an adapter or by the caller: journaled as
        ``anomaly.<kind>``, logged at WARNING and passed to ``on_anomaly``, once per (kind,
        subject) for this object. Returns False if it had been reported already.

        Interrupted (KeyboardInterrupt) before it returned, it is reported again by the next
        call for the same anomaly, and still journaled once: that call finds the entry the
        interrupted one committed (by the ``report_id`` in its data) instead of appending
        another. The log line and ``on_anomaly`` run again then, so the callback may run twice
        when the interrupt lands as it returns. An ``on_anomaly`` that raises an exception
        counts as called: the anomaly is not reported again."""
        marker = (anomaly.kind, anomaly.subject)
        if marker in self._reported:
            return False
        doubt = self._in_doubt.get(marker)
        if doubt is None or not self._journaled(anomaly, *doubt):
            report_id = secrets.token_hex(8)
            tail = self._backend.journal_tail(1)
            self._in_doubt[marker] = (report_id, tail[0].seq if tail else 0)
            self._backend.journal_append(f"anomaly.{anomaly.kind}", None, anomaly.subject,
                                         {"detail": anomaly.detail, **anomaly.facts, "report_id": report_id})
        try:
            logger.warning("%s: %s", anomaly.kind, anomaly.detail)
            if self.on_anomaly is not None:
                self.on_anomaly(anomaly)
        except Exception:
            self._done(marker)
            raise
        self._done(marker)
        return True

    def _journaled(self, anomaly: Anomaly, report_id: str, after: int) -> bool:
        """Whether the report ``report_id`` (journaled after entry ``after``) is in the journal."""
        kind = f"anomaly.{anomaly.kind}"
        return any(entry.kind == kind and entry.data.get("report_id") == report_id
                   for entry in self._backend.journal_entries(after=after))

    def _done(self, marker: tuple[str, str]) -> None:
        self._reported.add(marker)
        self._in_doubt.pop(marker, None)

    def _zero_work(self, now: float) -> list[Anomaly]:
        found = []
        ready_by_channel: dict[str, int] = {}
        for worker in self._backend.list_workers(include_ended=True):
            if worker.work_done or now - worker.started_at < self.zero_work_grace:
                continue
            if worker.ended_at is not None and now - worker.ended_at > self.ended_window:
                continue
            pending = self._pending_work(worker, ready_by_channel)
            if not pending:
                continue
            if worker.ended_at is not None:
                state = f"ran {worker.ended_at - worker.started_at:.1f}s, ended,"
            else:
                state = f"has been running {now - worker.started_at:.1f}s"
            found.append(Anomaly(
                kind="zero_work", subject=worker.worker, since=worker.started_at,
                detail=f"worker {worker.worker!r} {state} and did no work while {', '.join(pending)}",
                facts={"pending": pending, "ended": worker.ended_at is not None},
            ))
        return found

    def _pending_work(self, worker: "WorkerRecord", ready_by_channel: dict[str, int]) -> list[str]:
        pending = [f"task {a.task_id!r} was assigned to it"
                   for a in self._backend.list_assignments(worker=worker.worker)]
        for name in worker.info.get("channels", []):
            if name not in ready_by_channel:
                ready_by_channel[name] = self._backend.channel_stats(name)["ready"]
            if ready_by_channel[name]:
                pending.append(f"{ready_by_channel[name]} message(s) were ready in channel {name!r}")
        return pending

    def _overdue_deliveries(self, now: float) -> list[Anomaly]:
        return [
            Anomaly(kind="overdue_delivery", subject=_message_subject(m), since=m.deadline or now,
                    detail=f"message {m.id} on {m.channel!r}{_in_group(m)} is {now - (m.deadline or now):.1f}s past "
                           f"its deadline after {m.attempts} delivery attempt(s)"
                           + (f"; last delivered to {m.consumer!r}" if m.consumer else ""),
                    facts={"channel": m.channel, "message_id": m.id, "attempts": m.attempts, "group": m.group})
            for m in self._backend.overdue_messages()
        ]

    def _stale_channels(self, now: float) -> list[Anomaly]:
        found = []
        for config in self._backend.list_channels():
            if config.sla is None:
                continue
            age = self._backend.channel_stats(config.name)["oldest_ready_age"]
            if age is not None and age > config.sla:
                found.append(Anomaly(
                    kind="stale_channel", subject=config.name, since=now - age,
                    detail=f"oldest ready message on {config.name!r} is {age:.1f}s old (SLA {config.sla:.1f}s): "
                           "nobody is consuming it", facts={"age": age, "sla": config.sla}))
        return found

    def _expired_in_flight(self, now: float) -> list[Anomaly]:
        found = []
        for intent in self._backend.list_intents():
            if intent.auto_lease:
                continue
            lease = self._backend.get_lease(intent.key)
            if lease is None or (lease.holder, lease.fence) != (intent.holder, intent.fence):
                found.append(Anomaly(
                    kind="lease_expired_in_flight", subject=intent.key, since=intent.created_at,
                    detail=f"{intent.holder!r} lost its lease on {intent.key!r} while its write was in flight",
                    facts={"holder": intent.holder, "fence": intent.fence}))
        alive = {w.worker for w in self._backend.list_workers() if now - w.last_seen < 60}
        for message in self._backend.expired_deliveries():
            if message.consumer in alive:
                found.append(Anomaly(
                    kind="lease_expired_in_flight", subject=_message_subject(message),
                    since=message.available_at,
                    detail=f"visibility timeout of message {message.id} on {message.channel!r}{_in_group(message)} "
                           f"ran out while {message.consumer!r} was still alive: it will be delivered again",
                    facts={"consumer": message.consumer, "attempts": message.attempts, "group": message.group}))
        return found

    def _overdue_assignments(self, now: float) -> list[Anomaly]:
        return [
            Anomaly(kind="overdue_assignment", subject=a.task_id, since=a.deadline or now,
                    detail=f"task {a.task_id!r} assigned to {a.worker!r} is {now - (a.deadline or now):.1f}s overdue",
                    facts={"worker": a.worker})
            for a in self._backend.list_assignments()
            if a.deadline is not None and a.deadline < now
        ]

    def _missed_heartbeats(self, now: float) -> list[Anomaly]:
        found = []
        for worker in self._backend.list_workers():
            every = worker.info.get("heartbeat_every")
            # A number only: a row stored before start() checked it must not break every check.
            if isinstance(every, _SECONDS) and every > 0 and now - worker.last_seen > 3 * every:
                found.append(Anomaly(
                    kind="missed_heartbeat", subject=worker.worker, since=worker.last_seen,
                    detail=f"worker {worker.worker!r} promised a heartbeat every {every}s; "
                           f"last seen {now - worker.last_seen:.1f}s ago", facts={"every": every}))
        return found


    def _clock_steps(self, now: float) -> list[Anomaly]:
        return [
            Anomaly(kind="clock_step", subject=f"{CLOCK_KEY}#{entry.seq}", since=entry.ts,
                    detail=f"the backend clock stepped back {entry.data.get('step', 0):.1f}s; channel time held "
                           "(ready messages stayed ready), but lease expiry follows the clock: see docs/limits.md",
                    facts=dict(entry.data))
            for entry in self._backend.journal_entries(key=CLOCK_KEY)
            if entry.kind == "clock.step" and now - entry.ts < self.ended_window
        ]


def _message_subject(message: "MessageRecord") -> str:
    """``<channel>#<id>``, and ``@<group>`` for a consumer group's copy: each group holds its own
    copy of a message, and two copies under one subject would be reported as one anomaly."""
    return f"{message.channel}#{message.id}" + (f"@{message.group}" if message.group else "")


def _in_group(message: "MessageRecord") -> str:
    return f" (group {message.group!r})" if message.group else ""


def watch_main(coord: "Coordinator", interval: float = 2.0, once: bool = False) -> int:
    """``agent-coherence watch``: print anomalies as they appear, until interrupted."""
    seen: set[tuple[str, str]] = set()
    try:
        while True:
            for anomaly in coord.liveness.anomalies():
                if (anomaly.kind, anomaly.subject) not in seen:
                    seen.add((anomaly.kind, anomaly.subject))
                    stamp = time.strftime("%H:%M:%S")
                    print(f"{stamp}  {anomaly.kind:<24} {anomaly.detail}", flush=True)
            if once:
                return 1 if seen else 0
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
