"""``python -m bench.gpu_report --dry-run``: every stage on CPU at tiny sizes, so it cannot rot.

The kernel-test and benchmark stages run for real (interpreter, one small subset each); the
training-throughput stage runs a stand-in that writes ``bench.train_throughput``'s JSON contract,
so this test does not depend on that module. Failures must give exit status 1 with the table
still written.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from bench import gpu_report

FAKE_THROUGHPUT = {
    "device": "cpu",
    "rows": [
        {"res": 4, "batch": 8, "reference_img_s": 100.0, "fast_img_s": 150.0, "ratio": 1.5,
         "peak_mem_reference": None, "peak_mem_fast": None},
        {"res": 8, "batch": 8, "reference_img_s": 50.0, "fast_img_s": 60.0, "ratio": 1.2,
         "peak_mem_reference": 3 * 2**30, "peak_mem_fast": 2**30},
    ],
    "memory_256_b16": {"peak_bytes": None, "impl": "reference", "compiled": False},
}


def _fake_throughput_cmd(dry_run: bool, json_path: Path) -> list[str]:
    assert dry_run
    script = f"import json, sys; json.dump({FAKE_THROUGHPUT!r}, open(sys.argv[1], 'w'))"
    return [sys.executable, "-c", script, str(json_path)]


def _failing_cmd(*args) -> list[str]:
    return [sys.executable, "-c", "print('AssertionError: kernel mismatch'); raise SystemExit(1)"]


def _rows(table: str) -> dict[str, list[str]]:
    lines = table.strip().splitlines()
    assert lines[0] == "| item | status | time | result |" and lines[1] == "|---|---|---|---|"
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        assert len(cells) == 4, line
        rows[cells[0].strip("*")] = cells[1:]
    return rows


def test_dry_run_runs_every_stage_and_writes_the_table(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(gpu_report, "throughput_cmd", _fake_throughput_cmd)
    out = tmp_path / "report.md"
    assert gpu_report.main(["--dry-run", "--out", str(out)]) == 0
    table = out.read_text()
    assert table in capsys.readouterr().out
    rows = _rows(table)
    for key in ("card", "software", "commit", "date", "command"):
        assert rows[key][2], key
    assert "torch " in rows["software"][2] and "triton " in rows["software"][2]
    tests = rows["kernel tests vs float64 reference"]
    assert tests[0] == "ok" and " passed, 0 failed" in tests[2]
    assert rows["kernel benchmarks"][0] == "ok"
    bench = rows["d_epilogue-fwd-4px-N128-C512"][2]
    assert "reference " in bench and "compiled " in bench and "x)" in bench
    assert rows["training throughput"][0] == "ok"
    assert rows["train 4px, batch 8"][2].startswith("reference 100.0 img/s, fast 150.0 img/s")
    assert "(1.20x); peak memory 3.00 GiB / 1.00 GiB" in rows["train 8px, batch 8"][2]
    assert rows["peak memory, 256 px, batch 16"][0] == "ok"
    assert rows["total"][0] == "ok"
    logs = tmp_path / "gpu_report_logs"
    assert json.loads((logs / "bench_4.json").read_text())["benchmarks"]


def test_failing_stage_exits_nonzero_with_the_table(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(gpu_report, "kernel_tests_cmd", _failing_cmd)
    out = tmp_path / "report.md"
    assert gpu_report.main(["--dry-run", "--stages", "tests,memory", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "NOT ALL STAGES PASSED: tests (FAILED), memory (FAILED)" in captured.err
    assert "kernel mismatch" in captured.out  # the failing log's tail is shown
    rows = _rows(out.read_text())
    assert rows["kernel tests vs float64 reference"][0] == "FAILED"
    assert rows["kernel benchmarks"][0] == "skipped (not selected)"
    assert rows["peak memory, 256 px, batch 16"][0] == "FAILED"
    assert rows["total"][0] == "FAILED"


def test_missing_throughput_module_is_a_failed_stage(tmp_path, monkeypatch) -> None:
    def missing(dry_run: bool, json_path: Path) -> list[str]:
        return [sys.executable, "-m", "bench.no_such_module", "--json", str(json_path)]

    monkeypatch.setattr(gpu_report, "throughput_cmd", missing)
    out = tmp_path / "report.md"
    assert gpu_report.main(["--dry-run", "--stages", "train,memory", "--out", str(out)]) == 1
    rows = _rows(out.read_text())
    train = rows["training throughput"]
    assert train[0] == "FAILED" and "No module named bench.no_such_module" in train[2]


def test_out_of_time_stages_are_skipped_with_a_note(tmp_path) -> None:
    out = tmp_path / "report.md"
    assert gpu_report.main(["--dry-run", "--budget-s", "1", "--out", str(out)]) == 1
    rows = _rows(out.read_text())
    for stage in ("kernel tests vs float64 reference", "kernel benchmarks", "training throughput"):
        assert rows[stage][0] == "skipped (out of time)"


def test_stage_timeout_kills_the_subprocess(tmp_path) -> None:
    proc = gpu_report.run_logged([sys.executable, "-c", "import time; time.sleep(30)"],
                                 gpu_report.subprocess_env(True), 1.0, tmp_path / "log")
    assert proc.returncode is None and proc.seconds < 10


@pytest.mark.parametrize("argv, message", [
    (["--dry-run", "--record"], "--record keeps measured GPU runs only"),
    (["--dry-run", "--stages", "tests,fly"], "--stages takes names from"),
    (["--dry-run", "--bench-res", "24"], "--bench-res values must be among"),
])
def test_bad_arguments_exit_2_before_work(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        gpu_report.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_no_gpu_without_dry_run_exits_2(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(gpu_report.torch.cuda, "is_available", lambda: False)
    assert gpu_report.main(["--out", str(tmp_path / "r.md")]) == 2
    assert "no CUDA device is visible" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_counts_from_a_killed_verbose_run() -> None:
    log = ("tests/test_kernels.py::test_a[D-x] PASSED [  1%]\n"
           "tests/test_kernels.py::test_b FAILED [  2%]\n"
           "tests/test_kernels.py::test_c SKIPPED (no GPU) [  3%]\n"
           "tests/test_kernels.py::test_d ")
    counts = gpu_report.counts_from_verbose_log(log)
    assert (counts.passed, counts.failed, counts.skipped) == (1, 1, 1)
    assert counts.failed_names == ("test_b",)


def test_kernel_tests_timeout_reports_what_ran(tmp_path, monkeypatch) -> None:
    script = ("print('tests/test_kernels.py::test_a PASSED [ 1%]', flush=True); "
              "import time; time.sleep(30)")
    monkeypatch.setattr(gpu_report, "kernel_tests_cmd",
                        lambda dry_run, junit: [sys.executable, "-c", script])
    result = gpu_report.stage_tests(gpu_report.Context(True, tmp_path, [4]), 2.0)
    assert result.status == "FAILED"
    assert result.summary.startswith("timed out after 2 s") and "1 passed, 0 failed" in result.summary
