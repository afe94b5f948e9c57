"""CrewAI adapter: coordinated tool writes, coherent file tools, fail-closed global hooks.

``import agent_coherence.adapters.crewai`` does not import crewai (that takes seconds and writes
under ``$HOME``); each name below loads its module, and crewai with it, on first use.

- :func:`coherent_tool` wraps any CrewAI tool so the files its calls write are leased for the call,
  confirmed on disk afterwards and recorded as versions.
- :class:`CoherentFileWriterTool` / :class:`CoherentFileReadTool`: drop-ins for crewai_tools'
  ``FileWriterTool`` / ``FileReadTool`` whose writes are ``Coordinator.write`` (atomic, confirmed)
  and checked against the version the agent read.
- :func:`install_crewai_hooks` / :func:`uninstall_crewai_hooks`: global before/after tool-call hooks
  that coordinate every tool call that writes a file, fail-closed, and watch tasks' declared outputs.

See docs/crewai.md for what is enforced and what is only detected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...lazy import lazy_getattr

_EXPORTS = {
    "coherent_tool": "tools",
    "CoherentTool": "tools",
    "CoherentFileWriterTool": "file_tools",
    "CoherentFileReadTool": "file_tools",
    "install_crewai_hooks": "hooks",
    "uninstall_crewai_hooks": "hooks",
    "CrewAIHooks": "hooks",
    "Refusal": "failures",
    "default_paths": "targets",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .failures import Refusal
    from .file_tools import CoherentFileReadTool, CoherentFileWriterTool
    from .hooks import CrewAIHooks, install_crewai_hooks, uninstall_crewai_hooks
    from .targets import default_paths
    from .tools import CoherentTool, coherent_tool


__getattr__ = lazy_getattr(globals(), _EXPORTS)


def __dir__() -> list[str]:
    return __all__
