"""Equalized learning rate: scaling the weights vs the naive ``x * c`` pass before the conv.

PGGAN multiplies every conv's output by ``c = gain / sqrt(fan_in)`` at run time. fastpggan folds
``c`` into the weight (``conv(x, w * c)``: ``C_out * C_in * 9`` elements, whatever the batch and
resolution) instead of a pass over the activations (``conv(x * c, w)``: ``N * C * H * W``
elements read and written, forward and backward). This script times both, forward + backward
(grads of input and weight), for a 3x3 ``C -> C`` conv at PGGAN's shapes.

    python -m bench.bench_eqlr [--res 8 64] [--batch N] [--device cpu|cuda]

Timings are for the device named in the output; on CPU they say nothing about a GPU.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from bench.shapes import op_shapes


def _step(x: torch.Tensor, w: torch.Tensor, c: float, fold_into_weight: bool) -> None:
    y = F.conv2d(x, w * c, padding=1) if fold_into_weight else F.conv2d(x * c, w, padding=1)
    gx, gw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
    del gx, gw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=int, nargs="+", default=None,
                        help="resolutions (default: 8 64 on CPU, all on CUDA)")
    parser.add_argument("--batch", type=int, default=None,
                        help="batch size (default: the training preset on CUDA, 4 on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per measurement")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cpu = device.type == "cpu"
    res = args.res or ([8, 64] if cpu else None)
    print(f"device: {device} ({torch.cuda.get_device_name(device) if not cpu else 'CPU'})")
    print(f"{'shape':>22} {'x*c then conv':>14} {'conv(x, w*c)':>13} {'ratio':>6}")
    for s in op_shapes(res):
        n = args.batch or (4 if cpu else s.batch)
        x = torch.randn(n, s.channels, s.res, s.res, device=device, requires_grad=True)
        w = torch.randn(s.channels, s.channels, 3, 3, device=device, requires_grad=True)
        c = math.sqrt(2.0) / math.sqrt(9 * s.channels)
        times = []
        for fold in (False, True):
            t = benchmark.Timer("_step(x, w, c, fold)", globals=dict(_step=_step, x=x, w=w, c=c,
                                                                      fold=fold))
            times.append(t.blocked_autorange(min_run_time=args.min_time).median)
        shape = f"{s.res}px N{n} C{s.channels}"
        print(f"{shape:>22} {times[0] * 1e3:>11.3f} ms {times[1] * 1e3:>10.3f} ms "
              f"{times[0] / times[1]:>6.2f}")
    print("ratio = naive / weight-folded time (above 1: folding into the weight is cheaper)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
