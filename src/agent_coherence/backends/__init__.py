"""Storage backends behind the Backend protocol (``base.py``).

``open_backend`` picks one from a URL without importing the others: ``None`` is the URL in the
``AGENT_COHERENCE_URL`` environment variable if set, else the embedded SQLite database under
``<root>/.agent-coherence/``; ``sqlite:///path/to/file.db`` names another file;
``postgresql://...`` names the distributed backend (``backends/postgres.py``, the ``[postgres]``
extra; psycopg is imported only then).
"""

from __future__ import annotations

import os

from ..errors import BackendUnavailable
from ..paths import STATE_DIR

TYPE_CHECKING = False  # the protocol module imports typing: kept off the hook path
if TYPE_CHECKING:
    from .base import Backend

DATABASE_NAME = "state.db"


def __getattr__(name: str) -> object:
    if name == "Backend":  # ``from agent_coherence.backends import Backend`` still works
        from .base import Backend

        return Backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_database(root: str) -> str:
    return os.path.join(os.path.realpath(root), STATE_DIR, DATABASE_NAME)


URL_VARIABLE = "AGENT_COHERENCE_URL"


def _unsupported(url: str) -> ValueError:
    """The refusal of a URL no backend takes, naming it without the password it may hold (a
    ``postgresql+psycopg://user:secret@host/db`` copied from another tool's settings)."""
    scheme, at, rest = url.partition("://")
    userinfo, has_user, place = rest.rpartition("@")
    if at and has_user and ":" in userinfo:
        url = f"{scheme}://{userinfo.split(':', 1)[0]}:***@{place}"
    return ValueError(f"unsupported backend URL {url!r}: use None, sqlite:///<file> or postgresql://...")


def check_url(url: str | None) -> None:
    """Refuse a URL ``open_backend`` would refuse (ValueError), without opening or creating
    anything, so a bad URL leaves the disk as it was. A missing PostgreSQL driver is left to
    ``open_backend`` (BackendUnavailable, with how to install it)."""
    if url is None:
        url = os.environ.get(URL_VARIABLE) or None
    if url is None or url == "sqlite:" or url.startswith("sqlite:///"):
        return
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres_url import check_url as check_postgres_url
        except ImportError:
            return
        check_postgres_url(url)
        return
    raise _unsupported(url)


def _no_database(database: str) -> bool:
    """Whether there is no SQLite state at ``database`` for a caller that must not create one.
    A state directory that is a file is not "no state": the open goes on and reports it. An empty
    file (a first open killed before SQLite wrote its header) with no write-ahead log holds nothing,
    and SQLite would write a new schema into it."""
    try:
        if os.stat(database).st_size:
            return False
    except FileNotFoundError:
        return True
    except NotADirectoryError:
        return False
    try:
        return os.stat(database + "-wal").st_size == 0
    except FileNotFoundError:
        return True


def open_backend(root: str, url: str | None = None, *, create: bool = True) -> Backend:
    """The backend ``url`` names (see the module docstring). With ``create=False`` a state that
    does not exist yet (no database file, no schema on the server) is not created:
    BackendUnavailable with ``reason="missing"`` says so instead."""
    if url is None:
        url = os.environ.get(URL_VARIABLE) or None
    if url is None or url == "sqlite:" or url.startswith("sqlite:///"):
        from .sqlite import SQLiteBackend

        database = default_database(root) if url is None or url == "sqlite:" else url[len("sqlite://"):]
        if not create and _no_database(database):
            raise BackendUnavailable(
                f"no agent-coherence state at {database} yet (nothing has been coordinated here)",
                recover="check the root or URL; a coordinator opened with create=True (the default) makes it",
                backend="sqlite", detail="no database file", errno=None, reason="missing", path=database,
            )
        return SQLiteBackend(database)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from .postgres import PostgresBackend
        except ImportError as error:
            raise BackendUnavailable(
                f"the PostgreSQL backend cannot be loaded: {error}",
                recover=("install its driver (the postgres extra): "
                         "pip install 'psycopg[binary]>=3.1' 'psycopg-pool>=3.2'"),
                backend="postgresql", detail=str(error),
            ) from error
        return PostgresBackend(url, create=create)
    raise _unsupported(url)
