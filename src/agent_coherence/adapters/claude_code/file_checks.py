"""The checks around one file write by Claude Code, and the record of what a session has read.

Before a write (``check_write``): the path must be inside the project root; the session takes the
file's lease (re-entered and extended if it already holds it) and is refused while another holder
has it; and the session must have seen the current version: if it read the file, nobody may have
written it since (recorded version or bytes on disk changed), and if it never read it, the file
must not carry a version written by someone else. A new file needs no read.

After a write (``confirm_write``): the file is read back and fsynced (file and directory), its
hash is recorded as a new version under the session's lease, and the session's view moves to that
version. A file that is missing, or whose bytes differ from what the tool was asked to write, is
reported.
"""

from __future__ import annotations

import time

from ...errors import LeaseHeld
from ...hashing import sha256_hex
from ...tool_writes import file_sha256, read_synced, record_tool_bytes, special_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ...backends.records import VersionRecord
    from ...paths import ArtifactPath
    from .context import HookContext

UNKNOWN_VERSION = -1  # a view that can't be trusted: the next write needs a fresh Read


# -- how holders and times read in a message ------------------------------------------------


def describe_holder(holder: str, ctx: HookContext) -> str:
    if holder.startswith("claude:"):
        session, _, agent = holder[len("claude:"):].partition("/")
        if ctx.is_family(holder):
            who = f"subagent {agent}" if agent else "the main agent"
            return f"{who} of this same Claude Code session ({holder})"
        if agent:
            return f"subagent {agent} of another Claude Code session {session} ({holder})"
        return f"another Claude Code session {session} ({holder})"
    return f"another writer {holder!r}"


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def ago(ts: float, now: float) -> str:
    seconds = max(0, int(now - ts))
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"


# -- the checks -----------------------------------------------------------------------------


def lease_refusal(ctx: HookContext, key: str, holder: str, acquired_at: float, expires_at: float,
                  action: str) -> str:
    now = time.time()
    return (
        f"agent-coherence: {key} is locked by {describe_holder(holder, ctx)}, which has "
        f"been editing it since {clock(acquired_at)} ({ago(acquired_at, now)}); its lease "
        f"runs until {clock(expires_at)} unless that session writes again or ends. Do not "
        f"{action} this file now: work on other files first and try again later, or ask the user to "
        f"coordinate the sessions. Writing it anyway (for example through Bash) would overwrite that "
        f"session's work."
    )


def staleness(
    ctx: HookContext, view: tuple[int, str | None] | None, record: VersionRecord | None, disk_sha: str | None,
) -> str | None:
    """Why this session's idea of the file is out of date, or None if it is current."""
    version = record.version if record is not None else 0
    if view is not None:
        seen_version, seen_sha = view
        if seen_version == UNKNOWN_VERSION:
            return "the file changed while this session was reading it"
        if seen_version != version and record is not None:
            by = describe_holder(record.writer, ctx)
            return (f"this session read version {seen_version}, but it is now version {version}, written "
                    f"by {by} at {clock(record.updated_at)}")
        if seen_sha != disk_sha:
            if disk_sha is None:
                return "the file was deleted since this session read it"
            return "its bytes on disk changed since this session read it (an edit outside the hook)"
        return None
    if disk_sha is None or record is None:
        return None  # a new file, or one never written through the layer
    if record.writer == ctx.holder:
        if record.sha256 == disk_sha:
            return None
        return "its bytes on disk changed since this session last wrote it (an edit outside the hook)"
    by = describe_holder(record.writer, ctx)
    return (f"it was last written by {by} (version {version}, at {clock(record.updated_at)}) and this "
            f"session has not read it")


def stale_refusal(target: ArtifactPath, why: str, action: str) -> str:
    return (
        f"agent-coherence: refused to {action} {target.key}: {why}. Read the file again (Read tool) to "
        f"see its current content, then redo your change on top of it; otherwise you would overwrite "
        f"changes you have not seen."
    )


def special_refusal(target: ArtifactPath, kind: str, action: str) -> str:
    return (
        f"agent-coherence: refused to {action} {target.key}: it is {kind}, not a regular file. Opening "
        f"it could block or act on a device, and only regular files are coordinated between sessions. "
        f"Choose another path, or ask the user what this file is for."
    )


def refuse_special(ctx: HookContext, target: ArtifactPath, action: str) -> str | None:
    """The refusal for a FIFO, socket or device at ``target`` (journalled as ``conflict.path``),
    or None for a regular file, a directory or nothing at all."""
    kind = special_file(target.path)
    if kind is None:
        return None
    ctx.journal("conflict.path", target.key, {"reason": f"not a regular file: {kind}", "action": action[:200]})
    return special_refusal(target, kind, action)


def outside_refusal(path: object, root: str, reason: str, action: str) -> str:
    """The refusal of a path the project root does not take as a file key; ``reason`` is the
    resolver's. The advice fits the reason: a path inside the root (the state directory, a
    directory) is no better for being "inside the project"."""
    if "outside the root" in reason:
        advice = ("This project only allows writes to files under its root, where parallel sessions are "
                  "coordinated; choose a path inside the project.")
    elif reason.startswith("inside the state directory"):
        advice = ("That directory holds agent-coherence's own coordination database: never write to it, "
                  "not through Bash either; write your files elsewhere in the project.")
    elif reason.startswith("names a"):
        advice = "Only files are written and coordinated: name a file, for example one inside that directory."
    else:
        advice = "Choose another path, a plain file inside the project."
    return f"agent-coherence: refused to {action} {path!s}: {reason} (project root {root}). {advice}"


def check_write(ctx: HookContext, target: ArtifactPath, action: str,
                taken: list[tuple[str, int]] | None = None) -> str | None:
    """Take or renew the lease on ``target`` and check the session's view. Returns a refusal
    reason, or None when the write may go ahead.

    The lease is taken before the view is checked, so no other session can write between the
    check and the write. A refused write gives back a lease it took (one it renewed stays).
    ``taken`` collects (key, fence) of leases newly taken here, for a caller that may still refuse.
    """
    special = refuse_special(ctx, target, action)
    if special is not None:
        return special
    backend = ctx.backend
    asked_at = backend.now()
    try:
        lease = backend.acquire_lease(target.key, ctx.holder, ctx.ttl)
    except LeaseHeld as held:
        return lease_refusal(ctx, target.key, held.holder, held.acquired_at, held.expires_at, action)
    new_lease = lease.acquired_at >= asked_at
    record = backend.get_version(target.key)
    view = backend.get_view(ctx.holder, target.key)
    disk_sha, _ = file_sha256(target.path)
    why = staleness(ctx, view, record, disk_sha)
    if why is None:
        if new_lease and taken is not None:
            taken.append((target.key, lease.fence))
        return None
    if new_lease:
        backend.release_lease(target.key, ctx.holder, lease.fence)
    ctx.journal("conflict.view", target.key, {
        "reason": why, "seen": list(view) if view else None,
        "version": record.version if record else 0, "disk_sha256": disk_sha,
    })
    return stale_refusal(target, why, action)


def check_leases_under(ctx: HookContext, prefix: str, action: str) -> str | None:
    """A write to a whole directory (``prefix`` is its key, "" for the root): refused if another
    holder leases any file beneath it."""
    for lease in ctx.backend.list_leases():
        inside = prefix == "" or lease.key == prefix or lease.key.startswith(prefix + "/")
        if inside and lease.holder != ctx.holder:
            return lease_refusal(ctx, lease.key, lease.holder, lease.acquired_at, lease.expires_at, action)
    return None


# -- what a session has read ----------------------------------------------------------------


def register_read(ctx: HookContext, target: ArtifactPath, before: bool) -> str | None:
    """Remember the version the session is reading. Returns a refusal for a FIFO, socket or device
    (before the read: reading one could block the session), else None.

    Before the read, the version on disk is recorded (if a write slips in before the read, the
    session saw the newer bytes and is merely asked to read again later). After the read, that view
    is checked: if the file changed during the read, the view is marked unknown so the next write
    needs a fresh Read. With no view yet (the pre-read hook didn't run), the current version is
    recorded.
    """
    if before:
        special = refuse_special(ctx, target, "read")
        if special is not None:
            return special
    disk_sha, _ = file_sha256(target.path)
    backend = ctx.backend
    if disk_sha is None:
        # The Read of a missing file fails (no PostToolUse follows), yet it shows the session the
        # current state: the file is gone. A view of the file as it was would refuse every write of
        # it again, while the Read the refusal asks for could never bring that view up to date.
        if before and backend.get_view(ctx.holder, target.key) is not None:
            record = backend.get_version(target.key)
            backend.put_view(ctx.holder, target.key, record.version if record is not None else 0, None)
        return None
    record = backend.get_version(target.key)
    version = record.version if record is not None else 0
    if not before:
        view = backend.get_view(ctx.holder, target.key)
        if view == (version, disk_sha):
            return None
        if view is not None and view[0] != UNKNOWN_VERSION:
            backend.put_view(ctx.holder, target.key, UNKNOWN_VERSION, None)
            return None
    backend.put_view(ctx.holder, target.key, version, disk_sha)
    return None


# -- after a write --------------------------------------------------------------------------


def record_write(ctx: HookContext, target: ArtifactPath, sha: str | None, size: int, kind: str) -> str | None:
    """Record what is on disk now as the next version, under the session's lease when it still holds
    it; move the session's view there. Returns a warning for Claude, or None."""
    backend = ctx.backend
    warning = None
    current = backend.get_version(target.key)
    if current is not None and current.sha256 == sha:
        backend.put_view(ctx.holder, target.key, current.version, sha)
        return None
    if current is None and sha is None:
        return None
    lease = backend.get_lease(target.key)
    fence = lease.fence if lease is not None and lease.holder == ctx.holder else None
    if lease is not None and lease.holder != ctx.holder:
        warning = (
            f"agent-coherence: your write to {target.key} landed, but this session no longer held the "
            f"file's lease: {describe_holder(lease.holder, ctx)} took it at {clock(lease.acquired_at)}. "
            f"Read the file to check that neither session's changes were lost."
        )
    record, _ = record_tool_bytes(backend, target.key, ctx.holder, sha, size, fence=fence, kind=kind)
    backend.put_view(ctx.holder, target.key, record.version, sha)
    backend.worker_beat(ctx.holder, work=1)
    return warning


def _normalized(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def _as_text_bytes(data: bytes) -> bytes:
    """The file's bytes as the UTF-8 text the tool input speaks. Depending on the version and the
    tool, Claude Code may keep a file's byte order mark, or write a file that starts with the
    UTF-16LE one in UTF-16LE, while its input (``content``, ``new_string``) is the text alone."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:]
    if data.startswith(b"\xff\xfe"):
        try:
            return data[2:].decode("utf-16-le").encode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return data
    return data


# Claude Code's Edit matches straight quotes in old_string against typographic ones in the file
# and writes new_string in the file's quote style, so the two are compared with quotes folded.
_QUOTES = (("\u201c", '"'), ("\u201d", '"'), ("\u2018", "'"), ("\u2019", "'"))


def _quotes_folded(data: bytes) -> bytes:
    for curly, straight in _QUOTES:
        data = data.replace(curly.encode("utf-8"), straight.encode("utf-8"))
    return data


def _encoded(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    return text.encode("utf-8", "surrogatepass")


def content_mismatch(tool: str, tool_input: dict, data: bytes) -> str | None:
    """How the bytes on disk disagree with what the tool was asked to write, or None."""
    data = _as_text_bytes(data)
    if tool == "Write":
        wanted = _encoded(tool_input.get("content"))
        if wanted is not None and _normalized(wanted) != _normalized(data):
            return (f"the file on disk ({len(data)} bytes) is not the content you sent ({len(wanted)} "
                    f"bytes)")
        return None
    if tool in ("Edit", "MultiEdit"):
        edits = tool_input.get("edits") if tool == "MultiEdit" else [tool_input]
        last = edits[-1] if isinstance(edits, list) and edits and isinstance(edits[-1], dict) else {}
        wanted = _encoded(last.get("new_string"))
        if wanted and _quotes_folded(_normalized(wanted)) not in _quotes_folded(_normalized(data)):
            return "the file on disk does not contain the new_string of your edit"
    return None


def confirm_write(ctx: HookContext, target: ArtifactPath, tool: str, tool_input: dict) -> str | None:
    """After a file tool reported success: check the bytes landed, make them durable, record them.
    Returns a message for Claude when something is wrong, else None."""
    try:
        data = read_synced(target.path)
    except OSError as error:
        ctx.journal("write.unconfirmed", target.key, {"tool": tool, "error": str(error)})
        return (f"agent-coherence: the {tool} tool reported success, but {target.key} could not be "
                f"confirmed on disk ({error.strerror or error}). Check the disk (space, permissions), "
                f"read the file and write it again if it is wrong.")
    kind = special_file(target.path) if data is None else None
    if kind is not None:
        return (f"agent-coherence: the {tool} tool reported success, but {target.key} is {kind}, not a "
                f"regular file: nothing was recorded. Check what is at that path before going on.")
    if data is None:
        ctx.journal("write.missing", target.key, {"tool": tool})
        record_write(ctx, target, None, 0, "delete.claude")
        return (f"agent-coherence: the {tool} tool reported success, but {target.path} does not exist on "
                f"disk: the write did not land (another process may have removed or moved it). Check the "
                f"path and write the file again.")
    sha = sha256_hex(data)
    warning = record_write(ctx, target, sha, len(data), "write.claude")
    mismatch = content_mismatch(tool, tool_input, data)
    if mismatch is None:
        return warning
    ctx.journal("write.mismatch", target.key, {"tool": tool, "detail": mismatch, "sha256": sha})
    return (f"agent-coherence: the {tool} tool reported success, but {mismatch}: something else may "
            f"have written {target.key} at the same time. Read the file and check it before going on.")
