"""``agent-coherence doctor``: does the root's filesystem give the guarantees the layer needs?

Each probe runs in a temp directory inside the root: fsync of a file and of a directory, an atomic
rename over an existing file, exclusive create, SQLite in WAL mode. The root's mount is looked up
in ``/proc/mounts`` and a network or host-shared filesystem is warned about (their rename, fsync
and locking semantics differ from a local disk); so is ext4 mounted without a journal (see
``_journal_check``). The write mode (stamp or flush) and the kind of temp file (unnamed or named)
are reported.
The probes show what the kernel answers, not what the device does with a flush.
"""

from __future__ import annotations

import os
from typing import Callable

NETWORK_FILESYSTEMS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "coda", "ceph", "glusterfs", "lustre",
    "gpfs", "beegfs", "ocfs2", "gfs2", "davfs", "sshfs", "fuse.sshfs", "fuse.glusterfs",
    "fuse.ceph", "fuse.cephfs", "fuse.s3fs", "fuse.rclone", "fuse.gcsfuse", "fuse.juicefs",
    "fuse.mfs", "fuse.lizardfs",
}
HOST_SHARED_FILESYSTEMS = {"9p", "virtiofs", "vboxsf", "vmhgfs", "fuse.vmhgfs-fuse", "drvfs", "prl_fs"}
LOCAL_FILESYSTEMS = {"ext4", "ext3", "xfs", "btrfs", "zfs", "f2fs", "jfs", "bcachefs", "reiserfs", "apfs"}

Check = tuple[str, str, str]  # (PASS|WARN|FAIL, what, detail)


def run(root: str, strict: bool = False) -> int:
    """Probe ``root`` and print one line per check; 1 if a check failed (or, with ``strict``, warned)."""
    import shutil
    import tempfile

    checks: list[Check] = []
    try:
        workdir = tempfile.mkdtemp(prefix=".agent-coherence-doctor-", dir=root)
    except OSError as error:
        checks.append(("FAIL", "create a temp directory in the root", str(error)))
    else:
        try:
            checks += [_probe(name, probe, workdir) for name, probe in PROBES]
            checks.append(_temp_file_check(workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    checks.append(_filesystem_check(root))
    journal = _journal_check(root)
    if journal is not None:
        checks.append(journal)
    checks.append(_write_mode_check(root))
    for status, name, detail in checks:
        print(f"{status:<4}  {name}: {detail}")
    failed = sum(status == "FAIL" for status, _, _ in checks)
    warned = sum(status == "WARN" for status, _, _ in checks)
    if failed or warned:
        print(f"doctor: {failed} failed, {warned} warning(s) for {root}")
    else:
        print(f"doctor: all {len(checks)} checks passed for {root}")
    return 1 if failed or (strict and warned) else 0


def _write_mode_check(root: str) -> Check:
    from . import stamps

    if stamps.mode(root) == "stamp":
        return ("PASS", "write mode", "stamp (files take the user.agent-coherence xattr: a write's "
                "intent is not flushed, recovery reads the version from the file)")
    why = f"{stamps.ENVIRONMENT}=off" if stamps.forced_off() else "no user extended attributes here"
    return ("PASS", "write mode", f"flush ({why}: each write flushes its intent before the rename)")


def _temp_file_check(workdir: str) -> Check:
    """Whether temp files can be made without a name here (either way is correct)."""
    from . import durable

    found = durable.unnamed_temp_files_in(workdir)
    if found is None:
        return ("PASS", "temp files", "unnamed until written and fsynced (O_TMPFILE; in the stamp mode "
                "a write's bytes go ahead of its intent)")
    return ("PASS", "temp files", f"named from the start ({found})")


def _probe(name: str, probe: Callable[[str], str], workdir: str) -> Check:
    try:
        return ("PASS", name, probe(workdir))
    except Exception as error:  # any failure of a probe is a finding to report, not a crash
        return ("FAIL", name, f"{type(error).__name__}: {error}")


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _probe_fsync_file(workdir: str) -> str:
    _write_file(os.path.join(workdir, "fsync-probe"), b"probe")
    return "os.fsync on a new file succeeded"


def _probe_fsync_dir(workdir: str) -> str:
    fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return "os.fsync on a directory succeeded (a rename can be made durable)"


def _probe_rename(workdir: str) -> str:
    target, temp = os.path.join(workdir, "rename-target"), os.path.join(workdir, "rename-temp")
    _write_file(target, b"old")
    _write_file(temp, b"new")
    os.rename(temp, target)
    with open(target, "rb") as handle:
        data = handle.read()
    if data != b"new" or os.path.exists(temp):
        raise RuntimeError(f"after rename the target holds {data!r} and the temp file "
                           f"{'still exists' if os.path.exists(temp) else 'is gone'}")
    return "rename over an existing file replaced it"


def _probe_exclusive_create(workdir: str) -> str:
    path = os.path.join(workdir, "excl-probe")
    _write_file(path, b"first")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return "O_CREAT|O_EXCL refused an existing file"
    os.close(fd)
    raise RuntimeError("O_CREAT|O_EXCL opened an existing file: exclusive create is not honoured")


def _probe_sqlite_wal(workdir: str) -> str:
    import sqlite3

    conn = sqlite3.connect(os.path.join(workdir, "probe.db"), isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"SQLite refused WAL mode (journal_mode={mode})")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE probe (x)")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO probe VALUES (1)")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return f"WAL mode and a FULL-sync commit work (SQLite {sqlite3.sqlite_version})"


PROBES: list[tuple[str, Callable[[str], str]]] = [
    ("fsync file", _probe_fsync_file),
    ("fsync directory", _probe_fsync_dir),
    ("atomic rename", _probe_rename),
    ("exclusive create", _probe_exclusive_create),
    ("sqlite wal", _probe_sqlite_wal),
]


def mount_of(path: str, mounts_file: str = "/proc/mounts") -> tuple[str, str, str] | None:
    """(device, mount point, filesystem type) of the mount holding ``path``: the longest mount
    point that contains it (the last one listed wins when mounts are stacked)."""
    try:
        with open(mounts_file, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    best: tuple[str, str, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        device, point, fstype = (_unescape_mount(f) for f in fields[:3])
        inside = point == "/" or path == point or path.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[1])):
            best = (device, point, fstype)
    return best


def _unescape_mount(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash as octal escapes (\040 ...).
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _filesystem_check(root: str) -> Check:
    mount = mount_of(root)
    if mount is None:
        return ("WARN", "filesystem", "cannot read /proc/mounts: the filesystem type is unknown")
    device, point, fstype = mount
    where = f"{fstype} ({device} on {point})"
    if fstype in NETWORK_FILESYSTEMS:
        return ("WARN", "filesystem", (
            f"{where} is a network filesystem: UNSUPPORTED. SQLite locking, fsync and rename are not "
            "reliable across hosts there; put the workspace on a local disk, or keep it here and "
            "coordinate through the PostgreSQL backend (--url postgresql://...) with care"))
    if fstype in HOST_SHARED_FILESYSTEMS:
        return ("WARN", "filesystem", (
            f"{where} is a folder shared from a host or VM: fsync and file locking depend on the host; "
            "keep the workspace on a local disk inside the machine"))
    if fstype.startswith("fuse"):
        return ("WARN", "filesystem", (
            f"{where} is a FUSE filesystem: fsync, rename and locking are only as good as its "
            "implementation; prefer a local disk"))
    if fstype == "overlay":
        return ("WARN", "filesystem", (
            f"{where} is a container's writable layer: fsync and rename work, but the files and the "
            "state database vanish with the container; mount a volume for work that must outlive it"))
    if fstype in ("tmpfs", "ramfs"):
        return ("WARN", "filesystem", (
            f"{where} lives in memory: writes are confirmed, but nothing survives a reboot "
            "(fine for tests and scratch work)"))
    if fstype in LOCAL_FILESYSTEMS:
        return ("PASS", "filesystem", f"{where} is a local filesystem")
    return ("WARN", "filesystem", f"{where}: not a filesystem this package is tested on")


def block_device_name(path: str, sys_root: str = "/sys") -> str | None:
    """The kernel's name of the block device holding ``path`` (``vda``, ``sda1``, ``dm-0``), from
    its device number; None when it has none (tmpfs, overlay) or it cannot be read."""
    try:
        device = os.stat(path).st_dev
        target = os.readlink(os.path.join(sys_root, "dev", "block", f"{os.major(device)}:{os.minor(device)}"))
    except OSError:
        return None
    return os.path.basename(target)


def _journal_check(root: str, proc_root: str = "/proc", sys_root: str = "/sys") -> Check | None:
    """ext4 without a journal (``^has_journal``): a confirmed write is still durable, but the rest
    of the metadata is not kept consistent across a crash, so the filesystem needs its check
    (e2fsck) before it is written again. None when the root is not on ext4 or nothing can be read.

    The kernel lists each ext4 mount in ``/proc/fs/ext4/<device>`` and each journal in
    ``/proc/fs/jbd2/<device>-<inode>``; an external journal is named after its own device, but
    the mount's options then still show its ``data=`` mode, which a mount without a journal
    lacks."""
    name = block_device_name(root, sys_root)
    if name is None:
        return None
    try:
        with open(os.path.join(proc_root, "fs", "ext4", name, "options"), encoding="utf-8") as handle:
            options = handle.read().split()
        journals = os.listdir(os.path.join(proc_root, "fs", "jbd2"))
    except OSError:
        return None
    if any(entry.startswith(name + "-") for entry in journals) or any(o.startswith("data=") for o in options):
        return ("PASS", "journal", f"ext4 on {name} has a journal")
    return ("WARN", "journal", (
        f"ext4 on {name} has no journal: confirmed writes are durable, but after a crash or power "
        "loss run e2fsck on it before anything writes there again (see docs/limits.md)"))
