"""The ``evaluate`` command (its metric-flag checks, shared with ``train --metric-every``, are in
:mod:`fastpggan.commands.common`).

``python -m fastpggan evaluate --ckpt PATH [--data PATH] [--metric swd,fid] [--n N]
[--out FILE.json]`` evaluates a checkpoint's ``G_ema`` at the resolution and fade it had
reached against ``N`` reals from the data pipeline (box-filtered to that resolution, the run's
decoded-image cache reused), prints the results as JSON and writes them to ``--out``.
Every check that can fail runs before images are decoded or sampled (one line, exit code 2).

A conditional checkpoint (``train --cond``): the metrics over all classes, the samples' classes
drawn at the training data's frequencies, then ``per_class``: each metric per class, that
class's samples against its reals (``n``: up to ``--n``, at most the class's images). On the
built-in faces (16 px and up) also ``class_accuracy``, overall and per class: the share of
samples made for hair colour c whose hair the collapse watch's classifier reads as c (chance
1/13), on ``--n / classes`` samples per class (with ``--metric diversity`` the tick's own figure,
on the watch's latents, is ``watch_class_accuracy``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fastpggan.atomic import write_text_atomic
from fastpggan.commands.common import (
    add_impl_flag,
    check_flags,
    check_impl_flag,
    check_metric_setup,
    check_swd_resolution,
    check_writable,
    parse_metrics,
    resolve_device,
)
from fastpggan.data import DataError, load_data, open_source
from fastpggan.errors import UsageError, usage_errors
from fastpggan.data.faces import HAIR_NAMES
from fastpggan.metrics.diversity import HAIR_MIN_RES, class_accuracy
from fastpggan.metrics.evaluate import METRICS, ClassConditioned, evaluate_generator
from fastpggan.metrics.reals import data_identity, real_batches, repeats
from fastpggan.ranges import Limit
from fastpggan.training.checkpoint import load_checkpoint, load_generator
from fastpggan.training.collapse import measure_checkpoint
from fastpggan.training.config import TrainConfig

DEFAULT_N = 10_000
# ``diversity``: the collapse watch's numbers (fastpggan.metrics.diversity) on the run's own
# latents and reals, as its ticks record them; --n, --seed and --batch do not apply to it.
EVALUATE_METRICS = (*METRICS, "diversity")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    """The ``evaluate`` flags (each help text names its default)."""
    a = p.add_argument
    a("--ckpt", required=True, metavar="PATH", help="checkpoint file (ckpt-*.pt in a run folder)")
    a("--data", default=None, metavar="PATH",
      help="real images: folder or .zip, or 'faces' (default: the data the checkpoint's run "
           "trained on)")
    a("--metric", default="swd", metavar="LIST",
      help=f"comma-separated metrics from {','.join(EVALUATE_METRICS)}; diversity is measured on the "
           "run's own latents and reals, as at its ticks, whatever --n, --seed and --batch "
           "(default: %(default)s)")
    a("--n", type=int, default=DEFAULT_N, metavar="N",
      help="generated images, and as many reals (default: %(default)s)")
    a("--out", default=None, metavar="FILE.json", help="also write the results here")
    a("--inception-weights", default=None, metavar="PATH",
      help="FID's Inception weights file, for machines without network (default: torch's hub "
           "cache, else downloaded)")
    a("--seed", type=int, default=0, help="seed of the latents and SWD's projections (default: %(default)s)")
    a("--batch", type=int, default=64, metavar="B", help="images per batch (default: %(default)s)")
    a("--device", default="auto", choices=("auto", "cpu", "cuda"),
      help="where to run; auto picks cuda when available (default: %(default)s)")
    add_impl_flag(p)
    a("--cache-dir", default=None, metavar="DIR",
      help="decoded-image and FID-statistics cache (default: the run's recorded cache folder "
           "if it exists, else <checkpoint folder>/cache)")
    a("--workers", type=int, default=0, metavar="N",
      help="processes decoding images on a cache miss (default: %(default)s)")


def _cache_dir(args: argparse.Namespace, ckpt: Path, recorded: str | None) -> Path:
    if args.cache_dir is not None:
        return Path(args.cache_dir)
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    return ckpt.parent / "cache"


def _write_json(path: Path, result: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(result, indent=2) + "\n", "results")  # never half a file


LIMITS = {
    "--n": Limit(2, 1_000_000, integer=True),
    "--batch": Limit(1, 65536, integer=True),
    "--seed": Limit(0, 2**32 - 1, integer=True),
    "--workers": Limit(0, 256, integer=True),
}


def _out_file(out: str | None) -> Path | None:
    """``--out`` as a path: ``UsageError`` unless a ``.json`` file in a writable folder."""
    if out is None:
        return None
    path = Path(out)
    if path.suffix.lower() != ".json":
        raise UsageError(f"--out must end in .json, got {out!r}")
    check_writable(path.parent if str(path.parent) else Path("."))
    return path


def _per_class(G, cfg: TrainConfig, data, res: int, fade: float, quality: list[str],
               args: argparse.Namespace, cache_dir: Path, device: torch.device) -> dict[str, Any]:
    """A conditional ``G``'s per-class numbers (see the module doc): ``{"per_class": {name:
    {metric: value, "n": reals}}}`` and, on the built-in faces, ``class_accuracy``."""
    names = list(cfg.classes or [])
    per: dict[str, dict[str, float]] = {name: {} for name in names}
    out: dict[str, Any] = {"per_class": per}
    labels = data.labels if data.labels is not None and tuple(data.class_names) == tuple(names) else None
    for c, name in enumerate(names):
        if not quality or labels is None:
            break
        rows = (labels == c).nonzero()[0]
        n = min(args.n, len(rows))
        if n < 2:
            continue
        level = data.levels[res][rows]  # this class's reals only
        per[name].update(evaluate_generator(
            ClassConditioned(G, [1] * G.label_size, only=c), real_batches(level, n, args.batch), res=res,
            metrics=quality, num_images=n, fade=fade, batch_size=args.batch, seed=args.seed,
            device=device, inception_weights=args.inception_weights, progress=False,
        ))
        per[name]["n"] = n
    if data.source.kind == "faces" and res >= HAIR_MIN_RES and names == list(HAIR_NAMES):
        acc = class_accuracy(G, res, fade, max(1, args.n // len(names)), args.batch, args.seed, device).tolist()
        out["class_accuracy"] = round(sum(acc) / len(acc), 4)
        for name, a in zip(names, acc):
            per[name]["class_accuracy"] = round(a, 4)
    return out


def run_evaluate(args: argparse.Namespace) -> int:
    """``evaluate`` command: validates everything, then evaluates; returns the exit code."""
    with usage_errors():
        metrics = parse_metrics(args.metric, EVALUATE_METRICS)
    check_flags(args, LIMITS)
    out = _out_file(args.out)
    device = torch.device(resolve_device(args.device))
    check_impl_flag(args.impl, device)

    ckpt = Path(args.ckpt)
    state = load_checkpoint(ckpt)  # CheckpointError: exit 2
    cfg = TrainConfig.from_dict(state["config"])
    images_seen = int(state["progress"]["images"])
    del state
    res = cfg.schedule().at(images_seen).phase.res
    with usage_errors():
        check_swd_resolution(metrics, res, f"checkpoint {str(ckpt)!r}")
        check_metric_setup(metrics, args.inception_weights)
    source = open_source(args.data if args.data is not None else cfg.data, cfg.num_faces)  # DataError: exit 2
    if "diversity" in metrics and len(source) < 2:
        raise UsageError(f"diversity needs at least 2 real images; {source.describe()} holds {len(source)}")
    cache_dir = _cache_dir(args, ckpt, cfg.cache_dir)
    check_writable(cache_dir, "--cache-dir")

    # The work: decode (or open the cached) reals, sample, measure.
    t0 = time.perf_counter()
    with usage_errors(DataError):
        data = load_data(source, cfg.resolution, cache_dir, args.workers)
    quality = [m for m in metrics if m != "diversity"]
    if quality and repeats(data, args.n):
        print(f"note: --n {args.n} is more than the {data.count} images of {source.describe()}; "
              "reals are repeated", file=sys.stderr)
    G, res, fade = load_generator(ckpt, device, args.impl)
    results: dict[str, Any] = {}
    overall = ClassConditioned(G, cfg.class_counts or [1] * G.label_size, seed=args.seed) if G.label_size else G
    if quality:
        results.update(evaluate_generator(
            overall, real_batches(data.levels[res], args.n, args.batch), res=res, metrics=quality,
            num_images=args.n, fade=fade, batch_size=args.batch, seed=args.seed, device=device,
            inception_weights=args.inception_weights, cache_dir=cache_dir,
            dataset_id=data_identity(data), progress=sys.stderr.isatty(),
        ))
    if "diversity" in metrics:
        watched = measure_checkpoint(G, cfg, data, res, fade, device)
        if "class_accuracy" in watched:  # the tick's figure, on the watch's latents
            watched["watch_class_accuracy"] = watched.pop("class_accuracy")
        results.update(watched)
    if G.label_size:
        results.update(_per_class(G, cfg, data, res, fade, quality, args, cache_dir, device))
    result = {
        "ckpt": str(ckpt), "data": source.describe(), "res": res, "fade": round(fade, 4),
        "kimg": images_seen / 1000, "n": args.n, "seed": args.seed, "metrics": list(metrics),
        "results": results, "seconds": round(time.perf_counter() - t0, 2),
    }
    print(json.dumps(result, indent=2))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_json(out, result)
    return 0
