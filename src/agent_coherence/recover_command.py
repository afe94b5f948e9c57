"""``agent-coherence recover``: resolve the interrupted writes of dead writers (what every open
does, here reported) and sweep the leftover temp files (:mod:`temp_sweep`), one line per item and
a summary. A dry run changes nothing: it lists the intents whose writer is dead (whether each
would roll forward or back is decided when it is resolved) and the temp files that would go."""

from __future__ import annotations

import json
import sys
from typing import Any

from . import recovery


def run(coord: Any, *, dry_run: bool, as_json: bool) -> int:
    """Exit 0: done (or nothing to do); 1: a leftover temp file could not be removed."""
    backend = coord.backend
    if dry_run:
        intents = [{"key": i.key, "intent_id": i.intent_id, "pid": i.pid, "host": i.host}
                   for i in backend.list_intents() if recovery.writer_is_dead(backend, i)]
    else:
        intents = [{"key": r.key, "intent_id": r.intent_id, "rolled_forward": r.rolled_forward}
                   for r in coord.recover()]
    swept = coord.sweep_temp_files(dry_run=dry_run)
    status = 1 if swept.failed else 0
    if as_json:
        print(json.dumps({"root": coord.root, "dry_run": dry_run, "intents": intents, "removed": swept.removed,
                          "kept": [{"path": p, "why": w} for p, w in swept.kept],
                          "failed": [{"path": p, "error": e} for p, e in swept.failed]}, indent=2, sort_keys=True))
        return status
    for i in intents:
        if dry_run:
            print(f"would resolve {i['key']} (intent {i['intent_id']}: writer pid {i['pid']} on {i['host']} is dead)")
        else:
            print(f"rolled {'forward' if i['rolled_forward'] else 'back'} {i['key']} (intent {i['intent_id']})")
    removed = "would be removed" if dry_run else "removed"
    for path in swept.removed:
        print(f"{'would remove' if dry_run else 'removed'} {path} (a temp file whose writer is gone)")
    for path, why in swept.kept:
        print(f"kept {path}: {why}")
    for path, error in swept.failed:
        print(f"could not remove {path}: {error}", file=sys.stderr)
    resolved = "would be resolved" if dry_run else "resolved"
    print(f"recover: {len(intents)} interrupted writes {resolved}; {len(swept.removed)} leftover temp files "
          f"{removed}, {len(swept.kept)} kept, {len(swept.failed)} not removable (the whole root was walked)")
    return status
