"""Names the LangGraph adapter keeps in the coordinator, and the keys it adds to a run's config.

- ``langgraph:thread/<thread_id>``: the lease one run holds on its thread (``coherent_graph``);
- ``langgraph:head/<thread_id, quoted>/<checkpoint_ns>``: the ref naming the thread's head
  checkpoint in one namespace (the thread id is percent-quoted so one thread's prefix never
  matches another's);
- ``langgraph:effect/<thread_id, quoted>/<task_id>/<artifact>#<n>``: the receipt of a node's n-th
  confirmed write of an artifact.

A fenced run carries ``coherence_holder`` and ``coherence_fence`` in ``config["configurable"]``:
LangGraph hands that dict to every ``put`` and ``put_writes`` (on whichever thread they run) and
copies str and int values into the checkpoint's metadata, so each checkpoint records the run and
fence that wrote it. Keys starting with ``__`` are passed along but never persisted.
"""

from __future__ import annotations

import os
import socket
import uuid
from functools import lru_cache
from typing import Any
from urllib.parse import quote

HOLDER_KEY = "coherence_holder"
FENCE_KEY = "coherence_fence"
FORK_KEY = "__coherence_fork_of"
COORDINATOR_KEY = "__coherence_coordinator"

_HOST = socket.gethostname()


def thread_lease_key(thread_id: Any) -> str:
    """The lease ``coherent_graph`` takes for a run on ``thread_id``."""
    return f"langgraph:thread/{thread_id}"


HEADS_PREFIX = "langgraph:head/"


@lru_cache(maxsize=4096)
def _quoted(thread_id: str) -> str:
    """The percent-quoted thread id (remembered: every put of a run names its head ref twice)."""
    return quote(thread_id, safe="")


def thread_heads_prefix(thread_id: Any) -> str:
    return f"{HEADS_PREFIX}{_quoted(str(thread_id))}/"


def head_ref_name(thread_id: Any, checkpoint_ns: str = "") -> str:
    """The ref that names the head checkpoint of ``(thread_id, checkpoint_ns)``."""
    return thread_heads_prefix(thread_id) + checkpoint_ns


def thread_effects_prefix(thread_id: Any) -> str:
    return f"langgraph:effect/{_quoted(str(thread_id))}/"


def effect_ref_name(thread_id: Any, task_id: str, artifact: str, n: int) -> str:
    return f"{thread_effects_prefix(thread_id)}{task_id}/{artifact}#{n}"


def run_holder(kind: str) -> str:
    """A holder name unique to one run (or one call): kind, host, pid and a random id."""
    return f"{kind}:{_HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
