"""The ``agent-coherence`` command: status, the journal, a filesystem doctor, and the Claude Code
hook and installer.

Start-up cost matters: ``agent-coherence hook`` runs on every Claude Code tool call, so it is
dispatched before anything else is imported (not even argparse). Every other subcommand imports
what it needs when it runs.

Exit codes: 0 success; 1 a check failed (``doctor``, ``journal verify``) or ``recover`` could not
remove a leftover; 2 a usage error or an error from the library (its message and recovery hint go
to stderr, never a traceback).

Read-only commands (``status``, ``journal``), and ``recover``, open the state without recovering
interrupted writes (``recover`` does that itself, to report it) and do not create a state database
where there is none.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing is not imported at run time: `agent-coherence hook` passes here
if TYPE_CHECKING:
    from typing import Any, Callable

HOOK_MODULE = "agent_coherence.adapters.claude_code.hook"
INSTALLER_MODULE = "agent_coherence.adapters.claude_code.installer"


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["hook"]:
        # The hot path: Claude Code pays for this on every tool call. Nothing else is imported.
        __import__(HOOK_MODULE)
        hook = sys.modules[HOOK_MODULE]
        if argv is None:
            hook.run()  # exits without closing the database: see hook.run
        return hook.main()

    parser = _build_parser()
    options = parser.parse_args(args)
    if not hasattr(options, "run"):
        return _usage(parser)
    from .errors import CoherenceError

    try:
        return options.run(options)
    except CoherenceError as error:
        print(f"agent-coherence: {type(error).__name__}: {error.message}", file=sys.stderr)
        print(f"  recover: {error.recover}", file=sys.stderr)
        return 2
    except UsageError as error:
        print(f"agent-coherence: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error. Keep Python from complaining
        # again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:
        # A filesystem problem outside the library's typed errors (a root that is a file, ...):
        # one message that names it, never a traceback.
        print(f"agent-coherence: {type(error).__name__}: {error}", file=sys.stderr)
        print("  recover: check the path and its permissions, then retry", file=sys.stderr)
        return 2


class UsageError(Exception):
    """A mistake in the command line or its arguments (exit 2)."""


def _usage(parser: Any) -> int:
    # A usage error, exit 2. The installer writes the hook in shell form (`agent-coherence hook`),
    # which every Claude Code version runs with its argument, so no installed hook runs the bare
    # command; only the exec form on a client older than 2.1.139 would (see docs/claude-code.md).
    parser.print_help(sys.stderr)
    return 2


# -- the parser -------------------------------------------------------------------------------


def _build_parser() -> Any:
    import argparse

    from . import __version__

    parser = argparse.ArgumentParser(
        prog="agent-coherence",
        description="Inspect and check the coordination state of a workspace.",
    )
    parser.add_argument("--version", action="version", version=f"agent-coherence {__version__}")
    # --root/--url are accepted before or after the subcommand; after it they win.
    parser.add_argument("--root", default=".", help="workspace root (default: .)")
    parser.add_argument("--url", default=None, help="backend URL (default: SQLite under the root)")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--root", default=argparse.SUPPRESS, help="workspace root (default: .)")
    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument("--url", default=argparse.SUPPRESS,
                         help="backend URL: sqlite:///FILE or postgresql://... (default: SQLite under the root)")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    status = sub.add_parser("status", parents=[where, backend],
                            help="live leases, recent versions, pending writes, conflicts and failures")
    status.add_argument("--limit", type=int, default=10, help="rows per section (default: 10)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(run=cmd_status)

    journal = sub.add_parser("journal", help="verify or show the hash-chained journal")
    journal.set_defaults(run=lambda options: _usage(journal))
    journal_sub = journal.add_subparsers(title="journal commands", metavar="ACTION")
    verify = journal_sub.add_parser("verify", parents=[where, backend], help="check the whole hash chain")
    verify.add_argument("--anchor", default=None, metavar="HASH",
                        help="a head recorded earlier: fail if it is no longer in the chain (a cut tail)")
    verify.set_defaults(run=cmd_journal_verify)
    compact = journal_sub.add_parser(
        "compact", parents=[where, backend],
        help="apply the retention policy now: remove old journal entries behind a checkpoint, and "
             "released leases, expired dedup/effect rows, ended workers, finished assignments")
    compact.add_argument("--before", default=None, metavar="WHEN",
                         help="remove journal entries older than WHEN: an age (30d, 12h, 90m) or an ISO "
                              "date/time (2026-11-01, 2026-11-01T12:00)")
    compact.add_argument("--keep", type=int, default=None, metavar="N",
                         help="keep at most the newest N journal entries, besides the checkpoint that anchors "
                              "what was removed (one per journal chain on PostgreSQL); 0 keeps the newest")
    compact.add_argument("--dry-run", action="store_true", help="count what would be removed; change nothing")
    compact.add_argument("--json", action="store_true", help="machine-readable output")
    compact.set_defaults(run=cmd_journal_compact)
    show = journal_sub.add_parser("show", parents=[where, backend], help="print entries, newest last")
    show.add_argument("key", nargs="?", help="only entries about this artifact key")
    show.add_argument("--limit", type=int, default=50, help="the newest N entries (default: 50)")
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    show.set_defaults(run=cmd_journal_show)

    doctor = sub.add_parser("doctor", parents=[where],
                            help="check that the root's filesystem gives the guarantees the layer needs")
    doctor.add_argument("--strict", action="store_true", help="treat warnings as failures")
    doctor.set_defaults(run=cmd_doctor)

    for name, run, text in (("install", cmd_install, "install the hooks"),
                            ("uninstall", cmd_uninstall, "remove the hooks")):
        command = sub.add_parser(name, parents=[where], help=f"{text} of an agent framework")
        command.add_argument("target", choices=["claude-code"], help="the framework")
        scope = command.add_mutually_exclusive_group()
        scope.add_argument("--project", dest="scope", action="store_const", const="project",
                           help=".claude/settings.json in the root (default, shared with the team)")
        scope.add_argument("--local", dest="scope", action="store_const", const="local",
                           help=".claude/settings.local.json in the root (this checkout only)")
        scope.add_argument("--user", dest="scope", action="store_const", const="user",
                           help="~/.claude/settings.json (every project of this user)")
        if name == "install":
            command.add_argument("--plugin", metavar="DIR",
                                 help="write a Claude Code plugin layout into DIR instead of settings")
            command.add_argument("--command", default=None,
                                 help="the hook command to configure (default: `agent-coherence` from PATH "
                                      "in the shared project file, or, when it is not on PATH, the "
                                      "absolute path in .claude/settings.local.json; the absolute path "
                                      "for --local and --user)")
        command.set_defaults(run=run, scope="project")

    recover = sub.add_parser("recover", parents=[where, backend],
                             help="resolve dead writers' interrupted writes and remove leftover temp files "
                                  "(walks the whole root)")
    recover.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")
    recover.add_argument("--json", action="store_true", help="machine-readable output")
    recover.set_defaults(run=cmd_recover)

    watch = sub.add_parser("watch", parents=[where, backend], help="report liveness anomalies as they appear")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between checks (default: 2)")
    watch.add_argument("--once", action="store_true", help="check once; exit 1 if anything was found")
    watch.set_defaults(run=cmd_watch)

    version = sub.add_parser("version", help="print the version")
    version.set_defaults(run=cmd_version)
    # Listed for --help only: `hook` is dispatched in main() before any parser is built.
    sub.add_parser("hook", help="the Claude Code hook entry point (run by Claude Code, event JSON on stdin)")
    return parser


# -- opening the state ------------------------------------------------------------------------


def _root(options: Any) -> str:
    root = os.path.realpath(options.root)
    if not os.path.isdir(root):
        what = "not a directory" if os.path.exists(root) else "no such directory"
        raise UsageError(f"--root {options.root}: {what}")
    return root


def _open_existing(options: Any) -> Any:
    """The Coordinator for ``--root``/``--url`` without recovery, or None if there is no state
    there yet: a read-only command creates no database file and no PostgreSQL schema, so a
    mistyped root or schema is reported as empty rather than made."""
    from .errors import BackendUnavailable

    try:
        return _open(_root(options), options.url, recover=False, create=False)
    except BackendUnavailable as error:
        if getattr(error, "reason", None) == "missing":
            return None
        raise


def _open(root: str, url: str | None, **options: Any) -> Any:
    """``Coordinator.open``, with a URL it refuses (an unknown scheme, a bad schema name or libpq
    parameter; from ``--url`` or ``AGENT_COHERENCE_URL``) reported as a usage error."""
    from .coordinator import Coordinator

    try:
        return Coordinator.open(root, url, **options)
    except ValueError as error:
        raise UsageError(f"backend URL: {error}") from None


def _no_state(options: Any) -> str:
    from .backends import URL_VARIABLE

    url = options.url or os.environ.get(URL_VARIABLE) or ""
    if url.startswith(("postgresql://", "postgres://")):
        from .backends.postgres import split_url  # loaded already: the open just used it

        where = f"in the PostgreSQL schema {split_url(url)[1]!r}"  # not the URL: it may hold a password
    elif url.startswith("sqlite:///"):
        path = url[len('sqlite://'):]
        where = f"in {path} ({'an empty database file' if os.path.exists(path) else 'no such database file'})"
    else:
        where = f"under {_root(options)}"
    return f"no agent-coherence state {where} yet (nothing has been coordinated here)"


# -- status -----------------------------------------------------------------------------------


def cmd_status(options: Any) -> int:
    from . import status_command
    from .cli_output import print_json

    if options.limit < 0:
        # A negative limit would slice from the end: rows silently dropped, not an error.
        raise UsageError("--limit must be at least 0")
    coord = _open_existing(options)
    if coord is None:
        if options.json:
            print_json({"root": _root(options), "state": None})
        else:
            print(_no_state(options))
        return 0
    try:
        report = status_command.build(coord, options.limit)
    finally:
        coord.close()
    if options.json:
        print_json(report)
    else:
        status_command.print_report(report)
    unreadable = report["journal"].get("error")
    if unreadable is not None:  # the rest was shown; the damage is reported as a failed check
        print(f"agent-coherence: {unreadable['error']}: {unreadable['message']}", file=sys.stderr)
        print(f"  recover: {unreadable['recover']}", file=sys.stderr)
        return 1
    return 0


# -- journal ----------------------------------------------------------------------------------


def cmd_journal_verify(options: Any) -> int:
    """Exit 0: the chain verifies; 1: it does not (altered, or unreadable entries, or the anchor
    is gone); 2: the state cannot be opened at all (a damaged database: see main). Streams the
    journal: memory stays flat however long it is."""
    from .errors import JournalCorrupt
    from .journal import GENESIS, anchor_hash
    from .progress import Progress

    try:
        anchor = anchor_hash(options.anchor)  # a mistyped anchor is a usage error, not a cut journal
    except ValueError as malformed:
        raise UsageError(f"--anchor: {malformed}") from None
    coord = _open_existing(options)
    if coord is None:
        if anchor is not None:
            # A head recorded earlier cannot be in a journal that is not there: the state removed
            # whole is the longest cut of all, and an empty journal fails the same check.
            print(f"journal CORRUPT: the anchor {anchor} is not in the journal: {_no_state(options)}",
                  file=sys.stderr)
            print("  recover: check the root or URL; if it is right, the whole record after the anchor is lost: "
                  "restore the state directory from a backup", file=sys.stderr)
            return 1
        print(f"journal OK: 0 entries, head {GENESIS}: {_no_state(options)}")
        return 0
    try:
        with Progress("verifying the journal", coord.backend.journal_count()) as progress:
            walk = coord.journal.walk(progress.update, anchor=anchor)
    except JournalCorrupt as corrupt:
        print(f"journal CORRUPT: {corrupt.message}", file=sys.stderr)
        print(f"  recover: {corrupt.recover}", file=sys.stderr)
        return 1
    finally:
        coord.close()
    print(f"journal OK: {walk.count} entries, head {walk.head}")
    if walk.compacted_chains > 1:
        print(f"  {walk.removed} earlier entries were compacted from {walk.compacted_chains} journal chains; "
              "each of them starts at the entry its own newest checkpoint anchors")
    elif walk.checkpoint is not None and walk.first_seq > 1:
        print(f"  {walk.removed} earlier entries were compacted; checkpoint entry {walk.checkpoint[0]} "
              f"anchors the first kept entry, {walk.first_seq}")
    if anchor is not None:
        print(f"  anchor {anchor} is in the chain")
    return 0


def _parse_before(text: str, now: float) -> float:
    """A timestamp from ``--before``: an age (``30d``, ``12h``, ``90m``, ``45s``) or an ISO
    date/time (local time unless it names a zone)."""
    import math

    units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    if text[-1:] in units:
        try:
            amount = float(text[:-1])
        except ValueError:
            amount = -1.0
        if 0 <= amount and math.isfinite(amount * units[text[-1]]):
            return now - amount * units[text[-1]]
        raise UsageError(f"--before {text!r}: an age is a number >= 0 and a unit, like 30d, 12h, 90m")
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UsageError(f"--before {text!r}: give an age (30d, 12h, 90m) or an ISO date (2026-11-01)") from None


def cmd_journal_compact(options: Any) -> int:
    """Exit 0: done (or nothing to do); 1: the oldest journal entries do not verify, so nothing
    more was removed."""
    from .cli_output import print_json
    from .errors import JournalCorrupt

    if options.keep is not None and options.keep < 0:
        raise UsageError("--keep must be at least 0")
    coord = _open_existing(options)
    if coord is None:
        if options.json:
            from .retention import CompactionReport

            # --json promises JSON on stdout: the report of a pass that found nothing to remove.
            print_json(CompactionReport(dry_run=options.dry_run).as_dict() | {"root": _root(options), "state": None})
        else:
            print(_no_state(options))
        return 0
    try:
        before = None if options.before is None else _parse_before(options.before, coord.backend.now())
        report = coord.compact(before=before, keep=options.keep, dry_run=options.dry_run)
    except JournalCorrupt as corrupt:
        print(f"journal CORRUPT: {corrupt.message}", file=sys.stderr)
        print(f"  recover: {corrupt.recover}", file=sys.stderr)
        return 1
    finally:
        coord.close()
    if options.json:
        print_json(report.as_dict())
        return 0
    verb = "would remove" if report.dry_run else "removed"
    if report.journal:
        line = f"journal: {verb} {report.journal} entries (up to entry {report.journal_through})"
        if report.checkpoint_seq:
            line += f", anchored by checkpoint entry {report.checkpoint_seq}"
        print(line)
    else:
        print("journal: nothing to remove")
    names = ("leases", "dedup", "effects", "workers", "assignments", "messages")
    rows = [f"{getattr(report, name)} {name}" for name in names if getattr(report, name)]
    print(f"rows: {verb} " + (", ".join(rows) if rows else "none"))
    return 0


def cmd_journal_show(options: Any) -> int:
    from collections import deque

    from .cli_output import entry_dict, entry_line, print_json

    if options.limit < 1:
        raise UsageError("--limit must be at least 1")
    coord = _open_existing(options)
    if coord is None:
        print(_no_state(options), file=sys.stderr)
        return 0
    try:
        backend = coord.backend
        if options.key is None:
            entries: Any = backend.journal_tail(options.limit)
        else:
            entries = deque(backend.journal_entries(key=coord.key(options.key)), maxlen=options.limit)
        for entry in entries:
            if options.json:
                print_json(entry_dict(entry), indent=None)
            else:
                print(entry_line(entry))
    finally:
        coord.close()
    return 0


# -- doctor -----------------------------------------------------------------------------------


def cmd_doctor(options: Any) -> int:
    from .doctor import run

    return run(_root(options), options.strict)


# -- recover ----------------------------------------------------------------------------------


def cmd_recover(options: Any) -> int:
    """Exit 0: done (or nothing to do); 1: a leftover temp file could not be removed."""
    from .recover_command import run

    coord = _open_existing(options)  # without recovery: run() does it, to report it
    if coord is None:
        if options.json:
            from .cli_output import print_json

            # --json promises JSON on stdout: the report of a recovery that found nothing to do.
            print_json({"root": _root(options), "state": None, "dry_run": options.dry_run, "intents": [],
                        "removed": [], "kept": [], "failed": []})
        else:
            print(_no_state(options))
        return 0
    try:
        return run(coord, dry_run=options.dry_run, as_json=options.json)
    finally:
        coord.close()


# -- adapters and the rest --------------------------------------------------------------------


def cmd_install(options: Any) -> int:
    from agent_coherence.adapters.claude_code import installer

    root = _root(options)
    if options.plugin:
        for path in installer.write_plugin(options.plugin, command=options.command):
            print(f"wrote {path}")
        print(f"Claude Code plugin written to {options.plugin}")
        return 0
    plan = installer.plan_install(root, scope=options.scope, command=options.command)
    path = installer.install_settings(root, scope=plan.scope, command=plan.command)
    print(f"agent-coherence hooks installed for Claude Code ({plan.scope} scope, command "
          f"{plan.command!r}) in {path}")
    if plan.notice:
        print(f"note: {plan.notice}")
    if plan.scope == "local" and installer.unignored_local_settings(root) is not None:
        print(f"note: git does not ignore {path}, which holds this machine's paths: add "
              f"`.claude/settings.local.json` to .gitignore (or .git/info/exclude) so it is not committed")
    return 0


def cmd_uninstall(options: Any) -> int:
    from agent_coherence.adapters.claude_code import installer

    root = _root(options)
    if not installer.is_installed(root, scope=options.scope):
        path = installer.settings_path(root, scope=options.scope)
        print(f"agent-coherence hooks are not installed in {path} ({options.scope} scope); nothing was changed")
        # A plain `install` puts the hooks into the local file when agent-coherence is not on PATH,
        # so a plain `uninstall` has to point there, or the user believes the hooks are gone.
        for other in ("project", "local", "user"):
            if other != options.scope and installer.is_installed(root, scope=other):
                print(f"note: they are installed in {installer.settings_path(root, scope=other)}; remove them "
                      f"with `agent-coherence uninstall claude-code --{other}`")
        return 0
    path = installer.uninstall_settings(root, scope=options.scope)
    print(f"agent-coherence hooks removed from {path} ({options.scope} scope); other settings kept")
    return 0


def cmd_watch(options: Any) -> int:
    import math

    # nan and inf pass a plain `> 0` test, then make time.sleep raise after the first check.
    if not (options.interval > 0 and math.isfinite(options.interval)):
        raise UsageError("--interval must be a positive number of seconds")
    try:
        from .liveness import watch_main
    except ImportError as error:
        raise UsageError(f"watch is not available in this build ({error})") from None
    with _open(_root(options), options.url) as coord:
        if options.once:
            return int(watch_main(coord, options.interval, once=True) or 0)
        return int(watch_main(coord, options.interval) or 0)


def cmd_version(options: Any) -> int:
    import platform
    import sqlite3

    from . import __version__

    print(f"agent-coherence {__version__} (Python {platform.python_version()}, SQLite {sqlite3.sqlite_version})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
