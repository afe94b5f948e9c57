"""One process, many users of the PostgreSQL backend's pool: threads sharing one coordinator,
many coordinators, and the sessions each leaves on the server after ``close()``.
"""

from __future__ import annotations

import threading
import time

import psycopg

from agent_coherence import Coordinator
from agent_coherence.backends.postgres import split_url


def _sessions(url: str) -> int:
    conninfo, _ = split_url(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return int(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchone()[0])


def test_threads_beyond_the_pool_size_share_one_coordinator(root, pg_url):
    """16 threads on a pool of 4: a thread waiting for a connection must not see the pool judged
    lost to interrupts (a connection between the pool and the code that records it looked lost)
    and closed under it (``PoolClosed``, an untyped error, and the update not made)."""
    errors: list[BaseException] = []
    with Coordinator.open(root, url=pg_url) as coord:
        def work(i: int) -> None:
            for _ in range(20):
                try:
                    coord.update(f"k{i % 4}.txt", lambda old: str(int(old or b"0") + 1).encode(), holder=f"t{i}")
                except BaseException as error:  # reported to the test
                    errors.append(error)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert [repr(error) for error in errors[:3]] == []
        assert sum(int(coord.read(f"k{i}.txt").data) for i in range(4)) == 320


def test_closed_coordinators_leave_no_session_and_reopen_on_use(root, pg_url):
    Coordinator.open(root, url=pg_url).close()
    time.sleep(0.3)
    before = _sessions(pg_url)
    coords = [Coordinator.open(root, url=pg_url) for _ in range(10)]
    for coord in coords:
        coord.close()
    with Coordinator.open(root, url=pg_url) as coord:
        coord.release(coord.acquire("a.txt", "h"))
        coord.close()
        assert coord.acquire("b.txt", "h").fence == 1  # usable after close: a new pool
    time.sleep(0.5)  # a pool left open would refill itself in the background
    assert _sessions(pg_url) == before
