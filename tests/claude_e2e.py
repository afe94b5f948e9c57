"""Run the real ``claude`` CLI offline: install it from npm, and run scripted sessions against the
fake Messages API inside a network namespace that has only loopback.

Two halves:

* In the test process: :func:`claude_binary` installs ``@anthropic-ai/claude-code`` at
  :data:`CLAUDE_VERSION` into a cache inside the checkout (``.venv/claude-code/``, reused across
  runs), :func:`isolation_problem` says why ``unshare`` can't give us a loopback-only namespace
  (or None), and :func:`run_sessions` runs this file as a script inside one (``unshare --net``
  as root, inside a user namespace of its own otherwise).
* Inside the namespace (``python claude_e2e.py SPEC RESULT``): bring ``lo`` up, start the fake
  server on 127.0.0.1, start every session of the spec at once (``claude -p``, a scratch HOME, a
  dummy API key, ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1``), wait for all, and write what
  each session returned and every tool result the client sent back to the model.

Nothing here can reach the network: the sessions run where no interface but ``lo`` exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

CLAUDE_VERSION = "2.1.332"
PACKAGE = "@anthropic-ai/claude-code"
REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".venv" / "claude-code"
NPM_TIMEOUT = 300
SESSION_TIMEOUT = 90


class Unavailable(Exception):
    """The client or the namespace can't be had here; the message says why."""


def claude_binary(cache: Path = CACHE) -> Path:
    """The ``claude`` executable at CLAUDE_VERSION, installed from npm on first use."""
    binary = cache / "node_modules" / ".bin" / "claude"
    stamp = cache / f"installed-{CLAUDE_VERSION}"
    if stamp.exists() and binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise Unavailable("npm is not installed, so the Claude Code client can't be installed")
    cache.mkdir(parents=True, exist_ok=True)
    command = [npm, "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(cache),
               f"{PACKAGE}@{CLAUDE_VERSION}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=NPM_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"npm install {PACKAGE}@{CLAUDE_VERSION} took over {NPM_TIMEOUT} s") from None
    if done.returncode != 0 or not binary.exists():
        raise Unavailable(f"npm install {PACKAGE}@{CLAUDE_VERSION} failed: {done.stderr.strip()[-500:]}")
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    if not version.stdout.startswith(CLAUDE_VERSION):
        raise Unavailable(f"the installed client says {version.stdout.strip()!r}, not {CLAUDE_VERSION}")
    stamp.write_text(version.stdout)
    return binary


# How to get a loopback-only namespace: a plain network namespace needs root (CAP_SYS_ADMIN); an
# unprivileged user gets one inside a user namespace of its own. The first that works is used.
UNSHARE_WAYS = (["unshare", "--net"], ["unshare", "--user", "--map-root-user", "--net"])
_working: list[list[str]] = []


def _unshare_prefix() -> list[str]:
    if not _working and isolation_problem() is not None:
        raise Unavailable("no loopback-only network namespace here")
    return _working[0]


def isolation_problem() -> str | None:
    """Why a loopback-only network namespace can't be made here, or None when it can."""
    if _working:
        return None
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    if shutil.which("ip") is None:
        return "ip (iproute2) is not installed, so loopback can't be brought up in the namespace"
    errors = []
    for way in UNSHARE_WAYS if os.geteuid() == 0 else UNSHARE_WAYS[1:]:
        probe = subprocess.run(way + ["ip", "link", "set", "lo", "up"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            _working.append(way)
            return None
        errors.append(f"{' '.join(way)}: {probe.stderr.strip() or 'failed'}")
    return "no network namespace: " + "; ".join(errors)


def run_sessions(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run the spec's sessions inside a loopback-only namespace; returns the driver's result."""
    spec_path, result_path = workdir / "spec.json", workdir / "result.json"
    spec_path.write_text(json.dumps(spec))
    command = _unshare_prefix() + [sys.executable, str(Path(__file__).resolve()), str(spec_path), str(result_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=SESSION_TIMEOUT + 60)
    if done.returncode != 0 or not result_path.exists():
        raise AssertionError(f"the session driver failed ({done.returncode}): {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    return result


# -- inside the namespace ------------------------------------------------------------------------


def _client_env(base: dict[str, str], home: Path, url: str, extra: dict[str, str]) -> dict[str, str]:
    env: dict[str, str] = {name: base[name] for name in ("PATH", "LANG", "TERM") if name in base}
    env.update({
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "sk-ant-test-dummy-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    })
    env.update(extra)
    return env


def _collect(proc: subprocess.Popen[str], marker: str, into: dict[str, Any], script: Any, started: float) -> None:
    """Wait for one session, keep what it printed, and open the gate ``<marker>:exit``."""
    try:
        out, err = proc.communicate(timeout=max(1.0, SESSION_TIMEOUT - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    try:
        answer = json.loads(out)
    except ValueError:
        answer = None
    into[marker] = {"returncode": proc.returncode, "result": answer, "stderr": err[-4000:],
                    "stdout": out[-4000:] if answer is None else ""}
    script.gate(f"{marker}:exit").set()


def _drive(spec: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fake_anthropic import FakeAnthropic, Script, Turn

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
    # Subagents are scripted like sessions but started by the client (their prompt is the Agent
    # tool's); they come first, so a subagent prompt that quotes its parent's marker still matches.
    scripted = spec.get("subagents", []) + spec["sessions"]
    script = Script({s["marker"]: [Turn(tools=[(n, i) for n, i in t.get("tools", [])], text=t.get("text", ""),
                                        after=t.get("after")) for t in s["turns"]]
                     for s in scripted})
    server = FakeAnthropic(script).start()
    sessions: dict[str, Any] = {}
    procs: list[subprocess.Popen[str]] = []
    waiters = []
    started = time.monotonic()
    try:
        for session in spec["sessions"]:
            home = Path(session["home"])
            home.mkdir(parents=True, exist_ok=True)
            argv = [spec["claude"], "-p", session["prompt"], "--output-format", "json",
                    *session.get("args", [])]
            env = _client_env(dict(os.environ), home, server.url, session.get("env", {}))
            proc = subprocess.Popen(argv, cwd=session["cwd"], env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(proc)
            waiter = threading.Thread(target=_collect, args=(proc, session["marker"], sessions, script, started))
            waiter.start()
            waiters.append(waiter)
        for waiter in waiters:
            waiter.join()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.stop()
    return {
        "sessions": sessions,
        "tool_results": [vars(r) for r in script.results],
        "requests": script.requests,
        "seconds": time.monotonic() - started,
    }


if __name__ == "__main__":
    spec_file, result_file = sys.argv[1], sys.argv[2]
    outcome = _drive(json.loads(Path(spec_file).read_text()))
    Path(result_file).write_text(json.dumps(outcome, indent=1))
