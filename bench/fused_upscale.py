"""G's first block conv, unfused (nearest 2x upsample, then the 3x3 conv) against fused (one
4x4 transposed conv of stride 2, :class:`fastpggan.layers.EqualizedUpConv2d`): forward +
backward of the one layer at the authors' widths, the two forms interleaved in one process so
that both see the same machine. The basis of ``--fused-scale-from``'s default.

    python -m bench.fused_upscale --res 8,16,32,64 --batch 16 --threads 1 --reps 4
"""

from __future__ import annotations

import argparse
import time

import torch

from fastpggan.layers import EqualizedUpConv2d
from fastpggan.networks import nf


def time_layer(res: int, batch: int, reps: int, device: str) -> tuple[int, int, float, float]:
    """``(in, out, unfused s, fused s)``: the best of ``reps`` forward + backward passes of the
    layer that makes ``res`` px from ``res / 2`` px, each form in turn within every repetition."""
    i = res.bit_length() - 3  # G's block index of res (4 px is block 0), as in Generator
    cin, cout = nf(i), nf(i + 1)
    layer = EqualizedUpConv2d(cin, cout, act="lrelu_pixelnorm", impl="reference").to(device)
    x = torch.randn(batch, cin, res // 2, res // 2, device=device, requires_grad=True)
    best = {False: float("inf"), True: float("inf")}
    for rep in range(reps + 1):  # round 0 warms up and is not counted
        for fused in (False, True):
            layer.fused = fused
            if device != "cpu":
                torch.cuda.synchronize()
            t = time.perf_counter()
            layer(x).square().mean().backward()
            if device != "cpu":
                torch.cuda.synchronize()
            if rep:
                best[fused] = min(best[fused], time.perf_counter() - t)
    return cin, cout, best[False], best[True]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--res", default="8,16,32,64", help="output resolutions, comma-separated")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print("| res | channels | unfused s | fused s | speed-up |\n|---:|---|---:|---:|---:|")
    for res in (int(r) for r in a.res.split(",")):
        cin, cout, plain, fused = time_layer(res, a.batch, a.reps, a.device)
        print(f"| {res} | {cin} to {cout} | {plain:.3f} | {fused:.3f} | {plain / fused:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
