"""The benchmark tools run on CPU (plumbing, not numbers), so they cannot rot unseen."""

from __future__ import annotations

import json

from bench import memory_estimate, train_throughput


def test_train_throughput_dry_run_writes_rows(tmp_path) -> None:
    out = tmp_path / "tt.json"
    assert train_throughput.main(["--dry-run", "--device", "cpu", "--res", "4,8",
                                  "--no-compile", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["res"] for r in data["rows"]] == [4, 8]
    for row in data["rows"]:
        assert row["reference_img_s"] > 0 and row["fast_img_s"] > 0
        assert row["ratio"] == row["fast_img_s"] / row["reference_img_s"]
    assert data["memory_256_b16"] is None  # measured on CUDA only


def test_memory_estimate_fused_keeps_less_than_reference() -> None:
    ref = memory_estimate.estimate(16, 4, "reference")
    fused = memory_estimate.estimate(16, 4, "triton")
    assert ref.keys() == fused.keys()
    state = "weights, grads, Adam, G_ema"
    assert fused[state] == ref[state] > 0
    for part in ref:
        if part != state:
            assert 0 < fused[part] <= ref[part], part
    # G's fused epilogue keeps only its output and 1/sqrt(mean square) per position.
    assert fused["G step (G and frozen D)"] < ref["G step (G and frozen D)"]
