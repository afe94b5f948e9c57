"""Channel calls given the wrong types, and channel settings out of range, are refused with a
typed ChannelError that says what was expected, and change nothing."""

from __future__ import annotations

import pytest

from agent_coherence.errors import ChannelError



@pytest.mark.parametrize("call", [
    lambda ch: ch.ack(None),
    lambda ch: ch.ack("1"),
    lambda ch: ch.nack(None),
    lambda ch: ch.extend(None, 5),
    lambda ch: ch.ack_many(None),
    lambda ch: ch.effect_key(None),
])
def test_a_channel_call_given_something_that_is_not_a_delivery_says_so(coord, call):
    ch = coord.channel("typed")
    with pytest.raises(ChannelError) as caught:
        call(ch)
    assert "value" in caught.value.facts  # what was passed instead, as errors.py promises
    assert "Delivery" in caught.value.message or "deliveries" in caught.value.message
    assert "receive()" in caught.value.recover or "list" in caught.value.recover


@pytest.mark.parametrize("setting,value", [
    ("visibility_timeout", -1), ("visibility_timeout", float("nan")), ("visibility_timeout", "30"),
    ("dedup_ttl", float("inf")), ("dedup_ttl", -0.5), ("retention", -1), ("sla", float("-inf")),
    ("max_attempts", 0), ("max_attempts", 2.5), ("max_attempts", True), ("durability", "eventually"),
])
def test_invalid_channel_settings_are_refused_and_nothing_changes(coord, setting, value):
    ch = coord.channel("settings")
    before = ch.config
    with pytest.raises(ChannelError) as caught:
        ch.configure(**{setting: value})
    assert caught.value.recover
    assert caught.value.facts["setting"] == setting and caught.value.facts["value"] is value  # errors.py's facts
    with pytest.raises(ChannelError):
        coord.channel("settings", **{setting: value})
    assert ch.config == before


@pytest.mark.parametrize("call", [
    lambda ch: ch.send("x", delay=-1),
    lambda ch: ch.send("x", deadline=float("nan")),
    lambda ch: ch.send("x", key=42),
    lambda ch: ch.receive(None),
    lambda ch: ch.receive("c", visibility_timeout=-5),
    lambda ch: ch.receive_many("c", 0),
    lambda ch: ch.receive("c", wait=-1.0),
    lambda ch: ch.group(""),
    # a lone surrogate (a name decoded from bad bytes) raised a bare UnicodeEncodeError in the backend
    lambda ch: ch.send("x", key="k\udc80"),
    lambda ch: ch.receive("c\udc80"),
    lambda ch: ch.group("g\udc80"),
])
def test_invalid_arguments_to_channel_calls_are_refused(coord, call):
    ch = coord.channel("args")
    with pytest.raises(ChannelError):
        call(ch)
    assert ch.stats()["depth"] == 0


@pytest.mark.parametrize("items", ["abc", b"xy", bytearray(b"xy"), {"task": 1}, None, 5])
def test_send_many_given_one_payload_instead_of_a_list_is_refused_and_sends_nothing(coord, items):
    ch = coord.channel("batch")
    with pytest.raises(ChannelError) as caught:
        ch.send_many(items)
    assert "list" in caught.value.message and caught.value.recover
    assert ch.stats()["depth"] == 0
    assert ch.send_many([b"xy", ("abc", "k")]) == ["1", "2"]


@pytest.mark.parametrize("name", ["a b", "ünï", "my--tasks", "tasks-", "x" * 300, "tab\there"])
def test_materialize_works_for_any_valid_channel_name(coord, tmp_path, name):
    from agent_coherence.errors import SlotOccupied
    from agent_coherence.spool import consume_materialized

    ch = coord.channel(name)
    ch.send("first")
    ch.send("second")
    first, second = ch.receive("c"), ch.receive("c")
    slot = tmp_path / "next_task.md"
    assert ch.materialize(first, slot) == str(slot)
    assert ch.materialize(first, slot) == str(slot)  # the same delivery again: found in place
    with pytest.raises(SlotOccupied):
        ch.materialize(second, slot)
    message_id, payload = consume_materialized(slot)
    assert payload == b"first" and message_id.endswith("-1")
    other = coord.channel(name + "!")  # a different channel never shares a slot id
    other.send("first")
    assert other.materialize(other.receive("c"), tmp_path / "other.md")
    assert consume_materialized(tmp_path / "other.md")[0] != message_id


def test_a_payload_over_the_databases_limit_says_so_instead_of_blaming_the_disk(coord):
    import sqlite3

    from agent_coherence.errors import BackendUnavailable

    ch = coord.channel("big")
    ch.send("warm")  # the connection is open
    coord.backend._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000)  # stands for the 1 GB default
    for send in (lambda: ch.send(b"x" * 20_000), lambda: ch.send_many([b"x" * 20_000, b"y"])):
        with pytest.raises(BackendUnavailable) as caught:
            send()
        assert "file" in caught.value.recover and "disk" not in caught.value.recover
    assert ch.stats()["depth"] == 1


@pytest.mark.parametrize("seen", [{"done": True}, True, "my_db.has_effect"])
def test_process_with_a_seen_that_is_not_callable_is_refused_before_receiving(coord, seen):
    ch = coord.channel("effects", max_attempts=2)
    ch.send("job")
    for _ in range(3):
        with pytest.raises(ChannelError) as caught:
            with ch.process("w", seen=seen):
                pass
        assert caught.value.setting == "seen"
    assert ch.dead_letters().stats()["depth"] == 0
    with ch.process("w") as delivery:
        assert delivery.payload == "job" and delivery.attempt == 1


@pytest.mark.parametrize("item", [(), ("only-a-payload",), ("payload", "key", "extra")])
def test_send_many_given_a_tuple_that_is_not_a_payload_key_pair_is_refused_and_sends_nothing(coord, item):
    ch = coord.channel("pairs")
    with pytest.raises(ChannelError) as caught:
        ch.send_many([b"first", item])
    assert "(payload, key)" in caught.value.message and "list" in caught.value.recover
    assert caught.value.facts["value"] == item
    assert ch.stats()["depth"] == 0


@pytest.mark.parametrize("payload", [float("nan"), {"score": float("inf")}, [1.0, float("-inf")]])
def test_a_payload_json_cannot_hold_is_refused_and_nothing_is_sent(coord, payload):
    """json.dumps would write NaN / Infinity, which no strict JSON reader (nor another language's
    consumer) accepts: the message could be sent and never read."""
    ch = coord.channel("finite")
    with pytest.raises(ChannelError, match="finite numbers only"):
        ch.send(payload)
    with pytest.raises(ChannelError):
        ch.send_many([{"ok": 1}, payload])
    assert ch.receive(consumer="c") is None


@pytest.mark.parametrize("name", ["", "a\x00b", "tasks\udc80", 7, None])
def test_a_channel_name_no_backend_can_store_is_refused(coord, name):
    with pytest.raises(ChannelError, match="invalid channel name") as caught:
        coord.channel(name)
    assert caught.value.facts == {"setting": "name", "value": name}  # as errors.py promises
    assert coord.backend.list_channels() == []
