"""Bad arguments are refused with a clear error and change nothing; fault plans with a typo are
refused instead of silently testing nothing; the journal records one entry per real event."""

from __future__ import annotations

import errno
import math
import os
import subprocess
import sys

import pytest

from agent_coherence import BackendUnavailable, Coordinator, LeaseHeld, faults

from conftest import tree_snapshot


# -- payloads -------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [5, 0, None, 3.5, ["a"], {"a": 1}, object()],
                         ids=lambda p: type(p).__name__)
def test_a_payload_that_is_not_bytes_like_or_str_is_a_type_error(coord, root, payload):
    before = tree_snapshot(root, skip=".agent-coherence")
    with pytest.raises(TypeError, match="bytes-like or str"):
        coord.write("a.txt", payload, holder="h")
    assert tree_snapshot(root, skip=".agent-coherence") == before
    assert coord.version("a.txt") is None and coord.journal.count() == 0


@pytest.mark.parametrize("payload,stored", [
    (b"bytes", b"bytes"), (bytearray(b"array"), b"array"), (memoryview(b"view"), b"view"),
    ("text é", "text é".encode()),
])
def test_bytes_like_and_str_payloads_are_written(coord, root, payload, stored):
    assert coord.write("a.txt", payload, holder="h").size == len(stored)
    assert (root / "a.txt").read_bytes() == stored


# -- settings -------------------------------------------------------------------------------

BAD_SETTINGS = [
    ({"on_foreign_edit": "ignore"}, ValueError, "on_foreign_edit"),
    ({"on_foreign_edit": None}, ValueError, "on_foreign_edit"),
    ({"default_ttl": -1}, ValueError, "default_ttl"),
    ({"default_ttl": 0}, ValueError, "default_ttl"),
    ({"default_ttl": math.inf}, ValueError, "default_ttl"),
    ({"default_ttl": math.nan}, ValueError, "default_ttl"),
    ({"default_ttl": "30"}, TypeError, "default_ttl"),
    ({"default_ttl": 1e300}, ValueError, "default_ttl"),
    ({"update_attempts": -1}, ValueError, "update_attempts"),
    ({"no_such_setting": 1}, TypeError, "no_such_setting"),
]


@pytest.mark.parametrize("settings,error,named", BAD_SETTINGS, ids=[repr(s) for s, _, _ in BAD_SETTINGS])
def test_bad_coordinator_settings_are_refused_before_anything_is_created(tmp_path, settings, error, named):
    root = tmp_path / "fresh"
    with pytest.raises(error, match=named):
        Coordinator.open(root, **settings)
    assert not root.exists()


def test_a_bytes_root_is_decoded_not_created_then_refused(tmp_path):
    # os.fspath(b"...") stayed bytes: the root was created, then the open failed mixing str and bytes
    with Coordinator.open(os.fsencode(tmp_path / "fresh")) as coord:
        assert coord.root == str(tmp_path / "fresh")
        assert coord.write("a.txt", b"x", holder="h").path == str(tmp_path / "fresh" / "a.txt")
    with pytest.raises(ValueError, match="UTF-8"):
        Coordinator.open(os.fsencode(str(tmp_path)) + b"/caf\xe9")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh"]


BAD_URLS = ["mysql://host/db", "sqlite://relative.db", "", "postgresql://host/db?schema=Team",
            "postgresql://host/db?schema=pg_team", "postgresql://host/db?no_such_parameter=1"]


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_backend_url_is_refused_before_the_root_is_created(tmp_path, url):
    pytest.importorskip("psycopg") if url.startswith("postgresql") else None
    root = tmp_path / "fresh"
    with pytest.raises(ValueError):
        Coordinator.open(root, url=url)
    assert not root.exists()


BAD_CALLS = [
    ("write ttl=-1", lambda c: c.write("a.txt", b"x", holder="h", ttl=-1), ValueError, "ttl"),
    ("write ttl=0", lambda c: c.write("a.txt", b"x", holder="h", ttl=0), ValueError, "ttl"),
    ("write ttl=inf", lambda c: c.write("a.txt", b"x", holder="h", ttl=math.inf), ValueError, "ttl"),
    ("write ttl=nan", lambda c: c.write("a.txt", b"x", holder="h", ttl=math.nan), ValueError, "ttl"),
    ("write holder=''", lambda c: c.write("a.txt", b"x", holder=""), ValueError, "holder"),
    ("write holder=' '", lambda c: c.write("a.txt", b"x", holder="  "), ValueError, "holder"),
    ("write holder=7", lambda c: c.write("a.txt", b"x", holder=7), TypeError, "holder"),
    ("write policy", lambda c: c.write("a.txt", b"x", holder="h", on_foreign_edit="ignore"), ValueError,
     "on_foreign_edit"),
    ("acquire ttl=-1", lambda c: c.acquire("a.txt", "h", ttl=-1), ValueError, "ttl"),
    ("acquire ttl=inf", lambda c: c.acquire("a.txt", "h", ttl=math.inf), ValueError, "ttl"),
    # an expiry past time_t made every other caller's LeaseHeld raise a bare OverflowError
    ("acquire ttl=1e300", lambda c: c.acquire("a.txt", "h", ttl=1e300), ValueError, "ttl"),
    ("write ttl=1e13", lambda c: c.write("a.txt", b"x", holder="h", ttl=1e13), ValueError, "ttl"),
    ("lease ttl=1e300", lambda c: c.lease("a.txt", "h", ttl=1e300), ValueError, "ttl"),
    ("acquire holder=''", lambda c: c.acquire("a.txt", ""), ValueError, "holder"),
    ("acquire holder=None", lambda c: c.acquire("a.txt", None), TypeError, "holder"),
    ("acquire holder=surrogate", lambda c: c.acquire("a.txt", "agent-\udc80"), ValueError, "holder"),
    ("write holder=surrogate", lambda c: c.write("a.txt", b"x", holder="agent-\udc80"), ValueError, "holder"),
    ("write data=surrogate", lambda c: c.write("a.txt", "text-\udc80", holder="h"), ValueError, "lone surrogate"),
    ("acquire wait=-1", lambda c: c.acquire("a.txt", "h", wait=-1), ValueError, "wait"),
    ("acquire wait=nan", lambda c: c.acquire("a.txt", "h", wait=math.nan), ValueError, "wait"),
    ("lease ttl=0", lambda c: c.lease("a.txt", "h", ttl=0), ValueError, "ttl"),
    ("lease wait=-0.5", lambda c: c.lease("a.txt", "h", wait=-0.5), ValueError, "wait"),
    ("update holder=''", lambda c: c.update("a.txt", lambda old: b"x", holder=""), ValueError, "holder"),
    ("delete ttl=-1", lambda c: c.delete("a.txt", holder="h", ttl=-1), ValueError, "ttl"),
    ("adopt holder=''", lambda c: c.adopt("a.txt", holder=""), ValueError, "holder"),
    # a str or float never equals the stored int: without the check each try is a journaled
    # VersionConflict that no re-read can resolve
    ("write expect_version='0'", lambda c: c.write("a.txt", b"x", holder="h", expect_version="0"), TypeError,
     "expect_version"),
    ("write expect_version=0.0", lambda c: c.write("a.txt", b"x", holder="h", expect_version=0.0), TypeError,
     "expect_version"),
    ("write expect_version=False", lambda c: c.write("a.txt", b"x", holder="h", expect_version=False), TypeError,
     "expect_version"),
    ("write expect_version=-1", lambda c: c.write("a.txt", b"x", holder="h", expect_version=-1), ValueError,
     "expect_version"),
    ("delete expect_version='0'", lambda c: c.delete("a.txt", holder="h", expect_version="0"), TypeError,
     "expect_version"),
    ("write lease='h'", lambda c: c.write("a.txt", b"x", lease="h"), TypeError, "lease"),
    ("renew lease='h'", lambda c: c.renew("h"), TypeError, "renew: lease must be a Lease"),
    ("release lease='h'", lambda c: c.release("h"), TypeError, "release: lease must be a Lease"),
    ("keep_alive lease='h'", lambda c: c.keep_alive("h"), TypeError, "keep_alive: lease must be a Lease"),
    ("leases holder=5", lambda c: c.leases(holder=5), TypeError, "holder"),
    ("compact steps=-1", lambda c: c.compact(steps=-1), ValueError, "steps"),
    ("compact steps=1.5", lambda c: c.compact(steps=1.5), ValueError, "steps"),
    ("update attempts=0", lambda c: c.update("a.txt", lambda old: b"x", holder="h", attempts=0), ValueError,
     "attempts"),
    ("update attempts=-1", lambda c: c.update("a.txt", lambda old: b"x", holder="h", attempts=-1), ValueError,
     "attempts"),
    ("update attempts=2.5", lambda c: c.update("a.txt", lambda old: b"x", holder="h", attempts=2.5), TypeError,
     "attempts"),
    ("update deadline=0", lambda c: c.update("a.txt", lambda old: b"x", holder="h", deadline=0), ValueError,
     "deadline"),
    ("update deadline=-1", lambda c: c.update("a.txt", lambda old: b"x", holder="h", deadline=-1), ValueError,
     "deadline"),
    ("update deadline=nan", lambda c: c.update("a.txt", lambda old: b"x", holder="h", deadline=math.nan),
     ValueError, "deadline"),
]


@pytest.mark.parametrize("call,error,named", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_call_arguments_are_refused_and_change_nothing(coord, root, call, error, named):
    (root / "a.txt").write_bytes(b"old")
    before = tree_snapshot(root, skip=".agent-coherence")
    with pytest.raises(error, match=named):
        call(coord)
    assert tree_snapshot(root, skip=".agent-coherence") == before
    assert coord.journal.count() == 0 and coord.leases() == []


def test_a_write_naming_another_holder_than_its_lease_is_refused(coord, root):
    # it would be recorded under the lease's holder, not the one the caller named
    (root / "a.txt").write_bytes(b"old")
    lease = coord.acquire("a.txt", "planner")
    with pytest.raises(ValueError, match="holder"):
        coord.write("a.txt", b"x", lease=lease, holder="coder")
    assert (root / "a.txt").read_bytes() == b"old" and coord.version("a.txt") is None
    assert coord.write("a.txt", b"x", lease=lease, holder="planner").holder == "planner"


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_a_root_that_cannot_be_a_directory_is_a_typed_error(tmp_path, where):
    blocker = tmp_path / "afile"
    blocker.write_bytes(b"not a directory")
    root = blocker if where == "file" else blocker / "sub"
    with pytest.raises(BackendUnavailable, match="workspace root") as refused:
        Coordinator.open(root)
    assert refused.value.reason == "root" and refused.value.path == str(root)
    assert refused.value.errno is not None and "out of the way" in refused.value.recover
    assert blocker.read_bytes() == b"not a directory"


def test_the_longest_ttl_still_reports_its_holder(coord):
    coord.acquire("a.txt", "h", ttl=1e12)
    with pytest.raises(LeaseHeld, match="leased by 'h'"):
        coord.acquire("a.txt", "other")


def test_a_renewed_lease_keeps_a_valid_ttl(coord):
    lease = coord.acquire("a.txt", "h", ttl=10)
    with pytest.raises(ValueError, match="ttl"):
        coord.renew(lease, ttl=-5)
    assert coord.renew(lease).ttl == 10


# -- fault plans ----------------------------------------------------------------------------


def test_an_unknown_fault_step_or_errno_is_refused():
    with pytest.raises(ValueError, match="unknown fault step 'fsyn'"):
        with faults.inject("fsyn", errno.EIO):
            pass
    with pytest.raises(ValueError, match="unknown errno"):
        with faults.inject("fsync", 99999):
            pass
    with pytest.raises(TypeError):
        with faults.inject("fsync", "EIO"):  # type: ignore[arg-type]
            pass
    with faults.inject("fsync", errno.EIO):  # a valid plan is still accepted
        pass


@pytest.mark.parametrize("spec,complaint", [
    ("rename:EIOO", "'EIOO' is neither an errno name"),
    ("renam:EIO", "unknown step 'renam'"),
    ("rename", "'' is neither an errno name"),
    ("commit:sleep=soon", "sleep= needs a number"),
    ("commit:sleep=-1", "sleep= needs a number"),
    ("rename:EIO,fsync:errno", "'errno' is neither"),
])
def test_a_malformed_environment_fault_plan_fails_loudly(root, spec, complaint):
    code = f"from agent_coherence import Coordinator\nCoordinator.open({str(root)!r}).write('a.txt', b'x', holder='h')\n"
    env = dict(os.environ, AGENT_COHERENCE_FAULTS=spec)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ValueError" in done.stderr and complaint in done.stderr
    assert not (root / "a.txt").exists()


def test_a_well_formed_environment_fault_plan_parses():
    plan = faults.parse(" rename:EIO , commit:sleep=0.01,write:ENOSPC ,")
    assert sorted(plan) == ["commit", "rename", "write"]


# -- the journal: one entry per real event ----------------------------------------------------


def test_a_write_that_adopts_a_foreign_edit_is_not_journaled_as_failed(coord, root):
    coord.write("a.txt", b"v1", holder="h")
    (root / "a.txt").write_bytes(b"edited around the layer")
    receipt = coord.write("a.txt", b"v3", holder="h", on_foreign_edit="adopt")
    assert receipt.version == 3 and (root / "a.txt").read_bytes() == b"v3"
    assert coord.journal.count(kind="write.failed") == 0
    kinds = [e.kind for e in coord.journal.history("a.txt")]
    assert kinds == ["write", "adopt", "write"]
    adopted = coord.journal.history("a.txt")[1]
    assert adopted.data["version"] == 2 and adopted.data["size"] == len(b"edited around the layer")
    coord.journal.verify()


def test_a_coordinator_wide_adopt_policy_is_journaled_the_same_way(root):
    with Coordinator.open(root, on_foreign_edit="adopt") as coord:
        coord.write("a.txt", b"v1", holder="h")
        (root / "a.txt").write_bytes(b"edited")
        coord.write("a.txt", b"v3", holder="h")
        assert coord.journal.count(kind="write.failed") == 0
        assert coord.journal.count(kind="adopt") == 1


def test_an_acquire_that_waits_journals_one_conflict(coord):
    coord.acquire("a.txt", "alice", ttl=30)
    with pytest.raises(LeaseHeld):
        coord.acquire("a.txt", "bob", wait=0.6)
    [conflict] = [e for e in coord.journal.history("a.txt") if e.kind == "conflict.lease"]
    assert (conflict.holder, conflict.data["held_by"]) == ("bob", "alice")
    assert conflict.data["waited"] >= 0.6
    with pytest.raises(LeaseHeld):
        coord.acquire("a.txt", "bob")  # a second refused call is a second event
    assert coord.journal.count(kind="conflict.lease", key="a.txt") == 2


def test_an_acquire_that_waits_and_succeeds_journals_no_conflict(coord, clock):
    coord.acquire("a.txt", "alice", ttl=0.3)
    clock.advance(0.2)

    def expire_soon() -> None:
        clock.advance(1)

    import threading

    timer = threading.Timer(0.2, expire_soon)
    timer.start()
    try:
        lease = coord.acquire("a.txt", "bob", wait=5)
    finally:
        timer.cancel()
    assert lease.holder == "bob"
    assert coord.journal.count(kind="conflict.lease", key="a.txt") == 0
