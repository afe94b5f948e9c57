"""The PostgreSQL backend's URL: which parameters are ours and which go to libpq, and the checks
made before any connection (a malformed URL is a ValueError, and changes nothing).

``schema=`` picks the schema; ``prepare_threshold=`` sets psycopg's (``none`` behind PgBouncer in
transaction mode). Every other parameter reaches libpq exactly as written.
"""

from __future__ import annotations

import urllib.parse

import psycopg
from psycopg.conninfo import conninfo_to_dict

DEFAULT_SCHEMA = "agent_coherence"
MAX_NAME_BYTES = 63  # NAMEDATALEN - 1

# The URL's parameters that are ours, not libpq's: taken out before the rest goes to libpq.
OUR_PARAMETERS = ("schema", "prepare_threshold")


def _take_ours(url: str) -> tuple[str, dict[str, str]]:
    """(the URL without our parameters, our parameters by name: the first of each, decoded)."""
    # The rest goes to libpq exactly as written. Decoding and re-encoding the parameters would turn
    # a %20 into a "+", which libpq keeps as a plus ("options=-c%20work_mem%3D8MB"); rebuilding the
    # URL from its parts would drop the empty host of "postgresql:///db?host=/socket/dir".
    base, _, query = url.partition("?")
    ours: dict[str, str] = {}
    rest = []
    for piece in (piece for piece in query.split("&") if piece):
        name, _, value = piece.partition("=")
        if urllib.parse.unquote(name) in OUR_PARAMETERS:
            ours.setdefault(urllib.parse.unquote(name), urllib.parse.unquote(value))
        else:
            rest.append(piece)
    return (f"{base}?{'&'.join(rest)}" if rest else base), ours


def split_url(url: str) -> tuple[str, str]:
    """(libpq conninfo, schema): the ``schema`` query parameter is ours, the rest goes to libpq."""
    conninfo, ours = _take_ours(url)
    schema = ours.get("schema", DEFAULT_SCHEMA)
    if not schema.replace("_", "").isalnum() or schema[0].isdigit():
        raise ValueError(f"schema name {schema!r}: use letters, digits and underscores")
    if schema != schema.lower():
        # Every statement quotes the name, so "Team" would be a schema apart from the "team" that
        # psql, and a host configured with the other spelling, means by Team: two fleets apart.
        raise ValueError(f"schema name {schema!r}: use lower case ({schema.lower()!r})")
    if schema.startswith("pg_"):
        raise ValueError(f"schema name {schema!r}: the prefix pg_ is reserved by PostgreSQL")
    if len(schema.encode()) > MAX_NAME_BYTES:
        # PostgreSQL would cut it to its first 63 bytes: two names sharing them would be one schema.
        raise ValueError(f"schema name {schema!r}: at most {MAX_NAME_BYTES} bytes, PostgreSQL's limit")
    return conninfo, schema


def url_prepare_threshold(url: str, default: int | None) -> int | None:
    """The URL's ``prepare_threshold=`` (how many executions of a statement before it is prepared
    on the server, 1 or more, or ``none``: never, as PgBouncer in transaction mode needs), else
    ``default``. In the URL it reaches every client of the schema alike, the CLI and the Claude
    Code hook too. 0 (prepare at once) is refused: the session's settings are one multi-statement
    string, which the server cannot prepare."""
    value: object = _take_ours(url)[1].get("prepare_threshold", default)
    if isinstance(value, str) and value.lower() in ("none", "off"):
        return None
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if value is None or (type(value) is int and value >= 1):
        return value
    raise ValueError(f"prepare_threshold={value!r}: give a number of executions, 1 or more (5 by default), "
                     "or none (never prepare: behind PgBouncer in transaction mode)")


def check_url(url: str) -> None:
    """Refuse a malformed URL (ValueError) without connecting: a bad schema name, an unknown
    parameter, a string libpq cannot parse."""
    conninfo, _ = split_url(url)
    url_prepare_threshold(url, None)
    try:
        conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as error:  # an unknown parameter, a malformed URL
        raise ValueError(f"PostgreSQL URL: {error}".strip()) from None
