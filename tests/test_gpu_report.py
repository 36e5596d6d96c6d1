"""``python -m bench.gpu_report``: its real dry run end to end, and the logic around the stages.

The first test runs the dry run exactly as a user would (a subprocess, every stage's real code
on the CPU at tiny sizes: kernel tests under the interpreter, train.py stopped, resumed and
sampled, every throughput variant, the memory estimate, a microbenchmark). The others check
the table, the budget, the subprocess handling and the reading of log.jsonl on their own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from bench import gpu_report
from bench.gpu_report import cli, plan, procs, stages, trainlog
from bench.gpu_report.table import StageResult, header_value, render_table
from fastpggan.sampling import layout

ROOT = Path(__file__).resolve().parent.parent


def _rows(table: str) -> dict[str, list[str]]:
    lines = table.strip().splitlines()
    assert lines[0] == "| item | status | time | result |" and lines[1] == "|---|---|---|---|"
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        assert len(cells) == 4, line
        rows[cells[0].strip("*")] = cells[1:]
    return rows


def _written_since(t: float) -> list[str]:
    """Files of the checkout (caches and virtual environments aside) modified since ``t``."""
    skip = {".git", ".venv", "__pycache__", ".pytest_cache"}
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if d not in skip]
        found += [str(Path(folder, f).relative_to(ROOT)) for f in files
                  if Path(folder, f).stat().st_mtime >= t]
    return found


def test_dry_run_runs_every_stage_for_real(tmp_path) -> None:
    started = time.time()
    out, work = tmp_path / "out", tmp_path / "work"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)  # the report sets it per stage, as it would for a user
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_report", "--dry-run",
                           "--out-dir", str(out), "--work-dir", str(work)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "expected duration: at most" in proc.stdout.splitlines()[0]
    # only what a GPU session copies back (at most 8 files), nothing in the source tree
    assert sorted(p.name for p in out.iterdir()) == sorted(cli.OUT_FILES)
    assert _written_since(started) == []
    table = (out / "report.md").read_text()
    assert table in proc.stdout
    rows = _rows(table)
    for stage in plan.STAGES:
        assert rows[stage.title][0] == "ok", (stage.name, rows[stage.title])
    assert rows["total"][0] == "ok"
    assert rows["card"][2].startswith("CPU") and "triton " in rows["software"][2]

    assert " passed, 0 failed" in rows[plan.BY_NAME["tests"].title][2]
    # train.py's own defaults on a CPU: the reference ops, no compile
    assert "impl auto, compile off, fp32, on cpu" in rows[plan.BY_NAME["e2e"].title][2]
    assert "impl reference, compile off" in rows[plan.BY_NAME["e2e_ref"].title][2]
    e2e = rows["e2e processes"][2]
    assert "train: exit 143 after SIGTERM (reached its goal)" in e2e
    assert "resume: exit 0" in e2e and "generate: exit 0" in e2e
    assert rows["e2e_ref processes"][2].startswith("train: exit 0 in ")
    assert "16 px" in rows["e2e img/s per resolution"][2]
    assert re.search(r"16 px \d+\.\d\dx", rows["e2e / e2e_ref img/s"][2])
    for run in ("e2e", "e2e_ref"):
        records = trainlog.read_records(work / run / "log.jsonl")
        assert trainlog.events(records)[-1] == "done"
        assert trainlog.top_res(records) == plan.E2E_DRY.res
        assert trainlog.resumed_and_trained(records) == (run == "e2e")
    # generate's --n and train's --grid 4 both make one sheet of 16 samples at the top resolution,
    # laid out by the project's own sheet layout (its sizes are tested in test_sampling_sheets)
    n = plan.E2E_DRY.generate_n
    expected = layout(n, plan.E2E_DRY.res).sheet_size(n)
    for grid in ("grid-generate.png", "grid-train.png"):
        with Image.open(out / grid) as img:
            assert img.mode == "RGB" and img.size == expected, (grid, img.size, expected)

    for name in ("eager reference", "eager fused", "cudagraphs fused", "compiled fused",
                 "compiled reference"):
        assert "img/s" in rows[name][2], name
    assert "cudagraphs, fp32" in rows["cudagraphs fused"][2]
    assert any(k.endswith(", bf16") and "img/s" in v[2] for k, v in rows.items())
    # at the dry run's 8 px the default (fused from 32 px) fuses nothing: the flipped variant
    # fuses every block; the TF32 variant runs on the CPU too (no effect there)
    assert any(k.endswith(", G fused from 8 px") and "fp32, G fused from 8 px;" in v[2]
               for k, v in rows.items())
    assert any(k.endswith(", TF32") and "fp32 with TF32, G " in v[2] for k, v in rows.items())
    memory = rows[plan.BY_NAME["memory"].title][2]
    assert memory.startswith("measured nothing on the CPU") and "reference " in memory
    bench = rows["mbstd-fwd-4px-N128-C512"][2]
    assert "reference " in bench and "compiled " in bench

    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    for name in ("logs/kernel_tests.log", "logs/e2e_train.log", "logs/e2e_resume.log",
                 "logs/train_throughput.json", "e2e/log.jsonl", "e2e_ref/log.jsonl"):
        assert name in names


# --- the table and its records -------------------------------------------------------------


def test_table_has_one_row_per_stage_and_number() -> None:
    results = [StageResult("tests", "ok", 12.3, "5 passed", [("a | b", "1")]),
               StageResult("e2e", "FAILED", 0.0, "exit 1")]
    table = render_table([("card", "X"), ("commit", "abc")], results, 20.0, 480.0)
    rows = _rows(table)
    assert rows[plan.BY_NAME["tests"].title] == ["ok", "12 s", "5 passed"]
    assert rows["a \\| b"] == ["", "", "1"]
    assert rows[plan.BY_NAME["e2e"].title][0] == "FAILED"
    assert rows["total"] == ["FAILED", "20 s", "budget 480 s"]
    assert header_value(table, "commit") == "abc" and header_value(table, "date") is None


def test_record_appends_a_gpu_table_and_refuses_a_dry_run(tmp_path, monkeypatch, capsys) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Recorded results\n")
    monkeypatch.setattr(cli, "RESULTS", results)
    header = [("card", "NVIDIA H200 (compute 9.0, 140 GiB)"), ("commit", "abc1234"),
              ("date", "2026-11-29 10:00 UTC")]
    gpu = tmp_path / "gpu.md"
    gpu.write_text(render_table(header, [StageResult("tests", "ok", 1.0, "x")], 1.0, 480.0))
    assert gpu_report.main(["--record", str(gpu)]) == 0
    text = results.read_text()
    assert "## 2026-11-29 10:00 UTC: NVIDIA H200 (compute 9.0, 140 GiB), commit abc1234" in text
    assert text.endswith(gpu.read_text())
    dry = tmp_path / "dry.md"
    dry.write_text(render_table([("card", "CPU, 2 cores"), *header[1:]], [], 1.0, 480.0))
    assert gpu_report.main(["--record", str(dry)]) == 2
    assert "not a dry run" in capsys.readouterr().err
    assert results.read_text() == text


@pytest.mark.parametrize("argv, message", [
    (["--dry-run", "--record", "r.md"], "--record keeps measured GPU runs only"),
    (["--dry-run", "--stages", "tests,fly"], "--stages takes names from"),
    (["--dry-run", "--budget-s", "0"], "--budget-s must be positive"),
])
def test_bad_arguments_exit_2_before_work(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        gpu_report.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_no_gpu_without_dry_run_exits_2(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(cli.torch.cuda, "is_available", lambda: False)
    assert gpu_report.main(["--out-dir", str(tmp_path / "o")]) == 2
    assert "no CUDA device is visible" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_work_dir_inside_out_dir_is_refused(tmp_path, capsys) -> None:
    argv = ["--dry-run", "--out-dir", str(tmp_path), "--work-dir", str(tmp_path / "w")]
    assert gpu_report.main(argv) == 2
    assert "must not be inside --out-dir" in capsys.readouterr().err


def test_out_of_time_stages_are_skipped_with_a_note(tmp_path) -> None:
    out = tmp_path / "out"
    argv = ["--dry-run", "--budget-s", "1", "--out-dir", str(out), "--work-dir", str(tmp_path / "w")]
    assert gpu_report.main(argv) == 1
    rows = _rows((out / "report.md").read_text())
    for stage in plan.STAGES:
        assert rows[stage.title][0] == "skipped (out of time)"
    assert rows["total"][0] == "FAILED"


def test_time_a_stage_leaves_goes_to_the_next_ones(tmp_path, monkeypatch) -> None:
    # the scheduling alone: each stage function here reports the time limit it was given
    given: dict[str, float] = {}

    def stage(name: str):
        def run(ctx, timeout: float) -> StageResult:
            given[name] = timeout
            return StageResult(name, "ok")
        return run

    monkeypatch.setattr(cli, "STAGE_FUNCS", {n: stage(n) for n in plan.STAGE_NAMES})
    ctx = stages.Context(False, tmp_path, tmp_path)
    results = cli.run_stages(ctx, ["tests", "e2e", "bench"], 10_000.0, lambda line: None)
    assert [r.status for r in results] == ["ok", "ok", "skipped (not selected)",
                                           "skipped (not selected)", "skipped (not selected)", "ok"]
    caps = {n: plan.BY_NAME[n].cap_s for n in plan.STAGE_NAMES}
    assert given["tests"] == caps["tests"]
    assert caps["e2e"] + caps["tests"] - 1 < given["e2e"] <= caps["e2e"] + caps["tests"]
    assert given["bench"] > caps["bench"] + caps["tests"] + caps["e2e"] - 1
    cli.run_stages(ctx, ["tests", "e2e"], 100.0, lambda line: None)
    assert given["e2e"] <= 100 - plan.RESERVE_S  # never past the budget


def test_gpu_caps_fit_the_budget_and_the_plan_is_printed() -> None:
    assert sum(s.cap_s for s in plan.STAGES) + plan.RESERVE_S <= plan.DEFAULT_BUDGET_S <= 480
    text = cli.plan_text(list(plan.STAGE_NAMES), plan.DEFAULT_BUDGET_S, dry_run=False)
    assert text.startswith("expected duration: at most 470 s (7.8 min, GPU")
    assert "e2e 250" in text and "throughput 90" in text


def test_kernel_tests_stage_out_of_time_reports_what_it_knows(tmp_path) -> None:
    ctx = stages.Context(True, tmp_path, tmp_path / "out")
    ctx.log_dir.mkdir()
    result = stages.stage_tests(ctx, 1.0)
    assert result.status == "FAILED"
    assert result.summary.startswith("timed out after 1 s") and "0 failed" in result.summary


# --- the schedule the end-to-end stages give train.py --------------------------------------


@pytest.mark.parametrize("run", [plan.E2E_GPU, plan.E2E_DRY], ids=["gpu", "dry"])
def test_end_to_end_flags_are_train_flags_reaching_the_top(run, tmp_path) -> None:
    from fastpggan.__main__ import build_parser
    from fastpggan.training.schedule import Schedule

    args = build_parser().parse_args(["train", *plan.train_flags(run), "--out", str(tmp_path)])
    assert args.res == run.res
    schedule = Schedule(args.res, args.fade_kimg, args.stable_kimg, args.total_kimg)
    top = schedule.phases[-1]
    assert top.res == run.res and top.end - top.start == round(
        (run.fade_kimg + run.stable_kimg + run.final_kimg) * 1000)


# --- subprocesses --------------------------------------------------------------------------


def _child(tmp_path: Path, code: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    return [sys.executable, str(script)]


def test_stage_timeout_kills_the_subprocess(tmp_path) -> None:
    proc = procs.run_logged(_child(tmp_path, "import time; time.sleep(30)"),
                            procs.subprocess_env(False, True), 1.0, tmp_path / "log")
    assert proc.returncode is None and proc.seconds < 10
    assert proc.describe().startswith("killed at its time limit")


def test_stop_sends_sigterm_and_lets_it_exit(tmp_path) -> None:
    code = """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: (print("checkpoint", flush=True), sys.exit(143)))
        print("ready", flush=True)
        time.sleep(30)
    """
    log = tmp_path / "log"
    proc = procs.run_logged(_child(tmp_path, code), procs.subprocess_env(False, True), 20.0, log,
                            stop_when=lambda: "ready" in log.read_text())
    assert proc.returncode == 143 and proc.stopped == "reached its goal"
    assert "checkpoint" in log.read_text()
    assert proc.describe() == "exit 143 after SIGTERM (reached its goal)"


def test_a_process_ignoring_sigterm_is_killed_after_the_grace(tmp_path) -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(30)
    """
    proc = procs.run_logged(_child(tmp_path, code), procs.subprocess_env(False, True), 20.0,
                            tmp_path / "log", stop_after=0.5, grace=1.0)
    assert proc.returncode is None and proc.stopped == "its share of the time was up"
    assert proc.seconds < 10


def test_counts_from_a_killed_verbose_run() -> None:
    log = ("tests/test_kernels.py::test_a[D-x] PASSED [  1%]\n"
           "tests/test_kernels.py::test_b FAILED [  2%]\n"
           "tests/test_kernels.py::test_c SKIPPED (no GPU) [  3%]\n"
           "tests/test_kernels.py::test_d ")
    counts = procs.counts_from_verbose_log(log)
    assert (counts.passed, counts.failed, counts.skipped) == (1, 1, 1)
    assert counts.failed_names == ("test_b",)
    xdist = ("[gw0] [ 25%] PASSED tests/test_kernels.py::test_a[0] \n"
             "[gw1] [ 50%] SKIPPED tests/test_kernels.py::test_s \n"
             "[gw0] [ 75%] FAILED tests/test_kernels.py::test_b[1] \n"
             "FAILED tests/test_kernels.py::test_b[1] - assert 1 != 1\n")  # -ra's summary
    counts = procs.counts_from_verbose_log(xdist)
    assert (counts.passed, counts.failed, counts.skipped) == (1, 1, 1)
    assert counts.failed_names == ("test_b[1]",)


# --- reading log.jsonl ---------------------------------------------------------------------


def _log(kimg: float, res: int, img_s: float) -> dict:
    return {"kind": "log", "kimg": kimg, "res": res, "img_per_s": img_s}


RECORDS = [
    {"kind": "event", "kimg": 0.0, "event": "start"},
    {"kind": "event", "kimg": 0.0, "event": "compile", "res": 4, "phase": "stable", "seconds": 9.5},
    _log(0.128, 4, 10.0),  # holds the compile: not clean
    _log(0.256, 4, 200.0),  # 128 images in 0.64 s
    _log(0.384, 4, 100.0),  # 128 images in 1.28 s
    {"kind": "phase_end", "kimg": 0.384, "res": 4},
    _log(0.512, 8, 50.0),  # holds the checkpoint of the phase end: not clean
    {"kind": "event", "kimg": 0.512, "event": "stopped by SIGTERM"},
    {"kind": "event", "kimg": 0.512, "event": "resume"},
    {"kind": "event", "kimg": 0.512, "event": "compile", "res": 8, "phase": "fade", "seconds": 2.0},
    _log(0.640, 8, 5.0),
    _log(0.768, 8, 64.0),  # 128 images in 2 s
    {"kind": "event", "kimg": 0.768, "event": "done"},
]


def test_speeds_come_from_clean_intervals_only() -> None:
    speeds = trainlog.speeds(RECORDS)
    assert sorted(speeds) == [4, 8]
    assert speeds[4].img_s == pytest.approx(256 / (0.64 + 1.28))
    assert (speeds[4].images, speeds[4].intervals) == (256, 2)
    assert speeds[8].img_s == pytest.approx(64.0) and speeds[8].intervals == 1


def test_compiles_events_and_resume() -> None:
    assert trainlog.compiles(RECORDS) == [trainlog.Compile(0, 4, "stable", 9.5),
                                          trainlog.Compile(1, 8, "fade", 2.0)]
    assert trainlog.top_res(RECORDS) == 8
    assert trainlog.events(RECORDS)[-1] == "done"
    assert trainlog.resumed_and_trained(RECORDS)
    assert not trainlog.resumed_and_trained(RECORDS[:9] + RECORDS[-1:])


def test_tail_reads_complete_lines_as_they_come(tmp_path) -> None:
    path = tmp_path / "log.jsonl"
    tail = trainlog.Tail(path)
    assert tail.new() == []
    path.write_text('{"kind": "log", "res": 4}\n{"kind": "lo')
    assert tail.new() == [{"kind": "log", "res": 4}]
    with open(path, "a") as f:
        f.write('g", "res": 8}\n')
    assert tail.new() == [{"kind": "log", "res": 8}]
    assert trainlog.read_records(path) == [{"kind": "log", "res": 4}, {"kind": "log", "res": 8}]
