"""Writing files so that a crash or a full disk never leaves a truncated one behind.

:func:`atomic_write` writes into a temp file beside the target (``.NAME.tmp-HOST-PID``), flushes
and fsyncs it, renames it over the target and fsyncs the folder: the target is either the old
file or the complete new one. On any failure the temp file is removed and the target is
untouched. A full disk or quota (``ENOSPC``, ``EDQUOT``) becomes :class:`DiskFullError`, whose
message is one line naming the file and its folder, also when the writer (``torch.save``) hides
the OS error behind its own (``unexpected pos ...``).

A process killed in the middle of a write leaves its temp file; :func:`clean_temp_files` removes
those (see its rules) when the next run starts.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from fastpggan.console import printable

HOST = socket.gethostname()
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
# Temp names: ".NAME.tmp-HOST-PID" (files and cache folders); older versions wrote
# ".NAME.tmp-PID", ".config.json.tmp" and cache folders "KEY.tmp-PID" (KEY: 20 hex digits).
_TEMP = re.compile(
    r"^(?:\.(?P<name>.+)\.tmp-(?:(?P<host>.+)-)?(?P<pid>\d+)"
    r"|\.config\.json\.tmp"
    r"|[0-9a-f]{20}\.tmp-(?P<cpid>\d+))$"
)


class DiskFullError(OSError):
    """No space left (or quota exceeded) while writing ``path``; one-line message."""

    def __init__(self, path: str | os.PathLike, what: str = "file") -> None:
        path = Path(path)
        folder = path.parent if str(path.parent) else Path(".")
        try:
            free = f", {shutil.disk_usage(folder).free / 2**20:.0f} MiB free"
        except OSError:
            free = ""
        super().__init__(
            errno.ENOSPC,
            f"disk full: could not write {what} {printable(str(path))} (no space left in "
            f"{printable(str(folder))}{free}); nothing partial was left behind",
        )
        self.path = path

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(e: BaseException) -> bool:
    """True for an ``OSError`` meaning no space left or quota exceeded."""
    return isinstance(e, OSError) and e.errno in _DISK_FULL


def temp_path(path: str | os.PathLike) -> Path:
    """Where :func:`atomic_write` puts ``path``'s content before the rename."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{HOST}-{os.getpid()}")


class _Watched:
    """A binary file whose ``write`` remembers the ``OSError`` it raised: writers such as
    ``torch.save`` replace it with their own exception and lose the errno."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


def _open_temp(path: Path) -> IO[bytes]:
    """Opens the temp file (a seam for tests that simulate a full disk)."""
    return open(path, "wb")


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], what: str = "file") -> Path:
    """Call ``write(f)`` on a temp file, then rename it to ``path`` (see module doc).

    ``what`` names the file in a :class:`DiskFullError` ("checkpoint", "sample grid", ...).
    Any other exception of ``write`` propagates unchanged, with no temp file left.
    """
    path = Path(path)
    tmp = temp_path(path)
    watched: _Watched | None = None
    try:
        with _open_temp(tmp) as f:
            watched = _Watched(f)
            write(watched)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if is_disk_full(e) or (watched is not None and is_disk_full(watched.error)):
            raise DiskFullError(path, what) from None
        raise
    fsync_folder(path.parent if str(path.parent) else ".")
    return path


def write_text_atomic(path: str | os.PathLike, text: str, what: str = "file") -> Path:
    """:func:`atomic_write` of UTF-8 ``text``."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")), what)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return False
    return True


def clean_temp_files(folder: str | os.PathLike, owned: bool) -> list[Path]:
    """Remove what interrupted writes left in ``folder`` (files and folders named like temps).

    ``owned=True`` (a run folder this process holds the lock of): no other process writes
    there, so every temp entry is a leftover. ``owned=False`` (a cache folder runs may share):
    only temps of processes of this machine that no longer run. Returns what was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.match(p.name)
        if m is None:
            continue
        if not owned:
            host, pid = m.group("host"), m.group("pid") or m.group("cpid")
            if pid is None or (host is not None and host != HOST) or pid_alive(int(pid)):
                continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed
