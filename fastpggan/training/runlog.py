"""What a run records besides checkpoints: ``log.jsonl`` and (optional) TensorBoard events.

One JSON object per line: ``kind`` (``"log"``, ``"tick"``, ``"phase"`` (a resolution starts:
its ``lr`` and ``batch``), ``"phase_end"``, ``"event"``),
``kimg``, ``res``, ``fade``, the mean losses since the previous record and the speed.
Scalars are host values already: the loop syncs once per record, never per step.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fastpggan.atomic import DiskFullError, is_disk_full

_NOT_SCALARS = ("kind", "time", "step", "kimg", "phase")


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional dependency
        return None
    return SummaryWriter(str(folder))


class RunLog:
    """Appends to ``out/log.jsonl``; mirrors scalars and images to ``out/tensorboard/``.

    ``enabled=False`` (the ranks other than 0 of a multi-process run): touches no file and
    records nothing. A full disk raises :class:`fastpggan.atomic.DiskFullError`; the part of a
    record that did not fit is cut off, so the file keeps whole lines only.
    """

    def __init__(self, out: Path, tensorboard: bool = True, enabled: bool = True) -> None:
        self.path = out / "log.jsonl"
        self.file = open(self.path, "a", encoding="utf-8") if enabled else None
        self.tb = _tensorboard_writer(out / "tensorboard") if tensorboard and enabled else None

    def record(self, kind: str, images: int, **values: Any) -> None:
        if self.file is None:
            return
        rec = {"kind": kind, "time": round(time.time(), 3), "kimg": images / 1000, **values}
        start = self.file.tell()
        try:
            self.file.write(json.dumps(rec) + "\n")
            self.file.flush()
        except OSError as e:
            if not is_disk_full(e):
                raise
            self._cut(start)
            raise DiskFullError(self.path, "the run log") from None
        if self.tb is not None:
            for k, v in values.items():
                if k not in _NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, images)

    def image(self, tag: str, img: Image.Image, images: int) -> None:
        if self.tb is not None:
            self.tb.add_image(tag, np.asarray(img), images, dataformats="HWC")

    def _cut(self, size: int) -> None:
        """Drop a partly written record (best effort: the disk is full)."""
        try:
            self.file.close()
        except OSError:
            pass
        try:
            os.truncate(self.path, size)
        except OSError:
            pass
        self.file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError:  # a full disk: what did not fit was cut off already
                pass
        if self.tb is not None:
            self.tb.close()
