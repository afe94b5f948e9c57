"""The public value types: one type per concept, shared with the backend, immutable, and light to
import; and the lease keys the Coordinator remembers."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import agent_coherence
from agent_coherence import Coordinator, PathOutsideRoot
from agent_coherence.backends.records import JournalRecord, LeaseRecord, VersionRecord
from agent_coherence.leases import LeaseKeys

from conftest import FakeClock

PUBLIC_TYPES = ("Lease", "WriteReceipt", "Snapshot", "VersionInfo", "Event", "Message", "Delivery", "Anomaly")


def samples(coord: Coordinator) -> dict[str, Any]:
    """One real instance of each public type, made the way users get them."""
    lease = coord.acquire("a.txt", holder="w", ttl=30)
    receipt = coord.write("a.txt", b"one", lease=lease)
    channel = coord.channel("jobs")
    channel.send({"n": 1})
    delivery = channel.receive("c")
    assert delivery is not None
    return {
        "Lease": lease, "WriteReceipt": receipt, "Snapshot": coord.read("a.txt"),
        "VersionInfo": coord.version("a.txt"), "Event": coord.journal.history("a.txt")[-1],
        "Message": agent_coherence.Message(id="1", channel="jobs", payload={"n": 1}, enqueued_at=1.0,
                                           available_at=1.0),
        "Delivery": delivery,
        "Anomaly": agent_coherence.Anomaly(kind="zero_work", subject="w", detail="idle", since=1.0,
                                           facts={"n": 0}),
    }


def test_the_public_types_are_the_backends_records(coord: Coordinator) -> None:
    assert agent_coherence.Lease is LeaseRecord
    assert agent_coherence.VersionInfo is VersionRecord
    assert agent_coherence.Event is JournalRecord
    lease = coord.acquire("a.txt", holder="w", ttl=30)
    stored = coord.backend.get_lease("a.txt")
    assert type(lease) is type(stored) is agent_coherence.Lease
    assert (lease.key, lease.holder, lease.fence, lease.acquired_at, lease.expires_at) == (
        stored.key, stored.holder, stored.fence, stored.acquired_at, stored.expires_at)
    coord.write("a.txt", b"x", lease=lease)
    assert coord.version("a.txt") == coord.backend.get_version("a.txt")
    assert coord.journal.history("a.txt") == list(coord.backend.journal_entries(key="a.txt"))


@pytest.mark.parametrize("name", PUBLIC_TYPES)
def test_each_public_type_is_immutable_and_compares_by_value(coord: Coordinator, name: str) -> None:
    value = samples(coord)[name]
    cls: Any = getattr(agent_coherence, name)
    assert type(value) is cls
    field = cls.__slots__[1]  # a str field in every type
    before = getattr(value, field)
    for attempt in (lambda: setattr(value, field, "changed"), lambda: delattr(value, field),
                    lambda: setattr(value, "extra", 1)):
        with pytest.raises(AttributeError):
            attempt()
    assert getattr(value, field) == before and not hasattr(value, "extra")
    copy = pickle.loads(pickle.dumps(value))
    assert copy == value and copy is not value
    if not any(isinstance(v, dict) for v in value.model_dump().values()):
        assert hash(copy) == hash(value)  # a dict field (payload, facts) is unhashable, as in pydantic
    assert repr(copy) == repr(value) and repr(value).startswith(f"{name}({cls.__slots__[0]}=")
    changed = value.model_copy(update={field: "changed"})
    assert getattr(changed, field) == "changed" and getattr(value, field) == before and changed != value
    assert dataclasses.replace(value, **{field: "changed"}) == changed
    dumped = value.model_dump()
    assert list(dumped) == list(cls.__slots__) and cls(**dumped) == value


def test_a_dumped_dict_field_is_a_copy() -> None:
    anomaly = agent_coherence.Anomaly(kind="zero_work", subject="w", detail="idle", since=1.0, facts={"n": 0})
    anomaly.model_dump()["facts"]["n"] = 5
    assert anomaly.facts == {"n": 0}


def test_a_receipt_round_trips_through_json(coord: Coordinator) -> None:
    receipt = coord.write("a.txt", b"one", holder="w")
    assert agent_coherence.WriteReceipt(**json.loads(receipt.model_dump_json())) == receipt


def test_an_anomaly_of_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown anomaly kind 'zero-work'"):
        agent_coherence.Anomaly(kind="zero-work", subject="w", detail="", since=0.0)


def test_importing_the_public_types_loads_no_pydantic_typing_or_dataclasses() -> None:
    """The types the hook shares with the public API must stay as light as the hook path."""
    probe = ("import sys, json\nimport agent_coherence.models\n"
             "print(json.dumps([m for m in ('pydantic', 'typing', 'dataclasses') if m in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_a_lease_carries_the_ttl_asked_for(coord: Coordinator, clock: FakeClock) -> None:
    lease = coord.acquire("a.txt", holder="w", ttl=7.5)
    assert lease.ttl == 7.5 and lease.expires_at == clock.t + 7.5
    clock.advance(5)
    again = coord.acquire("a.txt", holder="w", ttl=0.1)  # re-entry keeps the later expiry
    assert (again.fence, again.ttl, again.acquired_at, again.expires_at) == (lease.fence, 0.1, lease.acquired_at,
                                                                            lease.expires_at)
    renewed = coord.renew(lease, ttl=3)
    assert (renewed.ttl, renewed.expires_at) == (3.0, clock.t + 3)
    assert coord.renew(renewed).ttl == 3.0
    [listed] = coord.leases()
    assert listed.ttl == listed.expires_at - listed.acquired_at == 8.0  # storage keeps the span only
    keeper = coord.keep_alive(renewed)
    try:
        clock.advance(1)
        keeper.renew_now()
        assert keeper.lease == agent_coherence.Lease("a.txt", "w", lease.fence, lease.acquired_at, clock.t + 3, 3.0)
    finally:
        keeper.stop()


def test_lease_keys_are_remembered_for_names_and_bounded(root: Path) -> None:
    keys = LeaseKeys(str(root.resolve()), size=3)
    assert keys("./plans//plan.md") == "plans/plan.md" and keys("langgraph:thread/1") == "langgraph:thread/1"
    for refused in ("../outside.txt", ".agent-coherence/state.db", ""):
        for _ in range(2):  # a refusal is never remembered: it is refused every time
            with pytest.raises(PathOutsideRoot):
                keys(refused)
    assert keys(Path("b.txt")) == "b.txt"  # not a str: resolved, not remembered
    keys("c.txt")
    keys("d.txt")  # the fourth name: the table was full and starts again
    assert len(keys._known) <= 3


def test_a_remembered_lease_key_does_not_weaken_the_write_path(coord: Coordinator, tmp_path: Path) -> None:
    """The lease is taken on ``docs/a.txt``; then ``docs`` is swapped for a symlink to a directory
    outside the root. Taking the lease again is answered from the remembered key (a lease is a
    name), but the write resolves and walks the path again and refuses it: nothing lands outside."""
    root = Path(coord.root)
    (root / "docs").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    lease = coord.acquire("docs/a.txt", holder="w")
    coord.release(lease)
    os.rmdir(root / "docs")
    os.symlink(outside, root / "docs")
    with pytest.raises(PathOutsideRoot):
        coord.key("docs/a.txt")  # uncached: refused at once
    lease = coord.acquire("docs/a.txt", holder="w")
    assert lease.key == "docs/a.txt"
    with pytest.raises(PathOutsideRoot):
        coord.write("docs/a.txt", b"escaped", lease=lease)
    with pytest.raises(PathOutsideRoot):
        coord.write("docs/a.txt", b"escaped", holder="w")
    assert list(outside.iterdir()) == []
