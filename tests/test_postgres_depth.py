"""Channel figures and liveness on PostgreSQL read counters and index ranges, not the messages, and
give exactly what a scan of the messages gives.

The state machine of test_channel_depth.py runs here against a PostgreSQL schema (a fresh one per
example), compared after every step with the scan the backend ran before its counters
(pg_channel_scan.py). The work test counts the buffers PostgreSQL touches for the checks at two
depths: flat for ours, growing with the depth for the scan.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import invariant, run_state_machine_as_test

from agent_coherence import Coordinator
from agent_coherence.backends.postgres import split_url
from agent_coherence.backends.postgres_channel_depth import FIGURES_SQL
from agent_coherence.liveness import Liveness

from conftest import schema_url, use_fake_clock
from pg_channel_scan import SCAN_FIGURES, PostgresScanReference
from pg_server import drop_schema, fresh_schema
from test_channel_depth import ChannelFigures

TOLERANCE = 0.5  # seconds: the server's clock runs on between our read and the scan's


def close(ours: Any, scan: Any) -> bool:
    """Equal, except that times may differ by TOLERANCE (the server clock cannot be stopped)."""
    if isinstance(ours, dict) and isinstance(scan, dict):
        return ours.keys() == scan.keys() and all(close(ours[k], scan[k]) for k in ours)
    if isinstance(ours, list) and isinstance(scan, list):
        return len(ours) == len(scan) and all(close(a, b) for a, b in zip(ours, scan))
    if isinstance(ours, float) or isinstance(scan, float):
        return ours is not None and scan is not None and abs(ours - scan) <= TOLERANCE
    return bool(ours == scan)


def agrees_with_the_scan(ours: Callable[[], Any], scan: Callable[[], Any]) -> None:
    """The scan's answer equals ours read just before it or just after it.

    The server's clock runs on between two reads, so a delayed message can become ready, or a
    worker's grace run out, between ours and the scan's; reading ours on both sides of the scan
    brackets that one instant. A counter that is wrong differs on both sides."""
    before = ours()
    theirs = scan()
    if close(before, theirs):
        return
    after = ours()
    assert close(after, theirs), (before, theirs, after)


def anomalies(liveness: Liveness) -> list[dict[str, Any]]:
    """The anomalies without their text (which prints the times compared above)."""
    found = [{k: v for k, v in a.model_dump().items() if k != "detail"} for a in liveness.anomalies(report=False)]
    return sorted(found, key=lambda a: (a["kind"], a["subject"]))


@pytest.fixture
def server(pg_server: str) -> str:
    return pg_server


def test_figures_and_anomalies_match_a_scan(server, monkeypatch):
    schemas: list[str] = []

    class OnPostgres(ChannelFigures):
        def __init__(self) -> None:
            schemas.append(fresh_schema())
            monkeypatch.setenv("AGENT_COHERENCE_URL", schema_url(server, schemas[-1]))
            super().__init__()
            self.reference = Liveness(PostgresScanReference(self.coord.backend), zero_work_grace=1.0)

        @invariant()
        def figures_match_a_scan(self) -> None:
            backend = self.coord.backend
            reference = PostgresScanReference(backend)
            for name in ("plain", "grouped", "plain.dead"):
                agrees_with_the_scan(lambda: backend.channel_stats(name), lambda: reference.channel_stats(name))
            agrees_with_the_scan(lambda: anomalies(self.ours), lambda: anomalies(self.reference))

    try:  # as many examples as on SQLite: with 8, an ack trigger that forgot to subtract passed
        run_state_machine_as_test(OnPostgres, settings=settings(
            max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]))
    finally:
        for schema in schemas:
            drop_schema(server, schema)


def _buffers(url: str, sql: str, params: dict | tuple) -> int:
    """Shared buffers PostgreSQL touches to run ``sql`` (EXPLAIN ANALYZE BUFFERS): a count of the
    work, not a time."""
    conninfo, schema = split_url(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql.replace("@", f'"{schema}".'),
                            params).fetchone()[0]
    top = (plan if isinstance(plan, list) else json.loads(plan))[0]
    return int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0)) + int(
        top["Plan"].get("Shared Hit Blocks", 0)) + int(top["Plan"].get("Shared Read Blocks", 0))


def test_liveness_reads_the_same_rows_at_any_depth(tmp_path, server):
    work: dict[int, tuple[int, int]] = {}
    for depth in (500, 20_000):
        url = schema_url(server, fresh_schema())
        try:
            with Coordinator.open(tmp_path / str(depth), url=url) as coord:
                clock = use_fake_clock(coord)
                ch = coord.channel("watched", durability="fast", sla=1)
                ch.send_many(["m"] * depth)
                ch.send_many(["due"] * 3, deadline=0)
                coord.liveness.start("watcher", channels=["watched"])
                ch.receive_many("consumer", 3, visibility_timeout=0)
                clock.advance(10)
                ours = Liveness(coord.backend, zero_work_grace=0.0)
                scan = Liveness(PostgresScanReference(coord.backend), zero_work_grace=0.0)  # type: ignore[arg-type]
                assert close(anomalies(ours), anomalies(scan))
                assert {a["kind"] for a in anomalies(ours)} == {
                    "zero_work", "stale_channel", "overdue_delivery", "lease_expired_in_flight"}
                assert coord.backend.channel_stats("watched")["ready"] == depth + 3  # the timed-out 3 too
                with psycopg.connect(split_url(url)[0], autocommit=True) as conn:
                    conn.execute(f'ANALYZE "{split_url(url)[1]}".messages')
                work[depth] = (_buffers(url, FIGURES_SQL, {"channel": "watched", "groups": [""]}),
                               _buffers(url, SCAN_FIGURES, ("watched",)))
        finally:
            drop_schema(server, split_url(url)[1])
    (ours_small, scan_small), (ours_deep, scan_deep) = work[500], work[20_000]
    assert ours_deep <= ours_small + 12, work  # flat: index descents (one level deeper at most) and counters
    assert scan_deep > scan_small + 150, work  # the scan reads every message (20,000 rows: ~200 pages)


def test_every_path_that_changes_a_count_matches_the_scan(tmp_path, pg_url):
    """Sends (fanned out to groups, delayed, with deadlines), receives, acks with and without
    retention, nacks, timeouts and dead-letters, from several sessions: after each, the figures
    equal the scan's."""
    with Coordinator.open(tmp_path, url=pg_url) as coord:
        clock = use_fake_clock(coord)
        backend = coord.backend
        scan = PostgresScanReference(backend)
        plain = coord.channel("plain", max_attempts=2, visibility_timeout=5)
        kept = coord.channel("kept", retention=30, visibility_timeout=5)
        groups = [kept.group("g1"), kept.group("g2")]

        def check() -> None:
            for name in ("plain", "kept", "plain.dead"):
                ours, theirs = backend.channel_stats(name), scan.channel_stats(name)
                assert close(ours, theirs), (name, ours, theirs)

        plain.send_many(["a", "b", "c", "d"])
        plain.send("late", delay=3)
        kept.send_many(["x", "y", "z"], deadline=1)
        check()
        plain.ack_many(plain.receive_many("c1", 2))  # acked and deleted
        groups[0].ack(groups[0].receive("c1"))  # acked and kept (retention)
        check()
        plain.nack(plain.receive("c2"), delay=2)
        held = groups[1].receive_many("c2", 2)
        check()
        clock.advance(6)  # timeouts run out, the delay passes
        check()
        for _ in range(3):  # attempts run out: dead-lettered on the next receive
            for delivery in plain.receive_many("c3", 5, visibility_timeout=0):
                del delivery
            clock.advance(1)
        check()
        assert backend.channel_stats("plain.dead")["depth"] > 0
        groups[1].ack_many(held)  # stale receipts: nothing changes
        check()
