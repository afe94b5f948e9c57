"""The value types: small immutable objects shared by the backend, the public API and the hook.

One type per concept: the lease the backend grants is the ``Lease`` the Coordinator returns and
the Claude Code hook reads (``LeaseRecord`` is the same class under its older name; likewise
``VersionRecord`` is ``VersionInfo`` and ``JournalRecord`` is ``Event``). The public types are
re-exported by :mod:`agent_coherence.models`.

They behave like frozen dataclasses (positional or keyword construction, defaults, equality by
type and fields, hashing, ``repr``, ``__match_args__``, pickling, refusal of assignment) but are
built without the ``dataclasses`` module, whose import (``inspect``, ``ast``, ...) would cost the
Claude Code hook more than its whole decision. ``dataclasses.asdict``, ``replace``, ``fields`` and
``is_dataclass`` still work on them: the field table those functions read is built on first use.
``_asdict()`` gives a field dict without that detour; ``model_dump()``, ``model_dump_json()`` and
``model_copy(update=...)`` keep working for code written when the public types were pydantic
models. Nothing here validates its fields: these objects are made by this package from values it
checked (outside input is checked where it enters, see :mod:`agent_coherence.arguments`).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    R = TypeVar("R", bound="Record")

_NO_DEFAULT = object()


class _DataclassFields:
    """``__dataclass_fields__`` on demand: made from a real dataclass with the same fields the
    first time the dataclasses module asks for it (so only code that uses it pays for it)."""

    def __get__(self, instance: object, owner: "type[Record]") -> dict[str, Any]:
        table: dict[str, Any] | None = owner.__dict__.get("_dataclass_table")
        if table is None:
            import dataclasses

            specs: list[tuple[Any, ...]] = []
            for name in owner.__slots__:
                default = owner._defaults.get(name, _NO_DEFAULT)
                if default is _NO_DEFAULT:
                    specs.append((name, "Any"))
                elif callable(default):
                    specs.append((name, "Any", dataclasses.field(default_factory=default)))
                else:
                    specs.append((name, "Any", dataclasses.field(default=default)))
            # keyword-only: a field with a default may come before one without (as in Delivery)
            shadow = dataclasses.make_dataclass(owner.__name__, specs, frozen=True, kw_only=True)
            table = {f.name: f for f in dataclasses.fields(shadow)}
            type.__setattr__(owner, "_dataclass_table", table)
        return table


class Record:
    """Base of the value types: subclasses list their fields in ``__slots__`` (in order) and their
    defaults in ``_defaults`` (a callable default is a factory, called per instance)."""

    __slots__: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}
    # The ``__set__`` of each field's slot, in field order, made per class at its first record
    # (not at import: the hook's start-up): a slot's own setter costs a third of what
    # ``object.__setattr__`` does, and records are made on every write.
    _setters: tuple[Callable[[Any, Any], None], ...] | None = None
    __dataclass_fields__ = _DataclassFields()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        setters = self._setters
        if setters is None:
            setters = _slot_setters(type(self))
        if not kwargs and len(args) == len(setters):  # the backends' way: every field, in order
            for set_field, value in zip(setters, args):
                set_field(self, value)
            return
        names = self.__slots__
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes {len(names)} positional arguments but {len(args)} were given")
        for set_field, value in zip(setters, args):
            set_field(self, value)
        for index in range(len(args), len(names)):
            name = names[index]
            if name in kwargs:
                setters[index](self, kwargs.pop(name))
                continue
            default = self._defaults.get(name, _NO_DEFAULT)
            if default is _NO_DEFAULT:
                raise TypeError(f"{type(self).__name__}() missing required argument: {name!r}")
            setters[index](self, default() if callable(default) else default)
        if kwargs:
            name = next(iter(kwargs))
            if name in names:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {name!r}")
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {name!r}")

    def _values(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def _asdict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def model_dump(self) -> dict[str, Any]:
        """The fields as a new dict (a dict-valued field is copied, so changing the result leaves
        this object as it was)."""
        return {name: dict(value) if isinstance(value, dict) else value for name, value in self._asdict().items()}

    def model_dump_json(self) -> str:
        """The fields as compact JSON (bytes as UTF-8 text)."""
        import json

        return json.dumps(self.model_dump(), separators=(",", ":"), default=_json_default)

    def model_copy(self: R, *, update: dict[str, Any] | None = None) -> R:
        """A copy with the fields in ``update`` replaced (unknown names are a TypeError)."""
        fields = self._asdict()
        if update:
            fields.update(update)
        return type(self)(**fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._values() == other._values()  # type: ignore[attr-defined]
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__qualname__}({fields})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise _frozen(self, name)

    def __delattr__(self, name: str) -> None:
        raise _frozen(self, name)

    def __reduce__(self) -> tuple:
        return (type(self), self._values())

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        setattr(cls, "__match_args__", cls.__slots__)  # mypy refuses a plain assignment to it
        cls._setters = None  # its own, made at its first record (see ``_slot_setters``)


def _slot_setters(cls: type[Record]) -> tuple[Callable[[Any, Any], None], ...]:
    setters = tuple(getattr(cls, name).__set__ for name in cls.__slots__)
    type.__setattr__(cls, "_setters", setters)
    return setters


def _frozen(record: Record, name: str) -> AttributeError:
    from dataclasses import FrozenInstanceError  # only on this error path

    return FrozenInstanceError(f"cannot assign to field {name!r} of {type(record).__name__}")


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class Lease(Record):
    """A single-writer lease on one artifact, as the backend granted it.

    ``fence`` only grows per artifact; a write under this lease is refused (LeaseLost) once a
    later fence exists or the lease expired. ``acquired_at`` and ``expires_at`` are the backend's
    clock (epoch seconds); ``expires_at`` as of the last acquire or renew. ``ttl`` is the
    time-to-live asked for at that acquire or renew (what renewal uses again); a lease read back
    from storage (``get_lease``, ``list_leases``), which does not keep it, gets the span from
    ``acquired_at`` to ``expires_at`` instead.
    """

    __slots__ = ("key", "holder", "fence", "acquired_at", "expires_at", "ttl")
    _defaults = {"ttl": None}
    if TYPE_CHECKING:
        key: str
        holder: str
        fence: int
        acquired_at: float
        expires_at: float
        ttl: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) == 6 and not kwargs:  # the backend's grant: every field, in order (its hot path)
            key, holder, fence, acquired_at, expires_at, ttl = args
            _set_key(self, key)
            _set_holder(self, holder)
            _set_fence(self, fence)
            _set_acquired_at(self, acquired_at)
            _set_expires_at(self, expires_at)
            _set_ttl(self, expires_at - acquired_at if ttl is None else ttl)
            return
        super().__init__(*args, **kwargs)
        if self.ttl is None:
            object.__setattr__(self, "ttl", self.expires_at - self.acquired_at)


# The slots' own setters: a Lease is made on every acquire, and these cost a third of what
# object.__setattr__ does per field.
_set_key, _set_holder, _set_fence, _set_acquired_at, _set_expires_at, _set_ttl = (
    Lease.__dict__[name].__set__ for name in Lease.__slots__)

LeaseRecord = Lease  # the name the backend protocol uses (one type, two names)


class VersionInfo(Record):
    """The version record of an artifact (no bytes). ``sha256`` None: the artifact was deleted
    through the layer."""

    __slots__ = ("key", "version", "sha256", "size", "writer", "fence", "updated_at")
    if TYPE_CHECKING:
        key: str
        version: int
        sha256: str | None
        size: int
        writer: str
        fence: int
        updated_at: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) == 7 and not kwargs:  # the backend's commit: every field, in order (its hot path)
            key, version, sha256, size, writer, fence, updated_at = args
            _set_version_key(self, key)
            _set_version(self, version)
            _set_version_sha256(self, sha256)
            _set_version_size(self, size)
            _set_writer(self, writer)
            _set_version_fence(self, fence)
            _set_updated_at(self, updated_at)
            return
        super().__init__(*args, **kwargs)


# A version record is made on every write: the slots' own setters, as for Lease.
(_set_version_key, _set_version, _set_version_sha256, _set_version_size, _set_writer, _set_version_fence,
 _set_updated_at) = (VersionInfo.__dict__[name].__set__ for name in VersionInfo.__slots__)

VersionRecord = VersionInfo  # the name the backend protocol uses (one type, two names)


class IntentRecord(Record):
    """A write in flight: recorded before the file is touched, resolved at commit or recovery.

    ``base_sha256``: the recorded hash the disk must still have (None: no record, or deleted).
    ``new_sha256`` None: a delete. ``auto_lease``: the lease was taken for this write alone and is
    released at commit.
    """

    __slots__ = ("key", "intent_id", "holder", "fence", "base_version", "base_sha256", "new_version",
                 "new_sha256", "size", "temp_path", "host", "pid", "pid_start", "created_at", "auto_lease")
    if TYPE_CHECKING:
        key: str
        intent_id: str
        holder: str
        fence: int
        base_version: int
        base_sha256: str | None
        new_version: int
        new_sha256: str | None
        size: int
        temp_path: str
        host: str
        pid: int
        pid_start: str
        created_at: float
        auto_lease: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) == 15 and not kwargs:  # the backend's begin_write: every field, in order (its hot path)
            (key, intent_id, holder, fence, base_version, base_sha256, new_version, new_sha256, size, temp_path,
             host, pid, pid_start, created_at, auto_lease) = args
            _set_intent_key(self, key)
            _set_intent_id(self, intent_id)
            _set_intent_holder(self, holder)
            _set_intent_fence(self, fence)
            _set_base_version(self, base_version)
            _set_base_sha256(self, base_sha256)
            _set_new_version(self, new_version)
            _set_intent_new_sha256(self, new_sha256)
            _set_intent_size(self, size)
            _set_intent_temp_path(self, temp_path)
            _set_intent_host(self, host)
            _set_intent_pid(self, pid)
            _set_intent_pid_start(self, pid_start)
            _set_created_at(self, created_at)
            _set_auto_lease(self, auto_lease)
            return
        super().__init__(*args, **kwargs)


# An intent is made on every write: the slots' own setters, as for Lease.
(_set_intent_key, _set_intent_id, _set_intent_holder, _set_intent_fence, _set_base_version, _set_base_sha256,
 _set_new_version, _set_intent_new_sha256, _set_intent_size, _set_intent_temp_path, _set_intent_host,
 _set_intent_pid, _set_intent_pid_start, _set_created_at, _set_auto_lease) = (
    IntentRecord.__dict__[name].__set__ for name in IntentRecord.__slots__)


class WriteRequest(Record):
    """What ``begin_write`` checks and records.

    With ``fence`` set, the caller's lease (holder, fence) must be live. Without it, the backend
    takes the lease for the write (``ttl``) or reuses a live lease of the same holder.
    ``expect_version`` (if not None) must equal the recorded version (0 = no record yet).
    """

    __slots__ = ("key", "holder", "new_sha256", "size", "temp_path", "host", "pid", "pid_start",
                 "fence", "ttl", "expect_version")
    _defaults = {"fence": None, "ttl": 30.0, "expect_version": None}
    if TYPE_CHECKING:
        key: str
        holder: str
        new_sha256: str | None
        size: int
        temp_path: str
        host: str
        pid: int
        pid_start: str
        fence: int | None
        ttl: float
        expect_version: int | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) == 11 and not kwargs:  # the coordinator's write: every field, in order (its hot path)
            key, holder, new_sha256, size, temp_path, host, pid, pid_start, fence, ttl, expect_version = args
            _set_request_key(self, key)
            _set_request_holder(self, holder)
            _set_request_new_sha256(self, new_sha256)
            _set_request_size(self, size)
            _set_request_temp_path(self, temp_path)
            _set_request_host(self, host)
            _set_request_pid(self, pid)
            _set_request_pid_start(self, pid_start)
            _set_request_fence(self, fence)
            _set_request_ttl(self, ttl)
            _set_expect_version(self, expect_version)
            return
        super().__init__(*args, **kwargs)


# A write request is made on every write: the slots' own setters, as for Lease.
(_set_request_key, _set_request_holder, _set_request_new_sha256, _set_request_size, _set_request_temp_path,
 _set_request_host, _set_request_pid, _set_request_pid_start, _set_request_fence, _set_request_ttl,
 _set_expect_version) = (WriteRequest.__dict__[name].__set__ for name in WriteRequest.__slots__)


class RefRecord(Record):
    """A named pointer, such as the head of a history: its ``value``, a ``version`` that every set
    bumps (1 for the first), and the ``holder`` and ``fence`` (0: none) of the last set."""

    __slots__ = ("name", "value", "version", "holder", "fence", "updated_at")
    if TYPE_CHECKING:
        name: str
        value: str
        version: int
        holder: str
        fence: int
        updated_at: float


class Event(Record):
    """One journal entry. ``prev_hash`` and ``hash`` chain it to the entry before. ``data_text``:
    the data exactly as the backend stores it, which is what the chain hashes (None: not known,
    ``encode_data(data)`` stands in for it)."""

    __slots__ = ("seq", "ts", "kind", "key", "holder", "data", "prev_hash", "hash", "data_text")
    _defaults = {"data": dict, "prev_hash": "", "hash": "", "data_text": None}
    if TYPE_CHECKING:
        seq: int
        ts: float
        kind: str
        key: str | None
        holder: str | None
        data: dict[str, Any]
        prev_hash: str
        hash: str
        data_text: str | None


JournalRecord = Event  # the name the backend protocol uses (one type, two names)


class WorkerRecord(Record):
    """A worker session as liveness sees it: when it started, when it was last seen, how much
    work it has done since it started."""

    __slots__ = ("worker", "started_at", "last_seen", "ended_at", "work_done", "info")
    _defaults = {"info": dict}
    if TYPE_CHECKING:
        worker: str
        started_at: float
        last_seen: float
        ended_at: float | None
        work_done: int
        info: dict[str, Any]


class AssignmentRecord(Record):
    """A task assigned to a worker, open until completed."""

    __slots__ = ("task_id", "worker", "assigned_at", "deadline", "completed_at", "info")
    _defaults = {"info": dict}
    if TYPE_CHECKING:
        task_id: str
        worker: str
        assigned_at: float
        deadline: float | None
        completed_at: float | None
        info: dict[str, Any]


class ChannelConfig(Record):
    """How a channel behaves; stored in the backend so every process agrees.

    ``sla``: an oldest ready message older than this is an anomaly. ``retention``: keep
    acknowledged messages this long (0: delete at ack).
    """

    __slots__ = ("name", "visibility_timeout", "max_attempts", "dedup_ttl", "durable", "sla", "retention")
    _defaults = {"visibility_timeout": 30.0, "max_attempts": 5, "dedup_ttl": 300.0, "durable": True,
                 "sla": None, "retention": 0.0}
    if TYPE_CHECKING:
        name: str
        visibility_timeout: float
        max_attempts: int
        dedup_ttl: float
        durable: bool
        sla: float | None
        retention: float


class MessageRecord(Record):
    """A message in a channel (one row per consumer group it was fanned out to).
    ``encoding``: "json" or "bytes"."""

    __slots__ = ("id", "channel", "group", "key", "payload", "encoding", "enqueued_at", "available_at",
                 "deadline", "attempts", "receipt", "consumer")
    if TYPE_CHECKING:
        id: int
        channel: str
        group: str
        key: str | None
        payload: bytes
        encoding: str
        enqueued_at: float
        available_at: float
        deadline: float | None
        attempts: int
        receipt: str | None
        consumer: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) == 12 and not kwargs:  # the backends' receive: every field, in order (its hot path)
            (message_id, channel, group, key, payload, encoding, enqueued_at, available_at, deadline, attempts,
             receipt, consumer) = args
            _set_id(self, message_id)
            _set_channel(self, channel)
            _set_group(self, group)
            _set_message_key(self, key)
            _set_payload(self, payload)
            _set_encoding(self, encoding)
            _set_enqueued_at(self, enqueued_at)
            _set_available_at(self, available_at)
            _set_deadline(self, deadline)
            _set_attempts(self, attempts)
            _set_receipt(self, receipt)
            _set_consumer(self, consumer)
            return
        super().__init__(*args, **kwargs)


# A message record is made on every receive: the slots' own setters, as for Lease.
(_set_id, _set_channel, _set_group, _set_message_key, _set_payload, _set_encoding, _set_enqueued_at,
 _set_available_at, _set_deadline, _set_attempts, _set_receipt, _set_consumer) = (
    MessageRecord.__dict__[name].__set__ for name in MessageRecord.__slots__)


CLOCK_KEY = "clock:channels"  # the journal key under which a backend records steps of its clock


def channel_stats(channel: str, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A channel's ``channel_stats`` from its groups' figures: the per-group figures, their totals
    and the oldest ready message's age over all groups. One spelling for both backends."""
    stats: dict[str, Any] = {"channel": channel, "groups": figures}
    # A delayed message (sent with a delay, or nacked with one) is neither ready nor in flight,
    # but it is in the channel: depth counts it.
    for name in ("ready", "in_flight", "delayed"):
        stats[name] = sum(g[name] for g in figures.values())
    stats["depth"] = stats["ready"] + stats["in_flight"] + stats["delayed"]
    ages = [g["oldest_ready_age"] for g in figures.values() if g["oldest_ready_age"] is not None]
    stats["oldest_ready_age"] = max(ages) if ages else None
    return stats


def effect_key(key: str | None, message_id: int) -> str:
    """The identity of one message's effect: its send key *and* its id (a key sent again after
    the dedup window is a new message, with a new id, whose effect is its own), or the id alone."""
    return f"{key}#{message_id}" if key is not None else f"id:{message_id}"


class IntentPending(Exception):
    """Raised by ``begin_write`` when an earlier write to the key is still unresolved.

    Not a public error: the coordinator decides whether the intent's writer is dead (recover it and
    retry) or alive (the key is busy).
    """

    def __init__(self, intent: IntentRecord) -> None:
        self.intent = intent
        super().__init__(f"write {intent.intent_id} to {intent.key!r} is unresolved")


def lost_reason(row: "tuple[Any, ...] | None", fence: int, current_holder: str | None, current_fence: int) -> str:
    """Why a lease is no longer live, from its row (holder first, fence second; None: no row).
    "expired" alone would send someone whose lease was released (by an inner ``with
    coord.lease`` of the same holder, say) looking for a slow step that never happened."""
    if current_holder is not None:
        return f"now held by {current_holder!r} (fence {current_fence})"
    if row is not None and row[1] != fence:
        return f"taken over (fence {row[1]}), and that lease has since " + ("been released" if row[0] is None
                                                                             else "expired")
    if row is not None and row[0] is None:
        return "released"
    return "expired"
