"""Acknowledged channels: queue semantics instead of a mutable file used as a mailbox.

Producers append; consumers receive a message under a visibility timeout and acknowledge it. A
message that is not acknowledged in time becomes visible again (at-least-once delivery); after
``max_attempts`` deliveries it moves to the dead-letter channel ``<name>.dead`` instead of being
dropped. A ``key`` makes a send idempotent within the dedup window. Nothing is ever overwritten,
so the clear-vs-write race of a ``next_task.md`` mailbox has nothing to race on.

Durability, per channel: ``durable`` (default) fsyncs every send and ack, so an acknowledged
send survives power loss; ``fast`` commits without fsync, which survives any process crash but
may lose the most recent operations on power loss. Receives never fsync: losing one to power loss
only causes a redelivery.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Literal, Mapping

from .arguments import is_text
from .backends.base import ChannelConfig, MessageRecord
from .backends.records import effect_key
from .errors import ChannelError, StaleReceipt
from .logs import DEBUG, log
from .models import Delivery

if TYPE_CHECKING:
    from .backends.base import Backend

Durability = Literal["durable", "fast"]
DEFAULT_EFFECT_TTL = 24 * 3600.0


def _encode(payload: Any) -> tuple[bytes, str]:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload), "bytes"
    try:
        # NaN and the infinities are refused: JSON has no such values, and a consumer in another
        # language (or a strict parser) could not read the message.
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8"), "json"
    except (TypeError, ValueError) as error:
        raise ChannelError(f"payload is neither bytes nor JSON-serialisable: {error}",
                           recover="send bytes, or a JSON-serialisable value (finite numbers only)") from error


MAX_SECONDS = 1e12  # ~31,700 years: every channel time stays far below ACKED (backends/sqlite_channel_depth)


def check_seconds(name: str, value: object, *, optional: bool = False) -> None:
    """Refuse a duration that is not a finite number of seconds in [0, MAX_SECONDS] (None too,
    unless optional)."""
    if value is None and optional:
        return
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
            or value > MAX_SECONDS):
        raise ChannelError(f"{name} must be a finite number of seconds >= 0 (at most {MAX_SECONDS:g}), "
                           f"not {value!r}",
                           recover=f"pass {name} as seconds, e.g. {name}=30", setting=name, value=value)


def check_text(name: str, value: object, *, optional: bool = False) -> None:
    """Refuse a name or key that is not a non-empty string without NUL (None too, unless optional)."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not value or "\x00" in value or not is_text(value):
        raise ChannelError(f"{name} must be a non-empty string of valid text, not {value!r}",
                           recover=f"pass {name} as a non-empty string", setting=name, value=value)


def check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ChannelError(f"{name} must be a whole number >= 1, not {value!r}",
                           recover=f"pass {name} as a positive integer", setting=name, value=value)


def _slot_id(channel: str, message_id: str) -> str:
    """The id a materialized file's header names: ``<channel>-<id>``, as long as that fits the
    header (printable ASCII without spaces or ``--``, at most 200 characters). Any other channel
    name is valid for a channel, so it is written percent-encoded, cut short and followed by a
    hash of the whole name, which keeps ids of different channels apart."""
    plain = f"{channel}-{message_id}"
    if len(plain) <= 200 and plain.isascii() and plain.isprintable() and " " not in plain and "--" not in plain:
        return plain
    import hashlib
    from urllib.parse import quote

    encoded = quote(channel, safe="").replace("-", "%2D")[:120]
    digest = hashlib.sha256(channel.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{encoded}~{digest}-{message_id}"


class Channel:
    """A named channel on a backend, optionally viewed as one consumer group.

    Obtain with ``coord.channel(name)``; ``channel.group(name)`` gives a consumer group: every
    group sees every message sent after it was created, and within a group each message goes to
    one consumer. Once a channel has groups, messages go to the groups only.
    """

    def __init__(self, backend: "Backend", name: str, group: str = "", **settings: Any) -> None:
        if not isinstance(name, str) or not name or "\x00" in name or not is_text(name):
            raise ChannelError(f"invalid channel name {name!r}", recover="use a non-empty string of valid text "
                               "(no NUL, no lone surrogate) as the name", setting="name", value=name)
        self._backend = backend
        self.name = name
        self.group_name = group
        if any(value is not None for value in settings.values()):
            self.configure(**settings)

    # -- configuration ----------------------------------------------------------------------

    @property
    def config(self) -> ChannelConfig:
        return self._backend.channel_config(self.name)

    def configure(
        self, *, visibility_timeout: float | None = None, max_attempts: int | None = None,
        dedup_ttl: float | None = None, durability: Durability | None = None, sla: float | None = None,
        retention: float | None = None,
    ) -> ChannelConfig:
        """Change the given settings of the channel (shared by every process); the others keep
        their stored values, even if another process changes them at the same time. Durations are
        finite seconds >= 0; a bad value raises ChannelError and changes nothing."""
        if durability not in (None, "durable", "fast"):
            raise ChannelError(f"durability must be 'durable' or 'fast', not {durability!r}",
                               recover="pass durability='durable' or durability='fast'",
                               setting="durability", value=durability)
        if max_attempts is not None:
            check_count("max_attempts", max_attempts)
        for setting, value in (("visibility_timeout", visibility_timeout), ("dedup_ttl", dedup_ttl),
                               ("sla", sla), ("retention", retention)):
            check_seconds(setting, value, optional=True)
        changes = {
            "visibility_timeout": visibility_timeout, "max_attempts": max_attempts, "dedup_ttl": dedup_ttl,
            "durable": None if durability is None else durability == "durable", "sla": sla,
            "retention": retention,
        }
        return self._backend.configure_channel(
            self.name, {name: value for name, value in changes.items() if value is not None})

    def group(self, name: str) -> "Channel":
        """The consumer group ``name`` of this channel (created if new)."""
        check_text("group name", name)
        self._backend.add_group(self.name, name)
        return Channel(self._backend, self.name, name)

    def dead_letters(self) -> "Channel":
        """The channel that holds messages which exhausted ``max_attempts``."""
        return Channel(self._backend, f"{self.name}.dead")

    # -- producing --------------------------------------------------------------------------

    def send(self, payload: Any, key: str | None = None, delay: float = 0.0,
             deadline: float | None = None) -> str:
        """Append one message; returns its id. A ``key`` already sent within the dedup window is
        not enqueued again (the original id is returned). ``delay`` hides it for that many
        seconds; ``deadline`` (seconds from now) is when it must have been acknowledged, after
        which liveness reports it overdue."""
        if key is not None or deadline is not None or type(delay) is not float or delay != 0.0:
            return self.send_many([(payload, key)], delay=delay, deadline=deadline)[0]
        # The plain send without the batch's per-item work (same checks, same record).
        data, encoding = _encode(payload)
        return str(self._backend.send_messages(self.name, [(data, encoding, None, 0.0, None)])[0][0])

    def send_many(self, items: Iterable[Any], delay: float = 0.0, deadline: float | None = None) -> list[str]:
        """Append many messages in one transaction (one fsync). Items are payloads or
        ``(payload, key)`` pairs."""
        if isinstance(items, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(items, Iterable):
            # Iterating these would enqueue their characters, byte values or keys, one message each.
            raise ChannelError(f"send_many() takes a list of payloads or (payload, key) pairs, not "
                               f"{type(items).__name__}",
                               recover="wrap a single payload in a list, or use send() for one message",
                               value=items)
        check_seconds("delay", delay)
        check_seconds("deadline", deadline, optional=True)
        now = self._backend.now()
        rows = []
        for item in items:
            if isinstance(item, tuple) and len(item) != 2:
                # Unpacking it raised a bare ValueError; a tuple is the pair, never a payload.
                raise ChannelError(f"send_many() items are payloads or (payload, key) pairs, not a tuple of "
                                   f"{len(item)}", recover="send a tuple payload as a list, e.g. [list(item)]",
                                   value=item)
            payload, key = item if isinstance(item, tuple) else (item, None)
            check_text("key", key, optional=True)
            data, encoding = _encode(payload)
            rows.append((data, encoding, key, delay, now + deadline if deadline is not None else None))
        if not rows:
            return []
        return [str(message_id) for message_id, _ in self._backend.send_messages(self.name, rows)]

    # -- consuming --------------------------------------------------------------------------

    def receive(self, consumer: str, visibility_timeout: float | None = None, wait: float = 0.0) -> Delivery | None:
        """Lease the next visible message to ``consumer``, or None (after polling up to ``wait``
        seconds). Acknowledge it with :meth:`ack` before ``visibility_timeout`` passes, or it is
        delivered again."""
        if visibility_timeout is None and wait == 0 and type(wait) in (float, int):
            # One look with the channel's timeout: receive_many's work without its checks of
            # arguments that are not given (the same record either way), and the Delivery made
            # straight from the backend's fields.
            check_text("consumer", consumer)
            return self._backend.receive_one(self.name, self.group_name, consumer, self._delivered)
        batch = self.receive_many(consumer, 1, visibility_timeout, wait)
        return batch[0] if batch else None

    def receive_many(self, consumer: str, max_messages: int = 10, visibility_timeout: float | None = None,
                     wait: float = 0.0) -> list[Delivery]:
        check_text("consumer", consumer)
        check_count("max_messages", max_messages)
        check_seconds("visibility_timeout", visibility_timeout, optional=True)
        check_seconds("wait", wait)
        timeout = visibility_timeout if visibility_timeout is not None else self.config.visibility_timeout
        if not wait:  # one look, no polling
            return [self._delivery(record) for record in self._backend.receive_messages(
                self.name, self.group_name, consumer, timeout, max_messages)]
        deadline = time.monotonic() + wait
        pause = 0.005
        while True:
            records = self._backend.receive_messages(self.name, self.group_name, consumer, timeout, max_messages)
            if records or time.monotonic() >= deadline:
                return [self._delivery(record) for record in records]
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.1)

    def _delivery(self, record: MessageRecord) -> Delivery:
        return self._delivered(record.id, record.key, record.payload, record.encoding, record.attempts,
                               record.receipt or "", record.consumer or "", record.available_at)

    def _delivered(self, message_id: int, key: str | None, payload: bytes, encoding: str, attempt: int,
                   receipt: str, consumer: str, visible_at: float) -> Delivery:
        # Positional, every field in order: the record types' fast construction path.
        return Delivery(str(message_id), self.name, json.loads(payload) if encoding == "json" else bytes(payload),
                        attempt, receipt, consumer, key, visible_at, self.group_name or None)

    def _check_mine(self, delivery: object) -> None:
        if (type(delivery) is Delivery and delivery.channel == self.name  # type: ignore[attr-defined]
                and (delivery.group or "") == self.group_name):  # type: ignore[attr-defined]
            return  # the usual case, decided in one test
        if not isinstance(delivery, Delivery):
            raise ChannelError(
                f"expected a Delivery (from receive() or process()), not {type(delivery).__name__}",
                recover="pass the Delivery that receive() returned; receive() returns None when the "
                        "channel is empty, so check for None first", value=delivery)
        if delivery.channel != self.name or (delivery.group or "") != self.group_name:
            raise ChannelError(
                f"delivery of {delivery.channel!r}/{delivery.group!r} handed to channel "
                f"{self.name!r}/{self.group_name!r}", recover="ack on the channel (and group) it came from",
                value=delivery)

    def _stale(self, delivery: Delivery, what: str) -> StaleReceipt:
        return StaleReceipt(
            f"cannot {what} message {delivery.message_id} on {self.name!r}: its receipt is stale "
            "(the visibility timeout passed and it was redelivered, or it was already acknowledged)",
            channel=self.name, message_id=delivery.message_id, receipt=delivery.receipt)

    def ack(self, delivery: Delivery) -> None:
        """Acknowledge: the message is done and will not be delivered again. Raises StaleReceipt."""
        self._check_mine(delivery)
        if not self._backend.ack_messages(self.name, [(int(delivery.message_id), self.group_name,
                                                       delivery.receipt)])[0]:
            raise self._stale(delivery, "acknowledge")

    def ack_many(self, deliveries: Iterable[Delivery]) -> None:
        """Acknowledge several deliveries in one transaction; raises StaleReceipt (after acking
        the valid ones) if any receipt was stale."""
        if isinstance(deliveries, Delivery) or not isinstance(deliveries, Iterable):
            raise ChannelError(f"ack_many() takes a list of deliveries, not {type(deliveries).__name__}",
                               recover="pass a list of Delivery objects (or use ack() for one)", value=deliveries)
        deliveries = list(deliveries)
        for delivery in deliveries:
            self._check_mine(delivery)
        results = self._backend.ack_messages(
            self.name, [(int(d.message_id), self.group_name, d.receipt) for d in deliveries])
        stale = [d for d, ok in zip(deliveries, results) if not ok]
        if stale:
            raise self._stale(stale[0], "acknowledge")

    def nack(self, delivery: Delivery, delay: float = 0.0) -> None:
        """Give the message back: visible again after ``delay`` seconds. Raises StaleReceipt."""
        self._check_mine(delivery)
        check_seconds("delay", delay)
        if not self._backend.nack_message(self.name, int(delivery.message_id), self.group_name,
                                          delivery.receipt, delay):
            raise self._stale(delivery, "nack")

    def extend(self, delivery: Delivery, seconds: float) -> None:
        """Keep the message invisible for ``seconds`` more from now. Raises StaleReceipt if its
        timeout already passed."""
        self._check_mine(delivery)
        check_seconds("seconds", seconds)
        if not self._backend.extend_message(self.name, int(delivery.message_id), self.group_name,
                                            delivery.receipt, seconds):
            raise self._stale(delivery, "extend")

    # -- exactly-once effects ---------------------------------------------------------------

    def effect_key(self, delivery: Delivery) -> str:
        """The identity of a message's effect: ``<send key>#<id>``, or ``id:<id>`` without a key.

        It includes the id on purpose: a key sent again after the dedup window is accepted as a
        new message (with a new id), and that message's work must not be skipped as done."""
        self._check_mine(delivery)
        return effect_key(delivery.key, int(delivery.message_id))

    @contextmanager
    def process(
        self, consumer: str, *, visibility_timeout: float | None = None, wait: float = 0.0,
        seen: Callable[[str], bool] | None = None, effect_ttl: float = DEFAULT_EFFECT_TTL,
    ) -> Iterator[Delivery | None]:
        """Receive one message, run the block, acknowledge on success, nack on exception.

        Yields None when no message is available. What it guarantees, precisely:

        - Every message ``send()`` accepted reaches a block (or, after ``max_attempts``
          deliveries, the dead-letter channel). A block that raises nacks it: it comes back. So
          does an interrupt (KeyboardInterrupt) landing anywhere in ``process()`` after its
          receive returned, up to the ack's commit; one landing inside the receive loses the
          delivery with its receipt, and the message comes back after its visibility timeout.
        - A message whose effect is recorded (:meth:`effect_key`: its key *and* id) is acked and
          skipped instead of run again. By default the record lives in this backend and is written
          when the block returns: in the ack's transaction, or, if the receipt went stale
          meanwhile (the visibility timeout passed; StaleReceipt is then raised after the block),
          on its own, so a redelivery that has not started yet is skipped.
        - Not guaranteed: a redelivery that starts while the first block is still running (its
          visibility timeout ran out) runs the block a second time, and a crash after the block's
          side effects but before its record repeats them. The block's own side effects are at
          least once. For exactly once, make them idempotent, or record ``effect_key(d)`` in the
          same transaction as the effect in your own store and pass ``seen=`` to look it up there.
        """
        check_text("consumer", consumer)
        check_seconds("effect_ttl", effect_ttl)
        if seen is not None and not callable(seen):
            # Found out only when called, after the receive: each try would use up one of the
            # message's attempts, and max_attempts of them would dead-letter it.
            raise ChannelError(f"seen must be a function of the effect key, not {type(seen).__name__}",
                               recover="pass seen=lambda key: <is key recorded in your store>, or leave it out",
                               setting="seen", value=seen)
        scope = self._effect_scope()
        check = seen or (lambda key: self._backend.effect_seen(scope, key))
        while True:
            delivery = self.receive(consumer, visibility_timeout, wait)
            if delivery is None:
                yield None
                return
            try:
                if not check(self.effect_key(delivery)):
                    break
                log("channels", DEBUG, "message %s on %r is done already (effect %s recorded): acked, not run",
                    delivery.message_id, self.name, self.effect_key(delivery))
                self.ack(delivery)
            except StaleReceipt:
                pass  # someone else holds it now; skipping is still right
            except BaseException:
                self._give_back(delivery)
                raise
        try:
            yield delivery
            acked = self._backend.ack_messages(
                self.name, [(int(delivery.message_id), self.group_name, delivery.receipt)],
                effect_ttl=effect_ttl if seen is None else None, effect_scope=scope)
        except BaseException:
            self._give_back(delivery)  # after an ack that committed, a stale receipt: a no-op
            raise
        if not acked[0]:
            raise self._stale(delivery, "acknowledge")

    def _give_back(self, delivery: Delivery) -> None:
        """Nack a delivery that ``process()`` will not finish (its block raised, or an interrupt
        landed around it): visible again now, not after its visibility timeout, since no caller
        holds its receipt any more."""
        try:
            self.nack(delivery)
        except StaleReceipt:
            pass  # acked already, or redelivered after its timeout: nothing to give back

    def _effect_scope(self) -> str:
        return f"{self.name}/{self.group_name}" if self.group_name else self.name

    # -- file consumers ---------------------------------------------------------------------

    def materialize(self, delivery: Delivery, path: str, *, root: str | None = None, force: bool = False) -> str:
        """Write ``delivery`` as one file (e.g. ``next_task.md``) for a consumer that can only read
        files: atomically, with the message id in a header line, and refusing (``SlotOccupied``)
        to overwrite a file that still holds an unconsumed message; the same delivery again (a
        retry after an interrupt, or a redelivery) finds itself there and returns the path.
        Acknowledge the delivery once the file's consumer has done the work (see
        :func:`agent_coherence.spool.consume_materialized`)."""
        from .spool import materialize

        self._check_mine(delivery)
        payload = delivery.payload
        data = bytes(payload) if isinstance(payload, (bytes, bytearray)) else (
            payload.encode("utf-8") if isinstance(payload, str) else json.dumps(payload, indent=2).encode("utf-8"))
        return materialize(data, path, message_id=_slot_id(self.name, delivery.message_id), root=root, force=force)

    # -- observation ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """depth (= ready + in_flight + delayed), ready, in_flight, delayed, oldest_ready_age
        (seconds) and per-group figures."""
        return self._backend.channel_stats(self.name)

    def __repr__(self) -> str:
        group = f" group={self.group_name!r}" if self.group_name else ""
        return f"<Channel {self.name!r}{group}>"
