"""One GPU report: everything the project claims about GPUs, measured in one call.

On a machine with a GPU (about 8 minutes; bench/RESULTS.md says what a session copies back):

    python -m bench.gpu_report --out-dir DIR
    python -m bench.gpu_report --record DIR/report.md     # afterwards: the table into RESULTS.md
    python -m bench.gpu_report --dry-run                   # CPU, tiny sizes: the plumbing (CI)

Stages, most important first (each with its own cap; see :mod:`.plan`):

1. ``tests``: the Triton kernel tests compiled on the GPU against the float64 reference.
2. ``e2e``: the real ``train.py`` with its defaults (fused ops, compiled) on the built-in faces,
   a short schedule from 4 to 256 px; stopped with SIGTERM at 256 px, resumed from its
   checkpoint to the end, then ``generate`` from the last checkpoint. Records exit statuses,
   compile time per segment, img/s per resolution, peak memory, the grids.
3. ``e2e_ref``: the same schedule with ``--impl reference --no-compile`` (one run, start to
   end), and the img/s ratio per resolution.
4. ``throughput``: one training iteration at 256 px, batch 16, every variant side by side
   (eager/compiled x reference/fused, CUDA graphs; then the fastest with bf16, with G's
   upsample-convs unfused, with TF32 where the GPU has it): img/s, peak memory.
5. ``memory``: those peaks against the estimate without a GPU and a GTX 1080's 8 GB.
6. ``bench``: the fused-op microbenchmarks with what time is left.

``--out-dir`` receives only ``report.md`` (the table), ``logs.tar.gz`` (every stage's log and
JSON, each run's log.jsonl) and the two grids; run folders, checkpoints and caches stay in
``--work-dir``. Both default to new folders under the system's temporary folder, never in the
source tree.

Modules: :mod:`.plan` (stage order, caps, sizes: the one place to change them), :mod:`.cli`
(arguments, the stage loop, output), :mod:`.stages` and :mod:`.e2e` (what each stage runs and
how its result reads), :mod:`.trainlog` (reading a run's log.jsonl), :mod:`.procs`
(subprocesses with time limits, pytest counts), :mod:`.table` (the markdown table),
:mod:`.peak` (runs train.py and records its peak CUDA memory).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """The report's command line (imported on call: ``python -m bench.gpu_report.peak``, which
    runs inside train's process, needs none of it)."""
    from bench.gpu_report.cli import main as run

    return run(argv)
