"""What a training run's ``log.jsonl`` says: how far it got, what it compiled, how fast it ran.

The file holds one JSON record per line (:mod:`fastpggan.training.runlog`); a resumed run
appends to the same file after a ``resume`` event. Speeds are taken only from *clean*
intervals: a ``log`` record that directly follows another ``log`` record at the same
resolution. Any other record in between (a ``compile`` event, a phase end with its grid and
checkpoint, the start or resume of the process) means the interval also holds that work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


def read_records(path: Path) -> list[dict]:
    """Every complete record of ``path`` (a half-written last line is left out); [] if none."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class Tail:
    """``log.jsonl`` read as it grows: :meth:`new` returns the records added since last time."""

    def __init__(self, path: Path) -> None:
        self.path, self._offset, self._partial = path, 0, ""

    def new(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            f.seek(self._offset)
            chunk = f.read()
            self._offset = f.tell()
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()  # "" after a complete line
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


@dataclass(frozen=True)
class Compile:
    process: int  # 0: the first process, 1: the first resume, ...
    res: int
    phase: str  # "fade" | "stable"
    seconds: float


@dataclass(frozen=True)
class Speed:
    res: int
    img_s: float
    images: int  # images in the clean intervals it was measured over
    intervals: int


def top_res(records: list[dict]) -> int | None:
    """The highest resolution any record was written at."""
    found = [r["res"] for r in records if isinstance(r.get("res"), int)]
    return max(found) if found else None


def events(records: list[dict]) -> list[str]:
    """The ``event`` records' names in order (``start``, ``compile``, ``resume``, ``done``...)."""
    return [r.get("event", "?") for r in records if r.get("kind") == "event"]


def compiles(records: list[dict]) -> list[Compile]:
    out, process = [], 0
    for r in records:
        if r.get("kind") != "event":
            continue
        if r.get("event") == "resume":
            process += 1
        elif r.get("event") == "compile":
            out.append(Compile(process, r["res"], r.get("phase", "?"), float(r["seconds"])))
    return out


def speeds(records: list[dict]) -> dict[int, Speed]:
    """Images per second at each resolution over the clean intervals (see the module doc)."""
    images: dict[int, float] = {}
    seconds: dict[int, float] = {}
    count: dict[int, int] = {}
    prev: dict | None = None
    for r in records:
        clean = (r.get("kind") == "log" and prev is not None and prev.get("kind") == "log"
                 and prev.get("res") == r.get("res") and r.get("img_per_s", 0) > 0)
        if clean:
            n = (r["kimg"] - prev["kimg"]) * 1000
            images[r["res"]] = images.get(r["res"], 0.0) + n
            seconds[r["res"]] = seconds.get(r["res"], 0.0) + n / r["img_per_s"]
            count[r["res"]] = count.get(r["res"], 0) + 1
        prev = r
    return {res: Speed(res, images[res] / seconds[res], round(images[res]), count[res])
            for res in sorted(images) if seconds[res] > 0}


def resumed_and_trained(records: list[dict]) -> bool:
    """A ``resume`` event followed by at least one ``log`` record: the resume did train."""
    seen = False
    for r in records:
        if r.get("kind") == "event" and r.get("event") == "resume":
            seen = True
        elif seen and r.get("kind") == "log":
            return True
    return False


def resumed_resolutions(records: list[dict]) -> list[int]:
    """The resolutions the first resume trained at (its ``log`` records), in order."""
    seen, out = False, []
    for r in records:
        if r.get("kind") == "event" and r.get("event") == "resume":
            if seen:
                break
            seen = True
        elif seen and r.get("kind") == "log" and r.get("res") not in out:
            out.append(r.get("res"))
    return out
