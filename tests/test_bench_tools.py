"""The benchmark tools run on CPU (plumbing, not numbers), so they cannot rot unseen."""

from __future__ import annotations

import json

import torch

from bench import memory_estimate, model_cost, train_throughput

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
    # at 4 px the default fuses nothing, so the flipped variant fuses every block; no TF32
    # variant on a CPU unless asked for
    assert rows[0]["fused_scale_from"] == 32 and not rows[0]["tf32"]
    assert rows[3]["name"] == f"{fastest['name']}, G fused from 8 px" and rows[3]["fused_scale_from"] == 8
    assert len(rows) == 4


def test_train_throughput_flips_the_fusion_and_adds_tf32(tmp_path) -> None:
    out = tmp_path / "tt.json"
    argv = [*TINY, "--res", "8", "--fused-scale-from", "8", "--variants", "eager reference",
            "--no-bf16", "--tf32-variant", "on", "--json", str(out)]
    assert train_throughput.main(argv) == 0
    rows = json.loads(out.read_text())["variants"]
    assert [(r["name"], r["fused_scale_from"], r["tf32"]) for r in rows] == [
        ("eager reference", 8, False),
        ("eager reference, G unfused", None, False),
        ("eager reference, TF32", 8, True),
    ]
    assert all(r["img_s"] > 0 for r in rows)


def test_model_cost_counts_the_fused_layer_at_16_over_36() -> None:
    small = dict(target=16, fused_from=16, fmap_base=64, fmap_max=16, latent=16)
    rows = {(r.res, r.fading): r for r in model_cost.costs(**small)}
    assert [k for k in rows] == [(4, False), (8, True), (8, False), (16, True), (16, False)]
    for (res, _), r in rows.items():  # below 16 px nothing is fused
        assert (r.fused_flop < r.unfused_flop) == (res == 16) and r.fused_flop > 0
    # one layer, forward: the transposed conv does 16/36 of the upsample-then-conv's work
    from fastpggan.layers import EqualizedUpConv2d
    with torch.device("meta"):
        layer = EqualizedUpConv2d(16, 8, impl="reference")
        x = torch.empty(4, 16, 8, 8)
    flop = {}
    for fused in (False, True):
        layer.fused = fused
        with model_cost.CountFlops() as counter:
            layer(x)
        flop[fused] = counter.total
    assert flop[False] == 2 * 4 * 8 * 16 * 9 * 16 * 16 and flop[True] * 36 == flop[False] * 16


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
