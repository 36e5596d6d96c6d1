"""The benchmark tools run on CPU (plumbing, not numbers), so they cannot rot unseen."""

from __future__ import annotations

import json

from bench import memory_estimate, train_throughput

TINY = ["--dry-run", "--device", "cpu", "--res", "4", "--batch", "4", "--fmap-base", "32",
        "--fmap-max", "8", "--latent-dim", "8", "--warmup", "1", "--min-iters", "1",
        "--min-time", "0"]


def test_train_throughput_rows_and_bf16_of_the_fastest(tmp_path) -> None:
    out = tmp_path / "tt.json"
    argv = [*TINY, "--variants", "eager reference,eager fused", "--json", str(out)]
    assert train_throughput.main(argv) == 0
    data = json.loads(out.read_text())
    rows = data["variants"]
    assert [r["name"] for r in rows[:2]] == ["eager reference", "eager fused"]
    for row in rows:
        assert row["img_s"] > 0 and row["iters"] >= 1 and row["peak_bytes"] is None  # CPU
        assert row["resolved_impl"] == "reference"  # auto on a CPU
    fastest = max(rows[:2], key=lambda r: r["img_s"])
    assert rows[2]["name"] == f"{fastest['name']}, bf16" and rows[2]["precision"] == "bf16"
    assert rows[2]["bf16_of"] == fastest["name"]


def test_memory_estimate_fused_keeps_less_than_reference() -> None:
    ref = memory_estimate.estimate(16, 4, "reference")
    fused = memory_estimate.estimate(16, 4, "triton")
    assert ref.keys() == fused.keys()
    state = memory_estimate.STATE
    assert fused[state] == ref[state] > 0
    for part in ref:
        if part != state:
            assert 0 < fused[part] <= ref[part], part
    # G's fused epilogue keeps only its output and 1/sqrt(mean square) per position.
    assert fused["G step (G and frozen D)"] < ref["G step (G and frozen D)"]
    assert memory_estimate.estimated_peak(fused) < memory_estimate.estimated_peak(ref)
