"""Output folders: one writer at a time, files replaced whole.

``FolderLock`` takes an exclusive ``flock`` on ``FOLDER/.lock`` for as long as a command
writes there (a run, a devnet, a node's home); a second command on the same folder is
refused at once with the holder's pid. The kernel drops the lock when its process ends, even
by ``kill -9``, so a stale file never blocks anyone.

``write_atomic`` writes a file under a unique temporary name in the same folder, fsyncs it
and renames it over the target: readers see the old or the new file, never a torn one, and
two writers never share a temporary file.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from derelayl.errors import ConfigError

__all__ = ["FolderLock", "write_atomic"]

LOCK_FILE = ".lock"


class FolderLock:
    def __init__(self, folder: Path, what: str) -> None:
        self.folder = folder
        self.what = what
        self.fd: int | None = None

    def __enter__(self) -> FolderLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"{self.folder} exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"{self.folder} is in use by another command (pid {holder}); wait for it to end or use another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.what}\n".encode())
        self.fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` in one step (unique temporary file, fsync, rename)."""
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_figure(fig: Any, path: Path, *, close: bool = True, **options: Any) -> str:
    """Render a matplotlib figure into ``path`` atomically (the format from its suffix; dpi 110
    unless given), close it unless told not to, and return the file's name."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip("."), **{"dpi": 110, **options})
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    write_atomic(path, buffer.getvalue())
    return path.name
