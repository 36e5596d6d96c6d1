"""``export``: a tiny checkpoint's G_ema as ONNX and as a ``torch.export`` program, checked
against the checkpoint, and the README's onnxruntime example run as written."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import torch_threads
import torch
from PIL import Image

from fastpggan.__main__ import main
from fastpggan.commands import export
from fastpggan.sampling import hwc_uint8, latents, to_hwc_uint8
from fastpggan.training import latest_checkpoint
from fastpggan.training.checkpoint import load_checkpoint, load_generator, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--fmap-base", "64", "--fmap-max", "16", "--latent-dim", "16", "--batch", "8",
        "--num-faces", "32", "--workers", "0", "--grid", "2", "--no-tensorboard"]
# Python with the repository, fastpggan and (where asked) torch made unimportable: what a user
# of the exported file has. sys.modules[name] = None makes `import name` raise ImportError,
# also for an editable install (CI's).
ISOLATED = ("import os, sys; sys.path = [p for p in sys.path if p and os.path.realpath(p) != {root!r}]; "
            "[sys.modules.__setitem__(m, None) for m in {blocked!r}]\n")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    with torch_threads(1):
        assert main(["train", "--res", "8", "--out", str(out), "--fade-kimg", "0.008", "--stable-kimg", "0.008",
                     "--total-kimg", "0.024", *TINY]) == 0
    return latest_checkpoint(out)


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory) -> dict[tuple[str, bool], tuple[Path, str]]:
    """Both formats, float and uint8, exported once: ``(suffix, uint8) -> (file, stdout)``."""
    folder = tmp_path_factory.mktemp("exported")
    files = {}
    for fmt in (".onnx", ".pt2"):
        for uint8 in (False, True):
            out = folder / f"g{'-uint8' if uint8 else ''}{fmt}"
            argv = ["export", "--ckpt", str(ckpt), "--out", str(out)] + (["--uint8"] if uint8 else [])
            with torch_threads(1):
                rc, stdout = _run_main(argv)
            assert rc == 0, stdout
            files[fmt, uint8] = out, stdout
    return files


def _run_main(argv: list[str]) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(argv)
    return rc, buf.getvalue()


def _run(path: Path, z: torch.Tensor) -> torch.Tensor:
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"z": z.numpy()})[0])
    return torch.export.load(path).module()(z)


@pytest.mark.parametrize("uint8", [False, True], ids=["float", "uint8"])
@pytest.mark.parametrize("fmt", [".onnx", ".pt2"])
def test_export_reloads_and_matches_g_ema(exported, ckpt, fmt, uint8):
    path, stdout = exported[fmt, uint8]
    assert re.search(r"max difference \S+", stdout) and "tolerance 0.001" in stdout
    G, res, fade = load_generator(ckpt)
    g = torch.Generator().manual_seed(123)
    for n in (1, 7):
        z = torch.randn(n, G.latent_dim, generator=g)
        got = _run(path, z)
        with torch.no_grad():
            images = G(z, res, fade)
        if uint8:
            assert got.dtype == torch.uint8 and got.shape == (n, res, res, 3)
            # at most one level, and only where G_ema's value is within the tolerance of a rounding boundary
            off = (got.int() - hwc_uint8(images).int()).abs()
            scaled = images.clamp(-1, 1).add(1).mul(127.5).permute(0, 2, 3, 1)
            near = (scaled - scaled.floor() - 0.5).abs() <= export.TOLERANCE * 127.5
            assert off.max() <= 1 and not (off.bool() & ~near).any()
            if fmt == ".pt2":
                assert torch.equal(got, hwc_uint8(images))
        else:
            assert got.dtype == torch.float32 and got.shape == (n, 3, res, res)
            assert (got - images).abs().max() <= export.TOLERANCE


def test_metadata_in_both_formats(exported, ckpt):
    import onnx

    sha = export.file_sha256(ckpt)
    props = {p.key: p.value for p in onnx.load(exported[".onnx", False][0]).metadata_props}
    extra = {"fastpggan.json": ""}
    torch.export.load(exported[".pt2", True][0], extra_files=extra)
    pt2 = json.loads(extra["fastpggan.json"])
    assert pt2 == json.loads(zipfile.ZipFile(exported[".pt2", True][0]).read("archive/extra/fastpggan.json"))
    for meta, uint8 in ((props, False), ({k: v if isinstance(v, str) else json.dumps(v) for k, v in pt2.items()}, True)):
        assert meta["resolution"] == "8" and meta["latent_dim"] == "16" and meta["class_names"] == "[]"
        assert meta["latent_distribution"].startswith("standard normal")
        assert meta["output_dtype"] == ("uint8" if uint8 else "float32")
        assert meta["output_layout"] == ("NHWC" if uint8 else "NCHW")
        assert meta["source_checkpoint"] == ckpt.name and meta["source_sha256"] == sha
        assert meta["source_kimg"] == "0.024" and meta["fade"] == "1.0"
        assert meta["fastpggan_version"] == "0.1.0"
    assert props["onnx_opset"] == str(export.OPSET) and "onnx_opset" not in pt2
    model = onnx.load(exported[".onnx", False][0])
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [export.OPSET]
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")  # a named, dynamic batch dimension


def test_exported_graphs_hold_standard_ops_only(exported):
    """The reference path is what is exported: no fastpggan or Triton op in either graph."""
    import onnx

    for uint8 in (False, True):
        program = torch.export.load(exported[".pt2", uint8][0])
        targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
        assert targets and all(t.startswith("aten.") for t in targets), targets
        model = onnx.load(exported[".onnx", uint8][0])
        assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
        assert not model.functions  # every op inlined as a standard one


def test_a_run_trained_with_triton_exports_the_reference(ckpt, tmp_path):
    state = load_checkpoint(ckpt)
    state["config"] = {**state["config"], "impl": "triton"}
    triton_ckpt = save_checkpoint(state, tmp_path / ckpt.name)
    out = tmp_path / "g.pt2"
    with torch_threads(1):
        rc, _ = _run_main(["export", "--ckpt", str(triton_ckpt), "--out", str(out)])
    assert rc == 0
    program = torch.export.load(out)
    assert all(str(n.target).startswith("aten.") for n in program.graph.nodes if n.op == "call_function")


def test_uint8_equals_what_generate_writes(exported, ckpt, tmp_path):
    png = tmp_path / "g.png"
    assert main(["generate", "--ckpt", str(ckpt), "--n", "7", "--seed", "5", "--out", str(png)]) == 0
    sheet = np.asarray(Image.open(png).convert("RGB"))
    # 7 samples at 8 px: 3 columns of 64 px cells (8x nearest upscale), 1 px gaps
    cells = np.stack([sheet[(i // 3) * 65: (i // 3) * 65 + 64: 8, (i % 3) * 65: (i % 3) * 65 + 64: 8]
                      for i in range(7)])
    z = next(latents(7, 16, 5))
    G, res, fade = load_generator(ckpt)
    assert np.array_equal(cells, to_hwc_uint8(G(z, res, fade)))  # the cells are generate's samples
    assert np.array_equal(_run(exported[".pt2", True][0], z).numpy(), cells)
    onnx_pixels = _run(exported[".onnx", True][0], z).numpy().astype(int)
    # onnxruntime's float sums may round a value at a boundary the other way (by one level);
    # on these latents none does
    assert np.array_equal(onnx_pixels, cells)


def test_pt2_loads_without_fastpggan(exported):
    path = exported[".pt2", False][0]
    code = ISOLATED.format(root=os.path.realpath(ROOT), blocked=["fastpggan"]) + (
        "import torch\n"
        "try:\n    import fastpggan\nexcept ImportError:\n    pass\nelse:\n    raise SystemExit('fastpggan importable')\n"
        f"m = torch.export.load({str(path)!r}).module()\n"
        "for n in (1, 7):\n    y = m(torch.randn(n, 16))\n    assert y.shape == (n, 3, 8, 8), y.shape\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=path.parent, timeout=120,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def readme_example() -> str:
    """The README's onnxruntime example: the indented block of the Export section that imports
    onnxruntime, dedented."""
    section = (ROOT / "README.md").read_text().split("\n## Export\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"(?:^(?: {4}.*)?\n)+", section, flags=re.M)
    code = [b for b in blocks if "import onnxruntime" in b or "onnxruntime as ort" in b]
    assert len(code) == 1, blocks
    return "\n".join(line[4:] for line in code[0].splitlines()).strip() + "\n"


def test_readme_example_runs_as_written(exported, tmp_path):
    shutil.copy(exported[".onnx", False][0], tmp_path / "faces.onnx")
    example = readme_example()
    assert "faces.onnx" in example and len(example.strip().splitlines()) <= 10
    code = ISOLATED.format(root=os.path.realpath(ROOT), blocked=["fastpggan", "torch"]) + example
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr[-2000:]
    img = Image.open(tmp_path / "faces.png")
    assert img.size == (4 * 8, 8) and img.mode == "RGB"
    # the example's pixels are the model's images, mapped as generate maps them
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "faces.onnx"), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(0).standard_normal((4, 16), dtype=np.float32)
    images = torch.from_numpy(session.run(None, {"z": z})[0])
    assert np.array_equal(np.asarray(img), np.concatenate(list(to_hwc_uint8(images)), axis=1))


def _bad(tmp_path: Path, ckpt: Path, case: str) -> tuple[list[str], str]:
    if case == "missing checkpoint":
        return ["--ckpt", str(tmp_path / "no.pt"), "--out", str(tmp_path / "g.onnx")], "does not exist"
    if case == "damaged checkpoint":
        bad = tmp_path / "in" / "bad.pt"
        bad.parent.mkdir()
        data = bytearray(ckpt.read_bytes())
        bad.write_bytes(bytes(data[: len(data) // 2]))
        return ["--ckpt", str(bad), "--out", str(tmp_path / "g.pt2")], "damaged or truncated"
    if case == "unknown extension":
        return ["--ckpt", str(ckpt), "--out", str(tmp_path / "g.tflite")], "--out must end in .onnx or .pt2"
    if case == "out is a folder":
        (tmp_path / "d.onnx").mkdir()
        return ["--ckpt", str(ckpt), "--out", str(tmp_path / "d.onnx")], "is a folder"
    if case == "unwritable out":
        (tmp_path / "file").write_text("")
        return ["--ckpt", str(ckpt), "--out", str(tmp_path / "file" / "g.onnx")], "is not a folder"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing checkpoint", "damaged checkpoint", "unknown extension", "out is a folder",
                                  "unwritable out"])
def test_bad_input_is_one_line_exit_2_nothing_written(ckpt, tmp_path, capsys, case):
    argv, expect = _bad(tmp_path, ckpt, case)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert expect in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_missing_extra_names_the_pip_command(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "g.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("ONNX export needs onnxruntime: pip install 'fastpggan[export]'") and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_over_tolerance_is_one_line_exit_1_nothing_written(ckpt, tmp_path, capsys, monkeypatch):
    build, run = export.FORMAT_STEPS[".pt2"]
    monkeypatch.setitem(export.FORMAT_STEPS, ".pt2", (build, lambda data, z: run(data, z) + 2e-3))
    out = tmp_path / "g.pt2"
    with torch_threads(1):
        assert main(["export", "--ckpt", str(ckpt), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "export check failed" in err and "by 0.002" in err and "tolerance 0.001" in err and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_fade_is_baked_in():
    """A generator caught in the middle of a fade exports that blend (checked at export too)."""
    from fastpggan.networks import Generator

    torch.manual_seed(1)
    G = Generator(8, 16, 64, 16, impl="reference").eval().requires_grad_(False)
    model = export.ExportedGenerator(G, 8, 0.375, uint8=False)
    with torch_threads(1):
        data, worst = export.export_checked(model, ".pt2", {})
    z = torch.randn(3, 16)
    got = export.run_pt2(data, z)
    assert worst.largest <= export.TOLERANCE
    assert torch.equal(got, G(z, 8, 0.375)) and not torch.allclose(got, G(z, 8, 1.0))
