"""An agent process standing for its own host: a fresh interpreter that shares nothing with the test
but the database URL (``AGENT_COHERENCE_URL``) and the workspace directory, with its own host
identity (``AGENT_COHERENCE_HOST``).

    python tests/host_worker.py ROLE '{"root": ..., ...}'

Roles log one line per acknowledged result to ``out`` (flushed at once, so a kill loses nothing
that was acknowledged), and keep going through server outages: a typed error is logged and the
step retried, the process is never restarted.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from typing import Callable

from agent_coherence import Coordinator, recovery
from agent_coherence.errors import CoherenceError, StaleReceipt


def _log(out: str):  # type: ignore[no-untyped-def]
    return open(out, "a", buffering=1)


def increment(root: str, key: str, count: int, out: str) -> None:
    """``count`` confirmed increments of ``key``; logs ``ok <version> <fence>`` per receipt."""
    coord = Coordinator.open(root)
    holder = f"{recovery.HOST}:{os.getpid()}"
    done = 0
    with _log(out) as log:
        while done < count:
            try:
                receipt = coord.update(key, lambda old: str(int(old or b"0") + 1), holder=holder)
            except CoherenceError as error:
                log.write(f"error {type(error).__name__} {str(error)[:200]!r}\n")
                time.sleep(0.1)
                continue
            log.write(f"ok {receipt.version} {receipt.fence}\n")
            done += 1


def consume(root: str, channel: str, out: str, store: str, stop: str) -> None:
    """Process messages until ``stop`` exists and the channel is empty. Each effect goes into the
    shared effect store with its key in one transaction; ``seen=`` looks the key up there."""
    coord = Coordinator.open(root)
    ch = coord.channel(channel)
    name = f"{recovery.HOST}:{os.getpid()}"
    db = sqlite3.connect(store, isolation_level=None, timeout=60)
    crash_every = int(os.environ.get("CRASH_EVERY", "0"))

    def seen(key: str) -> bool:
        return db.execute("SELECT 1 FROM processed WHERE key = ?", (key,)).fetchone() is not None

    with _log(out) as log:
        while True:
            if os.environ.get("NAIVE"):
                naive_step(ch, name, db, crash_every, stop, log)
                continue
            try:
                with ch.process(name, seen=seen, wait=0.2) as delivery:
                    if delivery is None:
                        if os.path.exists(stop) and ch.stats()["depth"] == 0:
                            return
                        continue
                    key = ch.effect_key(delivery)
                    db.execute("BEGIN IMMEDIATE")
                    db.execute("INSERT INTO effects (key, consumer) VALUES (?, ?)", (key, name))
                    db.execute("INSERT OR IGNORE INTO processed (key) VALUES (?)", (key,))
                    db.execute("COMMIT")
                    if crash_every and delivery.payload % crash_every == 0 and delivery.attempt == 1:
                        os.kill(os.getpid(), 9)  # the effect committed, the ack never sent
                log.write(f"acked {delivery.message_id}\n")
            except StaleReceipt:
                log.write("stale\n")
            except CoherenceError as error:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                log.write(f"error {type(error).__name__} {str(error)[:200]!r}\n")
                time.sleep(0.1)


def naive_step(ch, name, db, crash_every, stop, log) -> None:  # type: ignore[no-untyped-def]
    """The baseline: receive, effect, ack, with no check of effects already made."""
    try:
        delivery = ch.receive(name, wait=0.2)
        if delivery is None:
            if os.path.exists(stop) and ch.stats()["depth"] == 0:
                sys.exit(0)
            return
        db.execute("INSERT INTO effects (key, consumer) VALUES (?, ?)", (ch.effect_key(delivery), name))
        if crash_every and delivery.payload % crash_every == 0 and delivery.attempt == 1:
            os.kill(os.getpid(), 9)
        ch.ack(delivery)
        log.write(f"acked {delivery.message_id}\n")
    except CoherenceError as error:
        log.write(f"error {type(error).__name__}\n")


def stalled_write(root: str, key: str, out: str) -> None:
    """Write ``key`` with the commit step paused (AGENT_COHERENCE_FAULTS=commit:sleep=...): the new
    bytes are in place and the intent recorded when ``out`` appears; the test then kills us."""
    coord = Coordinator.open(root)
    with open(out, "w") as log:
        log.write(f"{os.getpid()}\n")
    coord.write(key, b"written on " + recovery.HOST.encode(), holder=f"{recovery.HOST}:{os.getpid()}", ttl=5)


ROLES: dict[str, Callable[..., None]] = {"increment": increment, "consume": consume, "stalled_write": stalled_write}

if __name__ == "__main__":
    ROLES[sys.argv[1]](**json.loads(sys.argv[2]))
