"""Run a Python script as ``__main__`` and write the process's peak CUDA memory on exit.

    python -m bench.gpu_report.peak PEAK.json SCRIPT [ARGS...]

The script runs unchanged (``runpy``, as ``python SCRIPT ARGS`` would run it) with its exit
status; afterwards ``PEAK.json`` holds ``{"peak_bytes": torch.cuda.max_memory_allocated()}``,
or ``null`` when the script never used CUDA (a CPU run). A killed process writes nothing.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path


def _peak_bytes() -> int | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(f"usage: python -m bench.gpu_report.peak PEAK.json SCRIPT [ARGS...]")
    peak_json, script, *args = sys.argv[1:]
    sys.argv = [script, *args]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        Path(peak_json).write_text(json.dumps({"peak_bytes": _peak_bytes()}) + "\n")


if __name__ == "__main__":
    main()
