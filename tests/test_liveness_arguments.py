"""Liveness calls given bad values refuse them before storing anything: a worker row with a
heartbeat period that is not a number used to break every later anomalies() call (and with it
`agent-coherence status` and `watch`) in every process."""

from __future__ import annotations

import sqlite3

import pytest

from agent_coherence import Coordinator


@pytest.mark.parametrize("call", [
    lambda live: live.start("w", heartbeat_every="5"),
    lambda live: live.start("w", heartbeat_every=float("nan")),
    lambda live: live.start("w", heartbeat_every=-1),
    lambda live: live.start("w", channels="tasks"),
    lambda live: live.start("w", channels=[None]),
    lambda live: live.start(None),
    lambda live: live.start(""),
    lambda live: live.start("w\udc80"),  # a lone surrogate: a bare UnicodeEncodeError in the backend
    lambda live: live.assign("t\udc80", "w"),
    lambda live: live.assign("t", "w", deadline="10"),
    lambda live: live.assign("t", "w", deadline=float("nan")),
    lambda live: live.assign("t", None),
    lambda live: live.record_work("w", "5"),
    lambda live: live.record_work("w", -3),
    lambda live: live.heartbeat("w", work=1.5),
])
def test_a_bad_liveness_argument_is_refused_and_stores_nothing(coord, call):
    live = coord.liveness
    with pytest.raises((TypeError, ValueError)):
        call(live)
    assert coord.backend.list_workers(include_ended=True) == []
    assert coord.backend.list_assignments() == []
    live.start("w", channels=["tasks"], heartbeat_every=5)
    assert live.anomalies() == []


def test_channels_given_as_one_string_is_refused_with_the_fix(coord):
    with pytest.raises(TypeError) as caught:
        coord.liveness.start("w", channels="tasks")
    assert "channels=['tasks']" in str(caught.value)


def test_a_stored_heartbeat_period_that_is_not_a_number_does_not_break_the_checks(coord):
    coord.liveness.start("w", heartbeat_every=5)
    database = coord.backend.path
    coord.close()
    with sqlite3.connect(database) as raw:  # a row written before start() checked its values
        raw.execute("UPDATE workers SET info = replace(info, '5.0', '\"5\"')")
        assert '"heartbeat_every": "5"' in raw.execute("SELECT info FROM workers").fetchone()[0]
    with Coordinator.open(coord.root) as again:
        assert again.liveness.anomalies() == []


@pytest.mark.parametrize("setting, value, error", [
    ("zero_work_grace", "5", TypeError), ("zero_work_grace", -1, ValueError),
    ("zero_work_grace", float("nan"), ValueError), ("ended_window", None, TypeError),
    ("ended_window", float("inf"), ValueError), ("on_anomaly", "print", TypeError),
])
def test_a_bad_setting_is_refused_when_set_and_the_checks_keep_working(coord, setting, value, error):
    # A plain attribute took anything, and the wrong value surfaced only as a TypeError inside a
    # later anomalies() (and with it status and watch).
    live = coord.liveness
    before = getattr(live, setting)
    with pytest.raises(error, match=setting):
        setattr(live, setting, value)
    assert getattr(live, setting) == before
    live.start("w", channels=["tasks"])
    assert live.anomalies() == []
