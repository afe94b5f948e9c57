"""Bad command-line arguments are usage errors (exit 2, one line, no traceback), never silently
wrong output or an alarm about the state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent_coherence import Coordinator


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent_coherence", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    with Coordinator.open(root) as coord:
        for name in ("a.txt", "b.txt", "c.txt"):
            coord.write(name, b"x", holder="w")
        for name in ("a.txt", "b.txt"):
            coord.acquire(name, "w", ttl=300)
    return root


def test_status_with_a_negative_limit_is_refused_not_sliced_from_the_end(workspace: Path) -> None:
    result = run_cli("status", "--root", str(workspace), "--limit", "-1", "--json")
    assert result.returncode == 2, result.stdout
    assert "--limit" in result.stderr and "Traceback" not in result.stderr
    report = json.loads(run_cli("status", "--root", str(workspace), "--limit", "0", "--json").stdout)
    assert report["leases"] == [] and report["lease_count"] == 2


@pytest.mark.parametrize("interval", ["nan", "inf", "-1", "0"])
def test_watch_refuses_an_interval_it_cannot_sleep(workspace: Path, interval: str) -> None:
    result = run_cli("watch", "--root", str(workspace), "--interval", interval)
    assert result.returncode == 2
    assert "--interval" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("anchor", ["zzz", "", "abc123", "g" * 64])
def test_verify_with_a_malformed_anchor_is_a_usage_error_not_corruption(workspace: Path, anchor: str) -> None:
    result = run_cli("journal", "verify", "--root", str(workspace), "--anchor", anchor)
    assert result.returncode == 2
    assert "CORRUPT" not in result.stderr and "64 hex" in result.stderr


def test_verify_accepts_the_head_in_upper_case(workspace: Path) -> None:
    with Coordinator.open(workspace) as coord:
        head = coord.journal.head()
    result = run_cli("journal", "verify", "--root", str(workspace), "--anchor", head.upper())
    assert result.returncode == 0, result.stderr
    assert "is in the chain" in result.stdout


@pytest.mark.parametrize("before", ["infd", "1e400d", "nanh"])
def test_compact_refuses_an_age_that_is_not_finite(workspace: Path, before: str) -> None:
    result = run_cli("journal", "compact", "--root", str(workspace), "--before", before, "--dry-run")
    assert result.returncode == 2
    assert "--before" in result.stderr


def test_a_root_that_is_a_file_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    result = run_cli("status", "--root", str(path))
    assert result.returncode == 2
    assert "not a directory" in result.stderr


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["journal", "verify"],
                                     ["journal", "show"], ["journal", "compact"]])
def test_a_read_only_command_given_a_database_url_that_does_not_exist_creates_nothing(
        workspace: Path, tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "typo" / "state.db"
    result = run_cli(*command, "--root", str(workspace), "--url", f"sqlite:///{missing}")
    assert result.returncode == 0, result.stderr
    assert not missing.parent.exists()
    if command != ["journal", "show"]:
        assert str(missing) in result.stdout or '"state": null' in result.stdout
