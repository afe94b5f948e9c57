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
    "BackendUnavailable": "errors",
    "scan_dir": "durable",
    "Retention": "retention",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:
    from typing import Any

    from .coordinator import Coordinator
    from .durable import scan_dir
    from .errors import (
        BackendUnavailable, ChannelError, CoherenceError, DurabilityError, ForeignEdit,
        JournalCorrupt, LeaseHeld, LeaseLost, NotARegularFile, PathOutsideRoot, SlotOccupied, StaleReceipt,
        VersionConflict,
    )
    from .models import Anomaly, Delivery, Event, Lease, Message, Snapshot, VersionInfo, WriteReceipt
    from .retention import Retention


__getattr__ = lazy_getattr(globals(), _EXPORTS)


def __dir__() -> list[str]:
    return __all__
