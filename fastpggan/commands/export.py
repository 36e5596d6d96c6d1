"""The ``export`` command: a checkpoint's ``G_ema`` as an ONNX model or a ``torch.export`` program.

``python -m fastpggan export --ckpt PATH --out FILE.onnx|FILE.pt2 [--uint8]`` writes the
generator at the resolution and fade the checkpoint had reached, for use without fastpggan:

- ``.onnx``: torch's current exporter (``torch.onnx.export(..., dynamo=True)``) at ONNX opset
  :data:`OPSET`; the metadata are the model's ``metadata_props`` (strings: text as is, numbers
  and lists as JSON). Needs the ``export`` extra (onnx, onnxscript, onnxruntime).
- ``.pt2``: ``torch.export.export`` saved with ``torch.export.save``; ``torch.export.load``
  runs it with torch alone. The metadata are a JSON file inside it (``extra_files``
  :data:`PT2_METADATA`: ``torch.export.load(path, extra_files={"fastpggan.json": ""})``, or
  any zip reader, since a ``.pt2`` is a zip archive).

The input is ``z``: ``float32 [N, latent_dim]``, standard normal, any ``N >= 1``. The output is
``images``: ``float32 [N, 3, R, R]``, RGB in about ``[-1, 1]``; with ``--uint8``, ``uint8 [N, R,
R, 3]`` RGB, the mapping of :func:`fastpggan.sampling.hwc_uint8` baked in (what ``generate``
writes into its PNGs). The fused ops' pure-PyTorch reference is what gets exported (the Triton
kernels are for training), on the CPU.

Before anything is written, the serialized program is loaded back and run (ONNX with
onnxruntime on the CPU) on :data:`CHECK_BATCHES` of fixed latents and compared with ``G_ema``
in PyTorch: the largest difference is printed, and over :data:`TOLERANCE` the export stops with
one line (exit code 1) and writes nothing (for ``--uint8``: any level off, except one level
where G_ema's value lies within the tolerance of a rounding boundary). The file is written
atomically.

A conditional checkpoint (``train --cond``) is refused with one line: its label input is not
exported yet; ``class_names`` is ``[]`` (no label input).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from fastpggan import __version__
from fastpggan.atomic import atomic_write
from fastpggan.commands.common import check_writable
from fastpggan.console import printable
from fastpggan.errors import RunStopped, UsageError
from fastpggan.networks import Generator
from fastpggan.sampling import hwc_uint8
from fastpggan.training.checkpoint import generator_of, load_checkpoint

FORMATS = (".onnx", ".pt2")
# ONNX opset 18: the opset torch's exporter's translations (onnxscript's torchlib) are written
# for, so nothing is converted; onnxruntime runs it from 1.14 on.
OPSET = 18
# Largest absolute difference allowed between the exported program and G_ema in PyTorch on
# float images in [-1, 1]: an eighth of one uint8 level (1 / 127.5), far above float32
# reordering (onnxruntime measured at most 8e-6 on the full 256 px generator, see the README)
# and far below a visible change. uint8 output: no level off, except one level where G_ema's
# value is within this tolerance of the boundary between the two (:class:`Difference`).
TOLERANCE = 1e-3
CHECK_BATCHES = (1, 7)  # batch sizes of the check at export: a single image and a batch
CHECK_SEED = 0
INPUT, OUTPUT = "z", "images"
PT2_METADATA = "fastpggan.json"
EXTRA = ("onnx", "onnxscript", "onnxruntime")
INSTALL_HINT = "pip install 'fastpggan[export]'"


class ExportedGenerator(nn.Module):
    """``z`` ``float32 [N, latent_dim]`` -> ``G(z, res, fade)``: ``float32 [N, 3, res, res]``,
    or with ``uint8`` :func:`hwc_uint8` of it, ``uint8 [N, res, res, 3]``."""

    def __init__(self, G: Generator, res: int, fade: float, uint8: bool) -> None:
        super().__init__()
        self.G, self.res, self.fade, self.uint8 = G, res, fade, uint8
        self.eval()  # G has no train-mode behaviour, but the exporters warn about train mode

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        images = self.G(z, self.res, self.fade)
        return hwc_uint8(images) if self.uint8 else images


def check_extra() -> None:
    """``UsageError`` naming the pip command when a package of the ``export`` extra is missing."""
    missing = []
    for name in EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UsageError(f"ONNX export needs {', '.join(missing)}: {INSTALL_HINT}")


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of the file's bytes, as ``sha256sum`` prints it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def metadata(
    G: Generator, res: int, fade: float, uint8: bool, ckpt: Path, images_seen: int, fmt: str
) -> dict[str, Any]:
    """What the exported file records about itself (see the README's Export section)."""
    output = (f"{OUTPUT}: uint8 [N, {res}, {res}, 3] RGB, 0 to 255, as fastpggan generate writes" if uint8 else
              f"{OUTPUT}: float32 [N, 3, {res}, {res}] RGB in about [-1, 1]; "
              "pixel = round((clamp(x, -1, 1) + 1) * 127.5)")
    meta: dict[str, Any] = {
        "fastpggan_version": __version__,
        "resolution": res,
        "latent_dim": G.latent_dim,
        "latent_distribution": f"standard normal: {INPUT} float32 [N, {G.latent_dim}], each entry from N(0, 1)",
        "output_convention": output,
        "output_dtype": "uint8" if uint8 else "float32",
        "output_layout": "NHWC" if uint8 else "NCHW",
        "class_names": [],
        "fade": fade,
        "source_checkpoint": ckpt.name,
        "source_kimg": images_seen / 1000,
        "source_sha256": file_sha256(ckpt),
        "torch_version": torch.__version__,
    }
    if fmt == ".onnx":
        meta["onnx_opset"] = OPSET
    return meta


@contextlib.contextmanager
def _quiet_onnx_logs() -> Iterator[None]:
    """The exporter logs a warning per torchvision op it skips when torchvision is absent."""
    logger = logging.getLogger("torch.onnx")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)


def _example(G: Generator) -> tuple[tuple[torch.Tensor], dict[str, dict[int, Any]]]:
    # A batch of 2 to trace with: a batch of 1 would be specialised to 1.
    return (torch.zeros(2, G.latent_dim),), {INPUT: {0: torch.export.Dim("batch", min=1)}}


def onnx_bytes(model: ExportedGenerator, meta: dict[str, Any]) -> bytes:
    """The serialized ONNX model of ``model`` (opset :data:`OPSET`, dynamic batch) with ``meta``
    as its ``metadata_props``."""
    import onnx  # the export extra: imported only here

    args, dynamic = _example(model.G)
    with _quiet_onnx_logs():
        program = torch.onnx.export(model, args, dynamo=True, opset_version=OPSET, dynamic_shapes=dynamic,
                                    input_names=[INPUT], output_names=[OUTPUT], verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    return proto.SerializeToString()


def run_onnx(data: bytes, z: torch.Tensor) -> torch.Tensor:
    """The serialized ONNX model ``data`` run on ``z`` by onnxruntime on the CPU."""
    import onnxruntime  # the export extra: imported only here

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {INPUT: z.numpy()})[0])


def pt2_bytes(model: ExportedGenerator, meta: dict[str, Any]) -> bytes:
    """``torch.export.save`` of ``model`` (dynamic batch) with ``meta`` as :data:`PT2_METADATA`."""
    args, dynamic = _example(model.G)
    program = torch.export.export(model, args, dynamic_shapes=dynamic)
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files={PT2_METADATA: json.dumps(meta, indent=1)})
    return buf.getvalue()


def run_pt2(data: bytes, z: torch.Tensor) -> torch.Tensor:
    """The saved program ``data`` loaded by ``torch.export.load`` and run on ``z``."""
    return torch.export.load(io.BytesIO(data)).module()(z)


def check_latents(latent_dim: int) -> list[torch.Tensor]:
    """The fixed latents of the check: one ``float32 [n, latent_dim]`` batch per :data:`CHECK_BATCHES`."""
    g = torch.Generator().manual_seed(CHECK_SEED)
    return [torch.randn(n, latent_dim, generator=g) for n in CHECK_BATCHES]


class Difference(NamedTuple):
    """How far the exported program's output is from ``G_ema``'s: ``largest`` in output units
    (float: on the [-1, 1] scale; uint8: levels), ``unexplained`` (uint8 only: the largest
    difference in levels where G_ema's value is not within :data:`TOLERANCE` of the rounding
    boundary between the two levels; float: ``largest``) and ``at_boundary`` (uint8 only: how
    many values are one level off at such a boundary, where the float difference allowed
    decides the rounding), for an output of ``uint8`` images or not."""

    largest: float
    unexplained: float
    at_boundary: int
    uint8: bool

    def ok(self) -> bool:
        return self.unexplained == 0 if self.uint8 else self.unexplained <= TOLERANCE

    def __str__(self) -> str:
        if self.largest == float("inf"):
            return "inf (wrong shape or dtype)"
        if not self.uint8:
            return f"{self.largest:.3g}"
        note = (f" ({self.at_boundary} values one level off where G_ema is within {TOLERANCE:g} of a "
                "rounding boundary, allowed)") if self.at_boundary else ""
        return f"{self.largest:g} uint8 levels{note}"


def difference(model: ExportedGenerator, got: torch.Tensor, z: torch.Tensor) -> Difference:
    """:class:`Difference` of ``got`` (the exported program's output on ``z``) from ``model``
    run in PyTorch."""
    with torch.no_grad():
        images = model.G(z, model.res, model.fade)
        want = hwc_uint8(images) if model.uint8 else images
    if got.shape != want.shape or got.dtype != want.dtype:
        return Difference(float("inf"), float("inf"), 0, model.uint8)
    if not model.uint8:
        worst = (got - want).abs().max().item()
        return Difference(worst, worst, 0, False)
    levels = (got.int() - want.int()).abs()
    scaled = images.float().clamp(-1, 1).add(1).mul(127.5).permute(0, 2, 3, 1)
    at_boundary = ((scaled - scaled.floor() - 0.5).abs() <= TOLERANCE * 127.5) & (levels == 1)
    return Difference(float(levels.max()), float((levels * ~at_boundary).max()), int(at_boundary.sum()), True)


def export_checked(model: ExportedGenerator, fmt: str, meta: dict[str, Any]) -> tuple[bytes, Difference]:
    """The serialized program of ``model`` in format ``fmt`` and its :class:`Difference` from
    ``G_ema`` over the check latents (the largest of the batches'); :class:`RunStopped` (one
    line) when the exporter fails or the difference is over :data:`TOLERANCE`."""
    build, run = FORMAT_STEPS[fmt]
    try:
        data = build(model, meta)
    except Exception as e:  # the exporter's own failures arrive as many kinds, with long messages
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
        raise RunStopped(f"{fmt[1:]} export failed: {type(e).__name__}: {first[:200]}") from None
    diffs = [difference(model, run(data, z), z) for z in check_latents(model.G.latent_dim)]
    worst = Difference(max(d.largest for d in diffs), max(d.unexplained for d in diffs),
                       sum(d.at_boundary for d in diffs), model.uint8)
    if not worst.ok():
        raise RunStopped(
            f"export check failed: the exported program differs from G_ema by {worst} on batches of "
            f"{' and '.join(map(str, CHECK_BATCHES))} (tolerance {TOLERANCE:g}); nothing was written"
        )
    return data, worst


FORMAT_STEPS: dict[str, tuple[Callable[[ExportedGenerator, dict[str, Any]], bytes],
                              Callable[[bytes, torch.Tensor], torch.Tensor]]] = {
    ".onnx": (onnx_bytes, run_onnx),
    ".pt2": (pt2_bytes, run_pt2),
}


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """The ``export`` flags."""
    a = p.add_argument
    a("--ckpt", required=True, metavar="PATH", help="checkpoint file (ckpt-*.pt in a run folder)")
    a("--out", required=True, metavar="FILE",
      help="FILE.onnx (ONNX, needs the export extra) or FILE.pt2 (a torch.export program)")
    a("--uint8", action="store_true",
      help="output uint8 RGB [N, R, R, 3] images as generate writes them, instead of float [N, 3, R, R] in [-1, 1]")


def run_export(args: argparse.Namespace) -> int:
    """``export`` command: validates, exports, checks, then writes; returns the exit code."""
    out = Path(args.out)
    fmt = out.suffix.lower()
    if fmt not in FORMATS:
        raise UsageError(f"--out must end in .onnx or .pt2, got {printable(str(out))!r}")
    if out.is_dir():
        raise UsageError(f"--out {printable(str(out))!r} is a folder")
    if fmt == ".onnx":
        check_extra()
    check_writable(out.parent if str(out.parent) else Path("."))
    ckpt = Path(args.ckpt)
    state = load_checkpoint(ckpt)
    G, res, fade = generator_of(state, "cpu")
    if G.label_size:
        raise UsageError(f"{printable(str(ckpt))} is a conditional checkpoint ({G.label_size} classes): "
                         "export does not take a label input yet")
    G.set_impl("reference")
    model = ExportedGenerator(G, res, fade, args.uint8)
    meta = metadata(G, res, fade, args.uint8, ckpt, state["progress"]["images"], fmt)
    data, worst = export_checked(model, fmt, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: f.write(data), what="exported generator")
    shape = f"uint8 [N, {res}, {res}, 3]" if args.uint8 else f"float32 [N, 3, {res}, {res}]"
    kind = f"ONNX opset {OPSET}" if fmt == ".onnx" else "torch.export program"
    runner = "onnxruntime on the CPU" if fmt == ".onnx" else "torch.export.load"
    print(f"checked against G_ema with {runner} on batches of {' and '.join(map(str, CHECK_BATCHES))}: "
          f"max difference {worst} (tolerance {TOLERANCE:g})")
    print(f"wrote {printable(str(out))} ({kind}: {INPUT} float32 [N, {G.latent_dim}] -> {OUTPUT} {shape}; "
          f"{res}px, fade {fade:.2f}, {state['progress']['images'] / 1000:g} kimg)")
    return 0
