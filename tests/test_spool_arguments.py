"""Spool calls given the wrong types are refused with a ChannelError that says what was expected,
and write nothing: ``bytes(5)`` would otherwise have been a message of five NUL bytes."""

from __future__ import annotations

import os

import pytest

from agent_coherence.errors import ChannelError
from agent_coherence.spool import Spool


@pytest.mark.parametrize("data", [5, [1, 2], None, 2.5, {"a": 1}])
def test_put_of_something_that_is_not_bytes_is_refused_and_writes_nothing(tmp_path, data):
    spool = Spool(tmp_path / "spool")
    with pytest.raises(ChannelError) as caught:
        spool.put(data)
    assert "bytes-like or str" in caught.value.message and caught.value.recover
    assert spool.depth() == 0 and os.listdir(spool.tmp_dir) == []
    spool.put(bytearray(b"ok"))
    assert spool.claim("c").data == b"ok"


@pytest.mark.parametrize("settings", [
    {"claim_timeout": "5"}, {"claim_timeout": None}, {"claim_timeout": float("inf")},
    {"claim_timeout": float("nan")}, {"rotate_every": None}, {"batch_size": "10"}, {"claim_timeout": True},
])
def test_bad_spool_settings_are_a_channel_error(tmp_path, settings):
    with pytest.raises(ChannelError) as refused:
        Spool(tmp_path / "spool", **settings)
    assert not (tmp_path / "spool").exists()
    [(setting, value)] = settings.items()  # the facts name the setting, as for a channel's settings
    assert refused.value.setting == setting and refused.value.value is value
    assert str(refused.value).startswith(f"{setting} must be ")


def test_a_spool_on_a_file_is_a_channel_error_that_names_it(tmp_path):
    path = tmp_path / "file"
    path.write_bytes(b"x")
    for where in (path, path / "sub"):
        with pytest.raises(ChannelError) as caught:
            Spool(where)
        assert str(where) in caught.value.message and caught.value.recover
    assert path.read_bytes() == b"x"


@pytest.mark.parametrize("action", ["ack", "release"])
def test_ack_or_release_of_none_says_claim_returned_none(tmp_path, action):
    spool = Spool(tmp_path / "spool")
    with pytest.raises(ChannelError) as caught:
        getattr(spool, action)(spool.claim("c"))
    assert "Claimed" in caught.value.message and "None" in caught.value.recover


@pytest.mark.parametrize("payload", ["text", 5, None])
def test_materialize_of_something_that_is_not_bytes_is_refused_before_creating_directories(tmp_path, payload):
    from agent_coherence.spool import materialize

    with pytest.raises(ChannelError):
        materialize(payload, tmp_path / "a" / "b" / "next.md", message_id="m1")
    assert os.listdir(tmp_path) == []


def test_materialize_or_consume_on_a_directory_is_a_channel_error(tmp_path):
    from agent_coherence.spool import consume_materialized, materialize

    for call in (lambda: materialize(b"x", tmp_path, message_id="m1"), lambda: consume_materialized(tmp_path)):
        with pytest.raises(ChannelError) as caught:
            call()
        assert "directory" in caught.value.message and caught.value.recover
    assert os.listdir(tmp_path) == []
