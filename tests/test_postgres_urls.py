"""Opening the PostgreSQL backend with a URL that cannot work: a login the server refuses, a server
that is down, a schema name PostgreSQL would read differently, a parameter libpq does not know.
Each is a typed error naming the cause, soon, and leaves nothing on the server.
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
    """The session server's URL with another user or database."""
    url = server_url
    if "user" in parts:
        url = url.replace("postgresql://postgres@", f"postgresql://{parts['user']}@", 1)
    if "database" in parts:
        url = url.rsplit("/", 1)[0] + "/" + parts["database"]
    return url


@pytest.mark.parametrize("part, value, said", [
    ("database", "no_such_database", 'database "no_such_database" does not exist'),
    ("user", "no_such_role", 'role "no_such_role" does not exist'),
])
def test_a_login_the_server_refuses_is_reported_at_once_with_its_cause(pg_server, part, value, said):
    """The pool keeps its connection failures to itself: without asking the server directly, a
    wrong database or role waited two full deadlines and then said only that no connection came."""
    url = _with(pg_server, **{part: value}) + "?schema=urls_refused"
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        PostgresBackend(url, retry_deadline=5.0)
    assert time.monotonic() - started < 9.0  # not retried to the deadline and beyond
    assert said in str(caught.value) and "retrying will not help" in caught.value.recover
    assert said in caught.value.detail


def test_a_server_that_is_down_is_retried_to_the_deadline_and_named(root):
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/postgres"
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        Coordinator.open(root, url=url + "?schema=urls_down")
    # the default deadline (30 s) plus at most one connection wait, not two deadlines
    assert 25.0 < time.monotonic() - started < 45.0
    assert "Connection refused" in str(caught.value)


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


@pytest.mark.parametrize("command", [["status"], ["journal", "verify"], ["watch", "--once"]])
def test_the_cli_reports_a_refused_url_in_one_line(pg_server, root, command, monkeypatch, capsys):
    from agent_coherence.cli import main

    assert main([*command, "--root", str(root), "--url", f"{pg_server}?schema=Urls_Bad"]) == 2
    monkeypatch.setenv("AGENT_COHERENCE_URL", f"{pg_server}?schema=urls_x&bogus=1")
    assert main([*command, "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "schema name 'Urls_Bad': use lower case" in err and 'invalid URI query parameter: "bogus"' in err
    assert "Traceback" not in err
