"""100k messages (20k for the baseline) through 4 consumer processes killed with SIGKILL and restarted.

The effects go to a separate SQLite store: each effect row is inserted in one transaction of that
store together with its effect key. The ``effects`` table has no unique constraint, so a repeated
effect shows up as an extra row; ``processed`` holds the keys, and ``seen=`` looks them up there.

Consumers die two ways: the parent kills a random one every few hundred milliseconds, and every
``CRASH_EVERY``-th message kills its own consumer on first delivery right after the effect
committed and before the ack -- the instant where at-least-once delivery repeats an effect. The
baseline (plain receive -> effect -> ack, no ``seen`` check) shows that it does; the ``process``
helper with ``seen=`` shows that it then does not, and that nothing is lost either way.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time

import pytest

from agent_coherence import Coordinator
from agent_coherence.errors import StaleReceipt

from conftest import FORK

CHANNEL = "crash-jobs"
MESSAGES = 100_000
BASELINE_MESSAGES = 20_000  # the deterministic crash points make duplicates certain at any size
CONSUMERS = 4
VISIBILITY = 1.5  # seconds: a killed consumer's message comes back this fast
CRASH_EVERY = 1000  # payloads divisible by this kill their consumer between effect and ack
KILL_EVERY = (0.2, 0.6)  # seconds between random kills by the parent
RUN_DEADLINE = 400.0  # seconds before the run counts as hung


def _open_store(path: str) -> sqlite3.Connection:
    store = sqlite3.connect(path, isolation_level=None, timeout=60)
    store.execute("PRAGMA journal_mode=WAL")
    store.execute("PRAGMA synchronous=NORMAL")  # a process crash loses nothing committed
    return store


def _create_store(path: str) -> None:
    store = _open_store(path)
    store.execute("CREATE TABLE effects (key TEXT NOT NULL, consumer TEXT NOT NULL)")  # duplicates countable
    store.execute("CREATE TABLE processed (key TEXT PRIMARY KEY)")
    store.execute("CREATE TABLE conflicts (key TEXT NOT NULL)")
    store.close()


def _consumer(root: str, store_path: str, name: str, idempotent: bool) -> None:
    coord = Coordinator.open(root)
    ch = coord.channel(CHANNEL)
    store = _open_store(store_path)

    def apply(delivery) -> None:
        """The effect and its key, in one transaction of the effect store; then maybe crash."""
        key = ch.effect_key(delivery)
        store.execute("BEGIN IMMEDIATE")
        try:
            store.execute("INSERT INTO effects (key, consumer) VALUES (?, ?)", (key, name))
            if idempotent:
                store.execute("INSERT INTO processed (key) VALUES (?)", (key,))
            store.execute("COMMIT")
        except BaseException:
            store.execute("ROLLBACK")
            raise
        if delivery.payload % CRASH_EVERY == 0 and delivery.attempt == 1:
            os.kill(os.getpid(), signal.SIGKILL)  # effect committed, ack never sent

    def seen(key: str) -> bool:
        return store.execute("SELECT 1 FROM processed WHERE key = ?", (key,)).fetchone() is not None

    while True:
        if idempotent:
            try:
                with ch.process(name, seen=seen, wait=0.2) as delivery:
                    if delivery is not None:
                        apply(delivery)
            except sqlite3.IntegrityError as error:
                # A consumer that stalled past the visibility timeout lost the race to the
                # redelivery: the key's unique row refused its effect, process() nacked, and the
                # next delivery is skipped by seen(). Recorded so the run can report it.
                store.execute("INSERT INTO conflicts (key) VALUES (?)", (str(error),))
            except StaleReceipt:
                pass  # acked after a redelivery: the effect is recorded, the redelivery skips it
        else:
            delivery = ch.receive(name, wait=0.2)
            if delivery is None:
                continue
            apply(delivery)
            try:
                ch.ack(delivery)
            except StaleReceipt:
                pass


def _channel_depth(root: str) -> tuple[int, int]:
    """(depth, dead-letter depth), read with a connection opened and closed here, so the parent
    never holds one across fork."""
    with Coordinator.open(root) as coord:
        ch = coord.channel(CHANNEL)
        return ch.stats()["depth"], ch.dead_letters().stats()["depth"]


def _run(root: str, store_path: str, idempotent: bool, count: int) -> dict[str, int]:
    _create_store(store_path)
    with Coordinator.open(root) as coord:
        ch = coord.channel(CHANNEL, visibility_timeout=VISIBILITY, durability="fast")
        ids: list[str] = []
        for start in range(0, count, 2000):
            ids += ch.send_many(range(start, min(count, start + 2000)))
    assert len(set(ids)) == count

    def start(slot: int) -> object:
        process = FORK.Process(target=_consumer, args=(root, store_path, f"consumer-{slot}", idempotent))
        process.start()
        return process

    rng = random.Random(20240611)
    procs = [start(slot) for slot in range(CONSUMERS)]
    deaths = random_kills = 0
    began = time.monotonic()
    next_kill = began + rng.uniform(*KILL_EVERY)
    next_check = began + 1.0
    try:
        while True:
            now = time.monotonic()
            for slot, process in enumerate(procs):
                if not process.is_alive():
                    process.join()
                    assert process.exitcode == -signal.SIGKILL, f"consumer exited with {process.exitcode}"
                    deaths += 1
                    procs[slot] = start(slot)
            if now >= next_kill:
                slot = rng.randrange(CONSUMERS)
                os.kill(procs[slot].pid, signal.SIGKILL)
                procs[slot].join()
                random_kills += 1
                procs[slot] = start(slot)
                next_kill = now + rng.uniform(*KILL_EVERY)
            if now >= next_check:
                depth, dead = _channel_depth(root)
                if depth == 0:
                    break
                next_check = now + 0.5
            assert now - began < RUN_DEADLINE, f"not drained after {RUN_DEADLINE}s (depth {depth})"
            time.sleep(0.02)
    finally:
        for process in procs:
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
            process.join()

    store = _open_store(store_path)
    total, distinct = store.execute("SELECT count(*), count(DISTINCT key) FROM effects").fetchone()
    keys = {row[0] for row in store.execute("SELECT DISTINCT key FROM effects")}
    conflicts = store.execute("SELECT count(*) FROM conflicts").fetchone()[0]
    store.close()
    assert keys == {f"id:{message_id}" for message_id in ids}, "a message was never processed"
    depth, dead = _channel_depth(root)
    result = {"effects": total, "distinct": distinct, "duplicates": total - distinct, "dead": dead,
              "depth": depth, "random_kills": random_kills, "crash_points": deaths,
              "conflicts": conflicts, "seconds": round(time.monotonic() - began)}
    print(f"\n{'process(seen=)' if idempotent else 'baseline'}: {result}")
    return result


@pytest.mark.slow
def test_baseline_receive_effect_ack_repeats_effects_when_consumers_are_killed(tmp_path):
    result = _run(str(tmp_path / "root"), str(tmp_path / "effects.db"), idempotent=False,
                  count=BASELINE_MESSAGES)
    assert result["distinct"] == BASELINE_MESSAGES  # at-least-once: nothing lost...
    assert result["dead"] == 0
    assert result["duplicates"] > 0  # ...but an effect committed before a lost ack is repeated
    assert result["crash_points"] > 0 and result["random_kills"] > 0


@pytest.mark.slow
def test_process_with_seen_gives_every_effect_exactly_once_under_kill_9(tmp_path):
    result = _run(str(tmp_path / "root"), str(tmp_path / "effects.db"), idempotent=True, count=MESSAGES)
    assert result["distinct"] == MESSAGES  # every message processed, none lost
    assert result["duplicates"] == 0  # and no effect repeated
    assert result["dead"] == 0  # no message dead-lettered on the way (a broken seen() would)
    assert result["crash_points"] > 0 and result["random_kills"] > 0
