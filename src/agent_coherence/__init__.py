"""agent-coherence: leases, confirmed durable writes and acknowledged channels for concurrent agents.

``import agent_coherence`` is cheap: the public names below are loaded on first use, so the Claude
Code hook path (which imports submodules directly) never pays for pydantic or any framework.

    from agent_coherence import Coordinator
    coord = Coordinator.open(root=".")
"""

from __future__ import annotations

TYPE_CHECKING = False  # importing typing would cost the hook path several milliseconds

__version__ = "0.1.0"

from .lazy import lazy_getattr

_EXPORTS = {
    "Coordinator": "coordinator",
    "Lease": "models",
    "WriteReceipt": "models",
    "Snapshot": "models",
    "VersionInfo": "models",
    "Event": "models",
    "Message": "models",
    "Delivery": "models",
    "Anomaly": "models",
    "CoherenceError": "errors",
    "LeaseHeld": "errors",
    "LeaseLost": "errors",
    "VersionConflict": "errors",
    "ForeignEdit": "errors",
    "DurabilityError": "errors",
    "PathOutsideRoot": "errors",
    "NotARegularFile": "errors",
    "ChannelError": "errors",
    "StaleReceipt": "errors",
    "SlotOccupied": "errors",
    "JournalCorrupt": "errors",
    "KeyIsADirectory": "errors",
    "BackendUnavailable": "errors",
    "scan_dir": "durable",
    "Retention": "retention",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:
    # "import X as X": an explicit re-export, so `from agent_coherence import Coordinator` type-checks
    # under mypy --strict (no implicit re-export) and pyright; __all__ is built at run time, so
    # type checkers cannot read it.
    from typing import Any

    from .coordinator import Coordinator as Coordinator
    from .durable import scan_dir as scan_dir
    from .errors import (
        BackendUnavailable as BackendUnavailable, ChannelError as ChannelError, CoherenceError as CoherenceError,
        DurabilityError as DurabilityError, ForeignEdit as ForeignEdit, JournalCorrupt as JournalCorrupt,
        KeyIsADirectory as KeyIsADirectory, LeaseHeld as LeaseHeld, LeaseLost as LeaseLost,
        NotARegularFile as NotARegularFile,
        PathOutsideRoot as PathOutsideRoot, SlotOccupied as SlotOccupied, StaleReceipt as StaleReceipt,
        VersionConflict as VersionConflict,
    )
    from .models import (
        Anomaly as Anomaly, Delivery as Delivery, Event as Event, Lease as Lease, Message as Message,
        Snapshot as Snapshot, VersionInfo as VersionInfo, WriteReceipt as WriteReceipt,
    )
    from .retention import Retention as Retention


__getattr__ = lazy_getattr(globals(), _EXPORTS)


def __dir__() -> list[str]:
    return __all__
