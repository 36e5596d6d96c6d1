"""Run-folder lock: one run per --out, stale locks of dead processes taken over with a note."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from fastpggan.atomic import HOST
from fastpggan.training.runlock import LOCK_NAME, RunLock, RunLocked

_HOLD = textwrap.dedent("""
    import sys, time
    from fastpggan.training.runlock import RunLock
    lock = RunLock(sys.argv[1]); lock.acquire()
    print("held", flush=True)
    {after}
""")


def _child(folder, after: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.Popen([sys.executable, "-c", _HOLD.format(after=after), str(folder)],
                         stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_process_is_refused_naming_the_holder(tmp_path):
    holder = _child(tmp_path / "run", "time.sleep(60)")
    try:
        with pytest.raises(RunLocked) as e:
            RunLock(tmp_path / "run").acquire()
        msg = str(e.value)
        assert f"pid {holder.pid} on {HOST}, started 20" in msg and "UTC" in msg and "\n" not in msg
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_killed_process_is_taken_over_with_a_note(tmp_path):
    holder = _child(tmp_path / "run", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    holder.wait()
    assert (tmp_path / "run" / LOCK_NAME).exists()  # left behind by the kill
    lock = RunLock(tmp_path / "run")
    note = lock.acquire()
    assert note is not None and f"pid {holder.pid}" in note and "no longer running" in note
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_release_then_acquire_again_without_note(tmp_path):
    with RunLock(tmp_path) as lock:
        assert lock.held and lock.note is None
        with pytest.raises(RunLocked):  # a second lock in the same process is refused too
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path) as again:
        assert again.note is None


def test_without_flock_a_dead_pid_on_this_host_is_stale(tmp_path, monkeypatch):
    import fastpggan.training.runlock as rl

    monkeypatch.setattr(rl, "fcntl", None)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(dead), "host": HOST, "started": 0}))
    lock = RunLock(tmp_path)
    assert "no longer running" in lock.acquire()
    with pytest.raises(RunLocked, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    lock.release()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 0}))
    with pytest.raises(RunLocked, match="if that run is over, delete"):
        RunLock(tmp_path).acquire()
