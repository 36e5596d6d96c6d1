"""One run per run folder: a lock file, ``<out>/.lock``, held while a run trains.

The lock is an ``flock`` on the file, which the kernel drops when the holder exits however it
exits, and the file holds who took it (pid, host, start time) for the message a second process
prints. A holder that releases normally deletes the file; so a lock file that can be locked but
still names a holder was left by a process that died (SIGKILL, power loss): it is taken over,
with a note. Where the filesystem has no ``flock`` (some network and FUSE mounts) the file is
created exclusively instead and a holder on this machine that no longer runs counts as stale;
one on another machine is never guessed dead (the message says how to remove the file).

Multi-process runs (``torchrun``) hold one lock: rank 0's (see ``commands/train.py``).
"""

from __future__ import annotations

import errno
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastpggan.atomic import HOST, pid_alive
from fastpggan.console import printable

try:
    import fcntl
except ImportError:  # Windows: exclusive creation only
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class RunLocked(RuntimeError):
    """Another process holds the run folder; one-line message naming it."""


def _describe(holder: dict[str, Any]) -> str:
    when = holder.get("started")
    if isinstance(when, (int, float)):
        when = datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when or '?'}"


def _parse(text: str) -> dict[str, Any] | None:
    try:
        d = json.loads(text)
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


class RunLock:
    """The lock of run folder ``folder`` (created if missing). Use :meth:`acquire` then
    :meth:`release` (or ``with``)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self.note: str | None = None  # set when a stale lock was taken over

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _mine(self) -> str:
        return json.dumps({"pid": os.getpid(), "host": HOST, "started": round(time.time(), 3)})

    def _busy(self, holder: dict[str, Any] | None) -> RunLocked:
        who = _describe(holder) if holder else "a process that has not yet said who it is"
        return RunLocked(
            f"run folder {printable(str(self.folder))} is in use by another run ({who}); "
            "wait for it to finish or stop it, or choose another --out"
        )

    def acquire(self) -> str | None:
        """Take the lock: returns a note when a stale lock was taken over (else ``None``);
        :class:`RunLocked` when another live process holds it; the ``OSError`` when the lock
        file cannot be written (a full disk), with no lock file left."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is not None:
            try:
                return self._acquire_flock()
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
        return self._acquire_exclusive()

    def _acquire_flock(self) -> str | None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy(self._read_holder()) from None
            except BaseException:
                os.close(fd)
                raise
            # A holder releasing deletes the file after we opened it: then we locked a file
            # nobody else will see. Start over on the one now at the path.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            previous = _parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            self._write(fd)
        except BaseException:
            self._abandon(fd)
            raise
        self._fd = fd
        if previous is not None:
            self.note = (f"note: took over the lock of {printable(str(self.folder))} left by a run "
                         f"that is no longer running ({_describe(previous)})")
        return self.note

    def _acquire_exclusive(self) -> str | None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._read_holder()
                stale = (holder is not None and holder.get("host") == HOST
                         and not pid_alive(int(holder.get("pid", 0))))
                if not stale:
                    err = self._busy(holder)
                    if holder is not None and holder.get("host") != HOST:
                        err = RunLocked(f"{err} (if that run is over, delete {printable(str(self.path))})")
                    raise err from None
                self.path.unlink(missing_ok=True)
                self.note = (f"note: took over the lock of {printable(str(self.folder))} left by a "
                             f"run that is no longer running ({_describe(holder)})")
                continue
            try:
                self._write(fd)
            except BaseException:
                self._abandon(fd)
                raise
            self._fd = fd
            return self.note
        raise self._busy(self._read_holder())

    def _abandon(self, fd: int) -> None:
        """Writing who holds the lock failed (a full disk): leave no lock file, empty or not."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(fd)

    def _write(self, fd: int) -> None:
        data = self._mine().encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def _read_holder(self) -> dict[str, Any] | None:
        # The holder writes its details just after locking: give it a moment.
        for _ in range(20):
            try:
                holder = _parse(self.path.read_text(encoding="utf-8", errors="replace"))
            except OSError:
                holder = None
            if holder is not None:
                return holder
            time.sleep(0.01)
        return None

    def release(self) -> None:
        """Delete the lock file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
