"""Small-data measurement for --aug (issue 21): a run's overfitting signals and p over time
from its log.jsonl, and for each of its 16 px (or final) checkpoints G_ema's SWD against
held-out built-in faces and a memorisation ratio.

Held-out faces are built-in faces with indices from ``--heldout-from`` on (default 20000):
no run with ``--num-faces`` below that ever trained on them. Memorisation: for each of 256
samples, the L2 distance (pixels in [-1, 1]) to its nearest training face over the distance to
its nearest held-out face, among as many held-out faces as the run trained on; the mean ratio
is below 1 when samples sit closer to the training set than to new faces of the same kind.

    OMP_NUM_THREADS=1 PYTHONPATH=. python -m bench.ada_small_data RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from fastpggan.data.faces import face_array
from fastpggan.metrics.swd import swd
from fastpggan.training.checkpoint import generator_of, list_checkpoints, load_checkpoint


def faces(start: int, n: int, res: int) -> torch.Tensor:
    """Built-in faces ``start .. start + n - 1`` as float ``[n, 3, res, res]`` in [-1, 1]."""
    arr = np.stack([face_array(i, res) for i in range(start, start + n)])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def nearest(samples: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """L2 distance of each sample ``[N, ...]`` to its nearest image of ``pool``: ``[N]``."""
    return torch.cdist(samples.flatten(1), pool.flatten(1)).min(1).values


def signals(run: Path) -> list[dict]:
    out = []
    for line in (run / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == "log":
            out.append({k: r.get(k) for k in ("kimg", "res", "aug_p", "aug_rt", "aug_rmid", "d_real", "d_fake",
                                               "img_per_s")})
    return out


def measure(ckpt: Path, train: torch.Tensor, held: torch.Tensor, held_swd: torch.Tensor, n: int,
            weights: str = "G_ema") -> dict:
    state = load_checkpoint(ckpt)
    if weights == "G":  # the trained generator, not its average (short runs: the average lags)
        state = dict(state, G_ema=state["G"])
    G, res, fade = generator_of(state)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(n, G.latent_dim, generator=g)
    with torch.no_grad():
        x = torch.cat([G(part, res, fade) for part in z.split(250)]).clamp(-1, 1)
    d = swd(x, held_swd, n, res)
    near_train, near_held = nearest(x[:256], train), nearest(x[:256], held)
    return {"kimg": state["progress"]["images"] / 1000, "res": res,
            "swd": round(d["swd_x1e3_avg"], 2),
            "mem_ratio": round((near_train / near_held).mean().item(), 4),
            "closer_to_train": round((near_train < near_held).float().mean().item(), 3),
            "p": float(state.get("augment", {}).get("p", torch.tensor(0.0)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--n", type=int, default=2000, help="samples and held-out faces for SWD")
    ap.add_argument("--heldout-from", type=int, default=20000)
    ap.add_argument("--every", type=int, default=1, help="measure every k-th 16px checkpoint")
    ap.add_argument("--last", action="store_true", help="measure only the last checkpoint")
    ap.add_argument("--from-kimg", type=float, default=0.0, help="only checkpoints from this many kimg on")
    ap.add_argument("--weights", choices=("G_ema", "G"), default="G_ema")
    args = ap.parse_args()
    for run in args.runs:
        cfg = json.loads((run / "config.json").read_text())
        res, num = cfg["resolution"], cfg["num_faces"]
        train = faces(0, num, res)
        held = faces(args.heldout_from, num, res)
        held_swd = faces(args.heldout_from, args.n, res)
        print(f"== {run.name}: {num} faces, aug {cfg.get('aug', 'off')}")
        for s in signals(run):
            print("log", json.dumps(s))
        ckpts = [c for c in list_checkpoints(run) if c.name.endswith(f"-{res}px.pt")][::-1][::args.every][::-1]
        ckpts = [c for c in ckpts if load_checkpoint(c)["progress"]["images"] >= args.from_kimg * 1000]
        for c in ckpts[-1:] if args.last else ckpts:
            print("eval", args.weights, json.dumps(measure(c, train, held, held_swd, args.n, args.weights)), flush=True)


if __name__ == "__main__":
    main()
