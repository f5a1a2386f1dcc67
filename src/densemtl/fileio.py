"""File errors in one line: safe ``torch.load`` and OS errors that name the file and the cause.

Nothing here imports the rest of the package, so every layer can use it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import re
import warnings
from pathlib import Path

# what to do about an OS error, by errno
HINTS = {
    errno.ENOSPC: "free space on that disk, or write elsewhere",
    errno.EDQUOT: "free space within your quota, or write elsewhere",
    errno.EROFS: "write elsewhere",
    errno.EACCES: "check the permissions of the folder, or write elsewhere",
    errno.EPERM: "check the permissions of the folder, or write elsewhere",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "a file path was expected",
    errno.EFBIG: "the file system limits the file size: write elsewhere",
    errno.EIO: "check the disk",
}

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
PICKLE_PROTO = 0x80  # the first byte of a pickle (protocol 2+), e.g. torch.save's legacy format


def sha256_file(path) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks (provenance of converted checkpoints)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path, wait: bool = True, on_wait=None):
    """Hold an exclusive advisory lock on the file ``path`` (created, with its folder, if
    absent) for the block; yields whether it is held.

    Another process (or thread: each call opens the file anew) asking for the same lock is
    refused at once with ``wait=False`` (it gets False), or waits for it, after calling
    ``on_wait()`` when the lock is taken. Locks are per machine (``flock``); where there is
    no ``fcntl`` (Windows) the block runs unlocked and keeping processes apart is the user's job.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            import fcntl
        except ImportError:
            yield True
            return
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        yield True


def os_error_message(e: OSError) -> str:
    """``PATH: cause (what to do)`` for an OS error; its own text for one raised with a message."""
    if e.errno is None or not e.strerror:
        return str(e)
    where = f"{e.filename}" + (f" -> {e.filename2}" if getattr(e, "filename2", None) else "") if e.filename else ""
    hint = HINTS.get(e.errno)
    note = getattr(e, "note", None)
    return (f"{where}: " if where else "") + e.strerror + (f" ({hint})" if hint else "") + (f"; {note}" if note else "")


# errors of a failed write, recognised also behind a library's own exception
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}


def os_cause(e: BaseException) -> OSError | None:
    """The OS error behind ``e``: ``e`` itself, or a failed write (:data:`WRITE_ERRNOS`) it was
    raised from or during (e.g. torch's ``RuntimeError`` from its zip writer on a full disk)."""
    if isinstance(e, OSError) and e.errno is not None:
        return e
    seen = {id(e)}
    e = e.__cause__ or e.__context__
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def naming(path, note: str | None = None):
    """Within the block, an OS error without a file name (a failed ``write`` on a full disk),
    also one hidden behind a library's ``RuntimeError``, is raised again naming ``path``."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        err = os_cause(e)
        if err is None or (err is e and err.filename is not None and note is None):
            raise
        new = OSError(err.errno, err.strerror, str(err.filename if err.filename is not None else path))
        if note:
            new.note = note
        raise new from None


class UnreadableFile(ValueError):
    """A file ``torch.load`` cannot read safely. ``reason``: ``"format"`` (neither a
    ``torch.save`` zip archive nor a pickle), ``"objects"`` (holds Python objects other than
    tensors and plain containers: refused, loading them could run code) or ``"corrupt"``;
    ``detail``: one line of the loader's message."""

    def __init__(self, path, reason: str, detail: str):
        self.path, self.reason, self.detail = Path(path), reason, detail
        self.text = {"format": "not a torch.save file (neither a zip archive nor a pickle)",
                     "objects": "the file holds Python objects other than tensors, which are not loaded (that could "
                                "run code)",
                     "corrupt": "the file is corrupt or truncated"}[reason]
        super().__init__(f"{path}: {self.text} ({detail})")


def _one_line(e: Exception) -> str:
    """The useful line of a ``torch.load`` error, without torch's advice to load unsafely."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and "weights_only" not in ln]
    line = lines[0] if lines else type(e).__name__
    if len(line) > 120 and ". " in line:  # the first sentence of a long explanation
        line = line.split(". ", 1)[0]
    return f"{type(e).__name__}: {line[:300]}"


def torch_load(path):
    """``torch.load(path, map_location="cpu", weights_only=True)``; a file that cannot be read
    raises :class:`UnreadableFile`, OS errors (missing file, no permission) pass through."""
    import torch

    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith(ZIP_MAGIC) and not (head and head[0] == PICKLE_PROTO):
        shown = head.hex() if head else "an empty file"
        raise UnreadableFile(path, "format", f"it starts with {shown}" if head else shown)
    try:
        with warnings.catch_warnings():  # e.g. torch's note on pickle protocols: the error below says it all
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as e:
        unsafe = re.search(r"unsupported global|unsupported class|\bGLOBAL\b", str(e), re.IGNORECASE) is not None
        raise UnreadableFile(path, "objects" if unsafe else "corrupt", _one_line(e)) from None
