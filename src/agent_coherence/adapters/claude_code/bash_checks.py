"""Bash commands: the same checks as file tools, on the paths a static scan says the command writes.

The scan (``bash_writes.scan_bash_command``) is a best effort. What it finds is checked like a
Write: inside the project root, lease, current view; a directory target (``rm -rf build``) is refused
while another holder leases a file beneath it; a glob is expanded and each match checked. What it
can't see (interpreters, ``eval``, variables in paths) is allowed and journalled as
``bash.uncertain``. After the command ran, changed targets are recorded as new versions.
"""

from __future__ import annotations

import os

from ...errors import PathOutsideRoot
from . import file_checks
from .bash_writes import scan_bash_command

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ...paths import ArtifactPath
    from .bash_writes import BashWriteScan
    from .context import HookContext

MAX_GLOB_MATCHES = 200
COMMAND_EXCERPT = 300
_GLOB_CHARS = frozenset("*?[")
_UNKNOWN_CHARS = frozenset("$`")


def _expand(target: str) -> tuple[list[str], bool]:
    """The concrete paths behind one scanned target (every match of a glob), and whether some
    could not be known."""
    if any(ch in _UNKNOWN_CHARS for ch in target):
        return [], True
    if any(ch in _GLOB_CHARS for ch in target):
        import glob

        return sorted(glob.glob(target)), False
    return [target], False


def _describe(command: str) -> str:
    one_line = " ".join(command.split())
    return one_line if len(one_line) <= 80 else one_line[:77] + "..."


def _resolve(ctx: HookContext, path: str) -> tuple[ArtifactPath | None, str | None, str | None]:
    """(file target, directory key, refusal reason): exactly one is set, or none for a path that
    needs no check (a device, an allowed directory outside the root)."""
    try:
        return ctx.file_key(path), None, None
    except PathOutsideRoot as refused:
        reason = str(getattr(refused, "reason", "refused"))
    real = os.path.realpath(path)
    if real == ctx.root:
        return None, "", None
    if reason == "names a directory, not a file":
        return None, os.path.relpath(real, ctx.root).replace(os.sep, "/"), None
    if ctx.may_write_outside(path, devices=True):
        return None, None, None
    return None, None, reason


def check_command(ctx: HookContext, command: str) -> str | None:
    """Refusal reason for a Bash command, or None to let it run."""
    scan = scan_bash_command(command, ctx.cwd)
    uncertain = scan.uncertain
    taken: list[tuple[str, int]] = []
    for target in scan.targets:
        paths, unknown = _expand(target)
        uncertain = uncertain or unknown or len(paths) > MAX_GLOB_MATCHES
        # Past the first matches, a glob's files get only the lease check (one query for all):
        # a lease and a view check for each of thousands would spend the call's budget.
        reason = _check_leases_of(ctx, paths[MAX_GLOB_MATCHES:], command)
        for path in paths[:MAX_GLOB_MATCHES]:
            if reason is not None:
                break
            reason = _check_path(ctx, path, command, taken)
        if reason is not None:
            for key, fence in taken:  # the command won't run: give back what it took
                ctx.backend.release_lease(key, ctx.holder, fence)
            return reason
    if uncertain:
        ctx.journal("bash.uncertain", None, {
            "command": command[:COMMAND_EXCERPT], "notes": list(scan.notes)[:20],
            "targets": list(scan.targets)[:20],
        })
    return None


def _check_leases_of(ctx: HookContext, paths: list[str], command: str) -> str | None:
    """The refusal when another holder leases one of ``paths`` (files inside the root), else None."""
    if not paths:
        return None
    keys = set()
    for path in paths:
        try:
            keys.add(ctx.file_key(path).key)
        except PathOutsideRoot:
            continue  # a directory or a path outside: the scan's other checks cover those forms
    for lease in ctx.backend.list_leases():
        if lease.key in keys and lease.holder != ctx.holder:
            action = f"run `{_describe(command)}`, which writes"
            return file_checks.lease_refusal(ctx, lease.key, lease.holder, lease.acquired_at, lease.expires_at,
                                             action)
    return None


def _check_path(ctx: HookContext, path: str, command: str, taken: list[tuple[str, int]]) -> str | None:
    action = f"run `{_describe(command)}`, which writes"
    target, directory, refused = _resolve(ctx, path)
    if refused is not None:  # journalled like a file tool's refused path, so status and the journal show it
        ctx.journal("conflict.path", None, {"tool": "Bash", "path": path[:COMMAND_EXCERPT], "reason": refused,
                                            "command": command[:COMMAND_EXCERPT]})
        return file_checks.outside_refusal(path, ctx.root, refused, action)
    if directory is not None:
        what = f"the directory {directory}" if directory else "the whole project"
        return file_checks.check_leases_under(ctx, directory, f"{action} {what}, holding")
    if target is not None:
        return file_checks.check_write(ctx, target, action, taken)
    return None


def record_command(ctx: HookContext, command: str) -> list[str]:
    """After the command ran: record each plainly named file target whose bytes changed (or that is
    gone). Globs and directories are not walked. Returns warnings for Claude."""
    scan: BashWriteScan = scan_bash_command(command, ctx.cwd)
    warnings = []
    for target in scan.targets:
        if any(ch in _UNKNOWN_CHARS or ch in _GLOB_CHARS for ch in target):
            continue
        try:
            artifact = ctx.file_key(target)
        except PathOutsideRoot:
            continue
        sha, size = file_checks.file_sha256(artifact.path)
        kind = "write.claude.bash" if sha is not None else "delete.claude.bash"
        warning = file_checks.record_write(ctx, artifact, sha, size, kind)
        if warning:
            warnings.append(warning)
    return warnings
