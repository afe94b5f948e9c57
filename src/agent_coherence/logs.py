"""The package's loggers: ``agent_coherence`` and its children (``agent_coherence.journal``,
``agent_coherence.backends.sqlite``, ...).

The package only emits records; it adds no handler except a ``NullHandler`` on the package
logger, so nothing is printed unless the application configures logging. ``logging`` (which
imports ``threading``) is loaded on the first call, not at import: the Claude Code hook path
imports the modules that log and must start fast.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

PACKAGE = "agent_coherence"


def get_logger(part: str = "") -> "logging.Logger":
    """The logger ``agent_coherence.<part>`` (the package logger for an empty ``part``)."""
    import logging

    package = logging.getLogger(PACKAGE)
    if not any(isinstance(handler, logging.NullHandler) for handler in package.handlers):
        package.addHandler(logging.NullHandler())
    return logging.getLogger(f"{PACKAGE}.{part}" if part else PACKAGE)
