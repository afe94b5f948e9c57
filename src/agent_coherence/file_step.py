"""The file step of a confirmed write: between the intent recorded and the commit, make the write
recoverable, put the new bytes in place (or remove the file), and read them back.

Called by the coordinator with the key's file open (:class:`rooted.KeyFile`) and the intent
recorded; it raises ``StepFailed`` (or whatever interrupts it) with ``progress`` saying how far it
got, and the coordinator undoes the write from there (:mod:`write_undo`). Nothing visible changes
on disk before the write is recoverable: the temp file is stamped (``stamp`` mode) or the intent
flushed (``flush`` mode, and for a delete) before the rename or the removal.
"""

from __future__ import annotations

from . import faults, recovery
from .backends.base import Backend, IntentRecord
from .durable import StepFailed, WrittenAhead, sha256_hex
from .overlap import Overlap
from .rooted import KeyFile
from .write_undo import Progress


def apply(backend: Backend, file: KeyFile, intent: IntentRecord, payload: bytes | None, progress: Progress,
          temp_name: str, *, write_mode: str, overlap: Overlap, ahead: WrittenAhead | None = None) -> None:
    """The file step: make the write recoverable, replace (or remove) the bytes, read back.

    In the ``stamp`` mode the temp file carries the stamp (see :mod:`stamps`) and the intent
    is not flushed; in the ``flush`` mode (and for a delete, which leaves no file to stamp) the
    intent's flush runs on a helper thread while the temp file is written and fsynced. Nothing
    visible changes on disk until that is done. ``progress`` says how far it got. ``temp_name``:
    the intent's temp file, as a name in the key's directory (``recovery.temp_name``).
    ``ahead``: the temp file's bytes, if they were written before the intent (stamp mode).
    """
    if payload is None:
        progress.step = "intent"
        backend.sync_intent(intent)
        backend.check_fence(intent.key, intent.holder, intent.fence)
        progress.step, progress.replaced = "remove", True
        file.remove()
    else:
        progress.step = "directory"
        mode = file.mode()
        file.directory(create=True)
        progress.step = "write"
        if write_mode == "stamp":
            # The stamped file says which version it is: recovery rolls the write forward
            # from it, so the intent is not flushed (unless this filesystem refused the stamp).
            stamp = recovery.stamp_for(intent)
            if ahead is not None:
                stamped = ahead.finish(temp_name, mode, stamp)
            else:
                stamped = file.write_temp(temp_name, payload, mode, stamp)
            if not stamped:
                progress.step = "intent"
                backend.sync_intent(intent)
        else:
            intent_synced = overlap.start(lambda: backend.sync_intent(intent))
            try:
                file.write_temp(temp_name, payload, mode)
                progress.step = "intent"
            finally:
                intent_synced.wait()
        if not intent.auto_lease:  # a long write may outlive a caller's lease: stop here if so
            progress.step = "fence"
            backend.check_fence(intent.key, intent.holder, intent.fence)
        progress.step, progress.replaced = "rename", True
        file.rename_into_place(temp_name)
    progress.step = "read_back"
    try:
        faults.check("read_back")
        back = file.read()
    except OSError as error:
        raise StepFailed("read_back", error) from error
    if back != payload:  # equal bytes, equal hash: no need to hash them again
        back_sha = sha256_hex(back) if back is not None else None
        raise StepFailed("read_back", OSError(0, f"read back {back_sha}, wrote {intent.new_sha256}"))
