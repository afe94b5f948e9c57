"""``agent-coherence status``: what is held, written, pending and wrong under a root, read
without recovering anything and without a journal scan (the counts come from indexes; the recent
problems from the journal's last entries).

A journal entry among the last ones that cannot be read does not hide the rest: the report is
built without the recent problems, and says why (``journal.error``, present only then)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from . import recovery
from .cli_output import ago, compact, entry_dict, section, when
from .errors import JournalCorrupt

CORE_PROBLEM_KINDS = ("conflict.lease", "conflict.version", "write.failed")
# What the adapters journal when they refuse a write or find one that went wrong: a stale view or a
# refused path is as much a conflict as a held lease, and status is where a user looks for them.
ADAPTER_PROBLEM_KINDS = ("conflict.view", "conflict.path", "write.missing", "write.mismatch",
                         "write.unconfirmed", "anomaly.zero_work")
PROBLEM_KINDS = CORE_PROBLEM_KINDS + ADAPTER_PROBLEM_KINDS
PROBLEM_SCAN = 1000  # how far back status looks for recent conflicts and failures


def build(coord: Any, limit: int) -> dict[str, Any]:
    """What ``status`` shows, as plain data (``--json`` prints it as it is): at most ``limit``
    leases, versions and recent problems; every pending write, channel and anomaly."""
    backend = coord.backend
    now = backend.now()
    leases = [dict(asdict(r), expires_in=r.expires_at - now) for r in backend.list_leases()]
    intents = [
        dict(asdict(i), writer_dead=recovery.writer_is_dead(backend, i)) for i in backend.list_intents()
    ]
    total = backend.journal_count()  # from the sequence's bounds and indexes: no journal scan
    journal_error: JournalCorrupt | None = None
    try:
        recent = backend.journal_tail(PROBLEM_SCAN)
        problems = [entry_dict(e) for e in recent if e.kind in PROBLEM_KINDS][-limit:]
    except JournalCorrupt as error:
        journal_error, recent, problems = error, [], []
    return {
        "root": coord.root,
        "backend": backend.name,
        "database": getattr(backend, "path", None),
        "schema": getattr(backend, "schema", None),
        "now": now,
        "leases": leases[:limit],
        "lease_count": len(leases),
        "versions": [asdict(v) for v in backend.list_versions(limit)],
        "intents": intents,
        "problems": problems,
        "problem_counts": {kind: backend.journal_count(kind=kind) for kind in PROBLEM_KINDS},
        "channels": [backend.channel_stats(c.name) | {"sla": c.sla, "durable": c.durable}
                     for c in backend.list_channels()],
        "anomalies": [a.model_dump() for a in coord.liveness.anomalies(report=False)],
        # "error" only when there is one: the report's shape stays what readers already parse
        "journal": {"entries": total, "head": recent[-1].hash if recent else None}
                   | ({"error": _error_dict(journal_error)} if journal_error is not None else {}),
    }


def _error_dict(error: JournalCorrupt) -> dict[str, Any]:
    return {"error": type(error).__name__, "message": error.message, "recover": error.recover,
            "seq": error.facts.get("seq")}


def print_report(report: dict[str, Any]) -> None:
    """Print :func:`build`'s report as tables."""
    now = report["now"]
    where = report["database"] or f"schema {report['schema']}"
    print(f"agent-coherence status of {report['root']} ({report['backend']}: {where})")

    leases = report["leases"]
    section(f"Live leases ({report['lease_count']})", ["KEY", "HOLDER", "FENCE", "EXPIRES IN"], [
        [r["key"], r["holder"], r["fence"], f"{r['expires_in']:.1f}s"] for r in leases
    ])
    section(f"Recent versions ({len(report['versions'])} most recently written)",
             ["KEY", "VERSION", "WRITER", "FENCE", "SIZE", "SHA256", "UPDATED"], [
        [v["key"], v["version"], v["writer"], v["fence"], v["size"],
         (v["sha256"] or "(deleted)")[:12], ago(now - v["updated_at"])] for v in report["versions"]
    ])
    section(f"Pending writes ({len(report['intents'])})",
             ["KEY", "HOLDER", "VERSION", "WRITER", "AGE", "STATE"], [
        [i["key"], i["holder"], f"{i['base_version']}->{i['new_version']}", f"pid {i['pid']}@{i['host']}",
         ago(now - i["created_at"]),
         "writer dead: resolved at next open or write" if i["writer_dead"] else "in flight"]
        for i in report["intents"]
    ])
    counts = report["problem_counts"]
    totals = ", ".join(f"{counts[k]} {k}" for k in PROBLEM_KINDS if k in CORE_PROBLEM_KINDS or counts[k])
    section(f"Recent conflicts and failures (all time: {totals})",
             ["SEQ", "TIME", "KIND", "KEY", "HOLDER", "DETAIL"], [
        [e["seq"], when(e["ts"]), e["kind"], e["key"] or "-", e["holder"] or "-", compact(e["data"])]
        for e in report["problems"]
    ])
    section(f"Channels ({len(report['channels'])})",
             ["CHANNEL", "DEPTH", "READY", "IN FLIGHT", "DELAYED", "OLDEST READY", "SLA", "MODE"], [
        [c["channel"], c["depth"], c["ready"], c["in_flight"], c.get("delayed", 0),
         ago(c["oldest_ready_age"]) if c["oldest_ready_age"] is not None else "-",
         f"{c['sla']:g}s" if c["sla"] is not None else "-", "durable" if c["durable"] else "fast"]
        for c in report["channels"]
    ])
    section(f"Anomalies ({len(report['anomalies'])})", ["KIND", "SUBJECT", "DETAIL"], [
        [a["kind"], a["subject"], a["detail"]] for a in report["anomalies"]
    ])
    journal = report["journal"]
    if "error" in journal:
        print(f"\nJournal: {journal['entries']} entries; CORRUPT: {journal['error']['message']}")
        print("  (recent conflicts and failures not shown; see: agent-coherence journal verify)")
        return
    print(f"\nJournal: {journal['entries']} entries, head {journal['head'] or '(empty)'}")
    print("  (check the chain with: agent-coherence journal verify)")
