"""Per-operation cost of a channel must not grow with its depth.

Two databases side by side, one channel each: 1k messages deep and 100k deep. Rounds alternate
between them (so machine noise hits both alike); each round times receive + ack of one message
at a time, then refills what it took, so the depth stays put. The assertion is on the ratio of the
medians, never on a time. ``fast`` mode keeps fsync noise out of a CPU-and-index measurement.
With ``retention`` the acknowledged messages stay in the table: the ack's pruning of expired ones
must not scan them.
"""

from __future__ import annotations

import statistics
import time

import pytest

from agent_coherence import Coordinator

SMALL, LARGE = 1_000, 100_000
ROUNDS = 21
OPS_PER_ROUND = 200
MAX_RATIO = 1.5


def _fill(ch, depth: int) -> None:
    for start in range(0, depth, 5000):
        ch.send_many([b"m" * 100] * min(5000, depth - start))


def _round(ch) -> float:
    """Median ns of receive + ack over one round; the round's messages are sent back after."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(OPS_PER_ROUND):
        start = clock()
        delivery = ch.receive("scale")
        ch.ack(delivery)
        samples.append(clock() - start)
    ch.send_many([b"m" * 100] * OPS_PER_ROUND)
    return statistics.median(samples)


@pytest.mark.slow
@pytest.mark.parametrize("retention", [0.0, 3600.0])
def test_receive_and_ack_cost_does_not_grow_from_1k_to_100k_deep(tmp_path, retention):
    coords = {depth: Coordinator.open(tmp_path / f"d{depth}") for depth in (SMALL, LARGE)}
    try:
        channels = {depth: c.channel("deep", durability="fast", retention=retention) for depth, c in coords.items()}
        for depth, ch in channels.items():
            _fill(ch, depth)
            _round(ch)  # warm the caches of both alike
        medians: dict[int, list[float]] = {SMALL: [], LARGE: []}
        for number in range(ROUNDS):
            order = (SMALL, LARGE) if number % 2 == 0 else (LARGE, SMALL)
            for depth in order:
                medians[depth].append(_round(channels[depth]))
        for depth, ch in channels.items():
            assert ch.stats()["ready"] == depth  # the depth really was held
        small, large = statistics.median(medians[SMALL]), statistics.median(medians[LARGE])
        ratio = large / small
        print(f"\nretention={retention}: receive+ack {small / 1000:.0f} us at 1k, {large / 1000:.0f} us at 100k: "
              f"ratio {ratio:.2f}")
        assert ratio <= MAX_RATIO
    finally:
        for coord in coords.values():
            coord.close()
