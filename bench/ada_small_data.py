"""Small-data measurement for --aug (issue 21): a run's overfitting signal and p over time
from its log.jsonl, and for each of its 16 px (or final) checkpoints G_ema's (--weights G:
G's) SWD against held-out built-in faces, a memorisation ratio and the critic's r_v.

Held-out faces are built-in faces with indices from ``--heldout-from`` on (default 20000):
no run with ``--num-faces`` below that ever trained on them. Memorisation: for each of 256
samples, the L2 distance (pixels in [-1, 1]) to its nearest training face over the distance to
its nearest held-out face, among as many held-out faces as the run trained on; the mean ratio
is below 1 when samples sit closer to the training set than to new faces of the same kind.
The checkpoint's critic gives ``r_v`` on clean images (:func:`critic_rv`): training faces
against as many held-out faces and the trained G's samples, and how much ``r_v`` spreads when
only 20 or 100 held-out faces are scored (the size of a small folder's ``--holdout``).

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
from fastpggan.networks import Discriminator
from fastpggan.training.ada import overfit_ratio
from fastpggan.training.checkpoint import generator_of, list_checkpoints, load_checkpoint
from fastpggan.training.config import TrainConfig


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
            out.append({k: r.get(k) for k in ("kimg", "res", "aug_p", "rv", "d_real", "d_fake", "d_heldout",
                                               "img_per_s")})
    return out


def critic_rv(state: dict, train: torch.Tensor, held: torch.Tensor) -> dict:
    """The checkpoint's critic on un-augmented images: mean scores of the training faces, of
    as many held-out faces and of the trained G's samples, and ADA's validation form
    ``r_v = (train - held) / (train - fakes)`` (0: the critic scores unseen faces as it scores
    the training set; 1: as it scores fakes)."""
    cfg = TrainConfig.from_dict(state["config"])
    D = Discriminator(cfg.resolution, cfg.fmap_base, cfg.fmap_max, cfg.mbstd_group_size, impl="reference",
                      label_size=cfg.label_size)
    D.load_state_dict(state["D"])
    D.eval().requires_grad_(False)
    G, res, fade = generator_of(dict(state, G_ema=state["G"]))
    z = torch.randn(train.shape[0], G.latent_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        score = lambda x: torch.cat([D(part, fade) for part in x.split(250)]).flatten()
        r, v = score(train).mean(), score(held)
        f = score(torch.cat([G(part, res, fade) for part in z.split(250)])).mean()
    out = {"d_train": round(r.item(), 4), "d_held": round(v.mean().item(), 4), "d_fake": round(f.item(), 4),
           "rv": round(overfit_ratio(r, f, v.mean()).item(), 4)}
    # a small holdout's own spread: r_v with k held-out faces drawn from these, 200 draws
    g = torch.Generator().manual_seed(3)
    for k in (20, 100):
        if k < len(v):
            draws = torch.stack([overfit_ratio(r, f, v[torch.randperm(len(v), generator=g)[:k]].mean())
                                 for _ in range(200)])
            out[f"rv_sd{k}"] = round(draws.std().item(), 4)
    return out


def measure(ckpt: Path, train: torch.Tensor, held: torch.Tensor, held_swd: torch.Tensor, n: int,
            weights: str = "G_ema") -> dict:
    state = load_checkpoint(ckpt)
    critic = critic_rv(state, train, held)
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
            "p": float(state.get("augment", {}).get("p", torch.tensor(0.0))), **critic}


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
