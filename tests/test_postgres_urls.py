"""Opening the PostgreSQL backend with a URL that cannot work: a login the server refuses, a server
that is down, a schema name PostgreSQL would read differently, a parameter libpq does not know.
Each is a typed error naming the cause, soon, and leaves nothing on the server. The parameters
libpq does know reach it unchanged.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from agent_coherence import BackendUnavailable, Coordinator
from agent_coherence.backends.postgres import PostgresBackend

from pg_server import _free_port


def _schemas(server_url: str, prefix: str) -> list[str]:
    with psycopg.connect(server_url, autocommit=True) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (prefix + "%",)).fetchall()
    return [row[0] for row in rows]


def _with(server_url: str, **parts: str) -> str:
    """The session server's URL with another user, database or sslmode."""
    url = server_url
    if "user" in parts:
        url = url.replace("postgresql://postgres@", f"postgresql://{parts['user']}@", 1)
    if "database" in parts:
        url = url.rsplit("/", 1)[0] + "/" + parts["database"]
    if "sslmode" in parts:
        url = f"{url}?sslmode={parts['sslmode']}"
    return url


@pytest.mark.parametrize("part, value, said", [
    ("database", "no_such_database", 'database "no_such_database" does not exist'),
    ("user", "no_such_role", 'role "no_such_role" does not exist'),
    ("sslmode", "require", "server does not support SSL, but SSL was required"),
])
def test_a_login_the_server_refuses_is_reported_at_once_with_its_cause(pg_server, part, value, said):
    """The pool keeps its connection failures to itself: without asking the server directly, a
    wrong database or role waited two full deadlines and then said only that no connection came.
    The test server has no SSL, so ``sslmode=require`` can never pass either."""
    url = _with(pg_server, **{part: value})
    url += ("&" if "?" in url else "?") + "schema=urls_refused"
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        PostgresBackend(url, retry_deadline=5.0)
    assert time.monotonic() - started < 9.0  # not retried to the deadline and beyond
    assert said in str(caught.value) and "retrying will not help" in caught.value.recover
    assert said in caught.value.detail


def test_a_server_that_is_down_is_retried_to_the_deadline_and_named():
    """A refused connection is worth retrying (the server may be starting): the backend retries to
    its deadline, then names the cause. Each attempt waits at most ``connect_timeout + 1`` for a
    connection, so the whole wait is the deadline plus at most one attempt, not a deadline per
    attempt (which the pool's own timeouts would give)."""
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/postgres?schema=urls_down"
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        PostgresBackend(url, retry_deadline=5.0, connect_timeout=1.0)
    waited = time.monotonic() - started
    assert 4.5 < waited < 8.5, waited  # 5 s, then at most a backoff (1 s) and an attempt (2 s): not two deadlines
    assert "Connection refused" in str(caught.value)
    assert "stayed unavailable for 5s" in str(caught.value)


def test_a_deadline_shorter_than_one_connection_wait_is_kept():
    """The Claude Code hook opens the backend with the deadline its time budget leaves (about
    1.8 s of 3): every try after the first waited a whole connection wait again, so the call took
    twice the deadline and the hook's own alarm fired first, naming no cause."""
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/postgres?schema=urls_down"
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        PostgresBackend(url, retry_deadline=2.0, connect_timeout=5.0, pool_size=1)
    waited = time.monotonic() - started
    assert 1.9 < waited < 3.2, waited  # was 4.1: a second whole wait after the deadline
    assert "Connection refused" in str(caught.value) and "stayed unavailable for 2s" in str(caught.value)


@pytest.mark.parametrize("schema, said", [
    ("Urls_Team", "lower case"),
    ("urls_" + "a" * 59, "at most 63 bytes"),  # PostgreSQL would keep the first 63: another schema
    ('urls";DROP SCHEMA public;--', "letters, digits and underscores"),
    ("", "letters, digits and underscores"),
    ("pg_urls", "reserved by PostgreSQL"),
])
def test_a_schema_name_postgresql_would_read_differently_is_refused(pg_server, root, schema, said):
    with pytest.raises(ValueError, match=said):
        Coordinator.open(root, url=f"{pg_server}?schema={schema}")
    assert _schemas(pg_server, "urls_") == [] and _schemas(pg_server, "Urls_") == []
    assert _schemas(pg_server, "pg_urls") == []


def test_the_longest_schema_name_postgresql_keeps_whole_is_accepted(pg_server, root):
    schema = "urls_" + "b" * 58
    try:
        with Coordinator.open(root, url=f"{pg_server}?schema={schema}") as coord:
            assert coord.backend.schema == schema
        assert _schemas(pg_server, "urls_") == [schema]
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_a_parameter_libpq_does_not_know_is_refused_before_connecting(pg_server, root):
    with pytest.raises(ValueError, match='invalid URI query parameter: "bogus"'):
        Coordinator.open(root, url=f"{pg_server}?schema=urls_param&bogus=1")
    assert _schemas(pg_server, "urls_") == []


def test_a_url_without_a_host_part_takes_the_server_from_its_parameters(pg_server, monkeypatch):
    """``postgresql:///db?host=/socket/dir`` (libpq's form for a unix socket) and a bare
    ``postgresql://`` (everything from PGHOST, PGPORT, ...) were refused as malformed: the URL was
    rebuilt from its parts, which drops the empty host and its "//"."""
    from urllib.parse import quote, urlencode

    from psycopg.conninfo import conninfo_to_dict

    server = {name: str(value) for name, value in conninfo_to_dict(pg_server).items()}
    database = quote(server.pop("dbname", "postgres"))
    urls = [f"postgresql:///{database}?{urlencode(server)}&schema=urls_hostless"]
    for name, variable in [("host", "PGHOST"), ("port", "PGPORT"), ("user", "PGUSER"), ("password", "PGPASSWORD")]:
        if name in server:
            monkeypatch.setenv(variable, server[name])
    monkeypatch.setenv("PGDATABASE", database)
    urls.append("postgresql://?schema=urls_hostless")
    try:
        for url in urls:
            backend = PostgresBackend(url, retry_deadline=5.0)
            try:
                assert backend.now() > 0
            finally:
                backend.close()
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute('DROP SCHEMA IF EXISTS "urls_hostless" CASCADE')


@pytest.mark.parametrize("url", ["postgresql+psycopg://bob:s3cr%40t@db.example:5432/x?schema=team",
                                 "postgresq://bob:s3cr%40t@db.example/x"])
def test_a_url_no_backend_takes_is_refused_without_its_password(root, url):
    """The refusal is printed by the CLI and kept in logs: it named the URL whole, password too."""
    with pytest.raises(ValueError, match="unsupported backend URL") as caught:
        Coordinator.open(root, url=url)
    assert "s3cr" not in str(caught.value) and "bob:***@db.example" in str(caught.value)


def test_the_other_parameters_reach_the_server_as_libpq_reads_them(pg_server):
    """Taking ``schema`` out of the query must leave the rest as written: re-encoding it turned
    each %20 into a "+", so an ``options`` setting broke every login and a name changed."""
    url = (f"{pg_server}?application_name=night%20shift&schema=urls_params"
           "&options=-c%20work_mem%3D8MB%20-c%20search_path%3Dnowhere")
    backend = PostgresBackend(url, retry_deadline=5.0)
    try:
        settings = backend.read(lambda tx: tx.one(
            "SELECT current_setting('application_name'), current_setting('work_mem'), "
            "current_setting('search_path')"))
        assert settings == ("night shift", "8MB", "nowhere")
    finally:
        backend.close()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute('DROP SCHEMA IF EXISTS "urls_params" CASCADE')


@pytest.mark.parametrize("command", [["status"], ["journal", "verify"], ["watch", "--once"]])
def test_the_cli_reports_a_refused_url_in_one_line(pg_server, root, command, monkeypatch, capsys):
    from agent_coherence.cli import main

    assert main([*command, "--root", str(root), "--url", f"{pg_server}?schema=Urls_Bad"]) == 2
    monkeypatch.setenv("AGENT_COHERENCE_URL", f"{pg_server}?schema=urls_x&bogus=1")
    assert main([*command, "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "schema name 'Urls_Bad': use lower case" in err and 'invalid URI query parameter: "bogus"' in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", [["status"], ["journal", "verify"], ["journal", "show"],
                                     ["journal", "compact", "--dry-run"]])
def test_a_command_that_only_looks_creates_no_schema(pg_server, root, command, capsys):
    """A mistyped schema must read as "nothing here", not be made (empty, and so "all clean").
    (``watch`` does make it: a watcher started before its agents is one of them.)"""
    from agent_coherence.cli import main

    assert main([*command, "--root", str(root), "--url", f"{pg_server}?schema=urls_typo"]) == 0
    said = capsys.readouterr()
    assert "no agent-coherence state in the PostgreSQL schema 'urls_typo' yet" in said.out + said.err
    assert _schemas(pg_server, "urls_") == []


def test_open_with_create_false_refuses_a_missing_schema_and_opens_an_existing_one(pg_server, root):
    url = f"{pg_server}?schema=urls_later"
    try:
        with pytest.raises(BackendUnavailable) as caught:
            Coordinator.open(root, url=url, create=False)
        assert caught.value.reason == "missing" and "'urls_later'" in str(caught.value)
        assert _schemas(pg_server, "urls_") == []
        with Coordinator.open(root, url=url) as coord:
            coord.write("a.txt", b"one", holder="tester")
        with Coordinator.open(root, url=url, create=False) as coord:
            assert coord.read("a.txt").data == b"one"
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute('DROP SCHEMA IF EXISTS "urls_later" CASCADE')


@pytest.mark.parametrize("threshold, prepared", [(None, True), ("none", False), ("1", True)])
def test_prepare_threshold_in_the_url_reaches_every_session(pg_server, threshold, prepared):
    """``prepare_threshold=none`` in the URL (PgBouncer in transaction mode) was not possible: only
    ``PostgresBackend(prepare_threshold=None)`` in Python set it, so the CLI and the Claude Code hook,
    which open by URL, always prepared statements on the server."""
    url = f"{pg_server}?schema=urls_prepare" + (f"&prepare_threshold={threshold}" if threshold else "")
    backend = PostgresBackend(url, retry_deadline=5.0, pool_size=1)  # one session: it sees its own statements
    try:
        for _ in range(8):  # past psycopg's default threshold of 5 executions
            backend.read(lambda tx: tx.one("SELECT 1"))
        count = backend.read(lambda tx: tx.one("SELECT count(*) FROM pg_prepared_statements"))[0]
        assert (count > 0) is prepared, count
    finally:
        backend.close()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute('DROP SCHEMA IF EXISTS "urls_prepare" CASCADE')


@pytest.mark.parametrize("threshold", ["sometimes", "0", "-1"])
def test_a_prepare_threshold_that_is_not_one_is_refused_before_connecting(pg_server, root, threshold):
    # 0 (prepare every statement at once) made every session fail to start: its settings are one
    # multi-statement string, which the server cannot prepare.
    with pytest.raises(ValueError, match="prepare_threshold="):
        Coordinator.open(root, url=f"{pg_server}?schema=urls_prepare_bad&prepare_threshold={threshold}")
    with pytest.raises(ValueError, match="prepare_threshold=0"):
        PostgresBackend(f"{pg_server}?schema=urls_prepare_bad", prepare_threshold=0)
    assert _schemas(pg_server, "urls_prepare_bad") == []


def test_a_read_only_server_is_named_as_such_at_once(pg_server, root):
    """A standby, or default_transaction_read_only on, refused every write with the hint to check
    the disk space."""
    url = f"{pg_server}?schema=urls_read_only"
    Coordinator.open(root, url=url).close()
    started = time.monotonic()
    try:
        with pytest.raises(BackendUnavailable) as refused:
            with Coordinator.open(root, url=url + "&options=-c%20default_transaction_read_only%3Don") as coord:
                coord.write("a.md", b"x", holder="h")
        assert refused.value.reason == "read_only" and "read-only" in refused.value.message
        assert "primary" in refused.value.recover
        assert time.monotonic() - started < 5  # not retried: no retry makes the server writable
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute('DROP SCHEMA IF EXISTS "urls_read_only" CASCADE')
