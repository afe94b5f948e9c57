"""The package's loggers: ``agent_coherence`` and its children (``agent_coherence.journal``,
``agent_coherence.backends.sqlite``, ``agent_coherence.channels``, ``agent_coherence.liveness``).

The package only emits records; it adds no handler except a ``NullHandler`` on the package
logger, so nothing is printed unless the application configures logging. The modules on the
Claude Code hook path must start fast and ``logging`` imports ``threading``, so they log through
:func:`log`, which never imports it: while no code in the process has imported ``logging``, no
handler can exist to receive a record, and the record is skipped.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging

PACKAGE = "agent_coherence"
DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40  # the logging module's levels, without importing it


def get_logger(part: str = "") -> "logging.Logger":
    """The logger ``agent_coherence.<part>`` (the package logger for an empty ``part``)."""
    import logging

    package = logging.getLogger(PACKAGE)
    if not any(isinstance(handler, logging.NullHandler) for handler in package.handlers):
        package.addHandler(logging.NullHandler())
    return logging.getLogger(f"{PACKAGE}.{part}" if part else PACKAGE)


def log(part: str, level: int, message: str, *args: object) -> None:
    """Emit ``message % args`` on ``agent_coherence.<part>``, unless ``logging`` was never
    imported in this process (then nothing could receive it)."""
    if "logging" in sys.modules:
        get_logger(part).log(level, message, *args)
