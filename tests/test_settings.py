"""One declaration per setting: every ``train`` flag reaches its field, every number has a range,
every field a resume rule, and a new setting is one declaration (demonstrated below)."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from fastpggan.commands import train
from fastpggan.commands.setting_flags import add_setting_flags, flag_values
from fastpggan.errors import UsageError
from fastpggan.ranges import Limit
from fastpggan.training.config import TrainConfig
from fastpggan.training.limits import LIMITS, check_config_numbers
from fastpggan.training.per_resolution import DEFAULT_LR
from fastpggan.training.resume_policy import RESUME_POLICY
from fastpggan.training.settings import (
    FIXED,
    MAY,
    MAY_CHANGE,
    SCHEDULE,
    Flag,
    declared,
    field_default,
    limits,
    rules,
    setting,
)

FLAGS = {name: s.flag for name, s in declared(TrainConfig).items() if s.flag is not None}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    train.add_train_arguments(p)
    return p


def _resolve(argv: list[str]) -> TrainConfig:
    return train.resolve(_parser().parse_args(argv))


def _hooked(tmp_path: Path) -> dict[str, tuple[list[str], object]]:
    """Flags whose value a hook of the train command resolves: argv -> the field's value."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(images / f"{i}.png")
    out = tmp_path / "elsewhere"
    return {
        "resolution": (["--res", "128"], 128),
        "data": (["--data", str(images)], str(images)),
        "out": (["--out", str(out)], str(out)),
        "batch": (["--batch", "16"], {r: 16 for r in TrainConfig().batch}),
        "lr": (["--lr", "0.002"], {r: 0.002 for r in DEFAULT_LR}),
        "metrics": (["--metric", "fid"], ["fid"]),  # checked only with --metric-every
        "cache_dir": (["--cache-dir", str(tmp_path / "c")], str(tmp_path / "c")),
        "aug_pipe": (["--aug-pipe", "gc"], "gc"),
    }


# Needing a CUDA device: simulated (compute capability 8.0) with the reference ops.
ON_A_GPU = {"device": (["--device", "cpu"], "cpu"),
            "compile_backend": (["--compile-backend", "cudagraphs"], "cudagraphs")}


def _candidates(name: str, flag: Flag, baseline: object) -> list[tuple[list[str], object]]:
    """Non-default values to try for a flag no hook resolves: argv -> the value it should give."""
    if flag.action == "store_false":
        return [([flag.name], False)]
    if flag.action is argparse.BooleanOptionalAction:
        return [([flag.name], True), (["--no-" + flag.name[2:]], False)]
    if flag.choices:
        return [([flag.name, c], c) for c in flag.choices if c != "auto"]
    limit = LIMITS.get(name)
    if isinstance(baseline, int):
        return [([flag.name, str(v)], v) for v in (baseline + 1, baseline - 1)]
    if isinstance(baseline, float):
        tries = [baseline * 2, baseline / 2, baseline + 0.001]
        return [([flag.name, repr(v)], v) for v in tries if limit.lo <= v <= limit.hi]
    return [([flag.name, "some-text"], "some-text")]


def test_the_help_lists_exactly_the_declared_flags_then_resume():
    options = [a.option_strings[0] for a in _parser()._actions if a.option_strings]
    assert options == ["-h", *(f.name for f in FLAGS.values()), "--resume"]


def test_every_flag_reaches_its_field(tmp_path, monkeypatch):
    base = ["--out", str(tmp_path / "run")]
    baseline = _resolve(base)
    hooked = _hooked(tmp_path)
    reached = {}
    for name, flag in FLAGS.items():
        if name in ON_A_GPU:
            continue
        tries = [hooked[name]] if name in hooked else _candidates(name, flag, getattr(baseline, name))
        for argv, want in tries:
            if want == getattr(baseline, name):
                continue
            try:
                cfg = _resolve(base + argv)
            except UsageError:
                continue  # e.g. --impl triton on a CPU: try the next value
            assert getattr(cfg, name) == want, (argv, getattr(cfg, name))
            reached[name] = argv
            break
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    on_gpu = _resolve([*base, "--impl", "reference"])
    for name, (argv, want) in ON_A_GPU.items():
        assert getattr(on_gpu, name) != want
        assert getattr(_resolve([*base, "--impl", "reference", *argv]), name) == want
        reached[name] = argv
    assert set(reached) == set(FLAGS), set(FLAGS) - set(reached)


def test_every_numeric_field_has_a_range():
    def numeric(v: object) -> bool:
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, (list, tuple)):
            return bool(v) and all(numeric(x) for x in v)
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    wanted = {name for name in fields if numeric(field_default(TrainConfig, name))}
    assert wanted == set(LIMITS), wanted ^ set(LIMITS)
    check_config_numbers(TrainConfig())  # the defaults are within their ranges


def test_every_field_has_a_resume_rule():
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert list(RESUME_POLICY) == fields
    assert all(r.kind in (FIXED, SCHEDULE, MAY_CHANGE) for r in RESUME_POLICY.values())
    assert all(r.why for r in RESUME_POLICY.values() if r.kind == FIXED)  # said on a refusal

    @dataclass
    class Undeclared(TrainConfig):
        stray: int = 3

    with pytest.raises(TypeError, match="Undeclared.stray is not declared with setting"):
        declared(Undeclared)
    with pytest.raises(TypeError, match="resume"):
        setting(1, limit=Limit(0, 2))  # a setting without a rule cannot be written


def test_a_new_numeric_setting_is_one_declaration():
    """Say the next issue adds a cutout probability: one field, and it has a flag, help
    with its default, a range check naming the flag, and a resume rule."""

    @dataclass
    class NextConfig(TrainConfig):
        cutout_p: float = setting(0.0, resume=MAY, limit=Limit(0.0, 1.0), flag=Flag(
            "--cutout-p", "probability of cutting out a patch of each real image (default: %(default)s)", "P"))

    p = argparse.ArgumentParser()
    add_setting_flags(p, NextConfig)
    assert "probability of cutting out a patch of each real image (default: 0.0)" in " ".join(p.format_help().split())
    assert flag_values(p.parse_args(["--cutout-p", "0.25"]), NextConfig)["cutout_p"] == 0.25
    assert flag_values(p.parse_args([]), NextConfig)["cutout_p"] == 0.0
    with pytest.raises(SystemExit):  # argparse refuses text that is no number
        p.parse_args(["--cutout-p", "often"])
    for bad in (math.nan, math.inf, -0.5, 1.5):
        with pytest.raises(ValueError) as e:
            check_config_numbers(NextConfig(cutout_p=bad))
        assert str(e.value) == f"--cutout-p must be a finite number in [0, 1], got {bad!r}"
    check_config_numbers(NextConfig(cutout_p=1.0))
    assert limits(NextConfig)["cutout_p"] == Limit(0.0, 1.0)
    assert rules(NextConfig)["cutout_p"].kind == MAY_CHANGE
    assert "cutout_p" not in RESUME_POLICY and "cutout_p" not in LIMITS  # TrainConfig itself unchanged


def test_a_parse_error_names_its_flag_once():
    with pytest.raises(UsageError) as e:
        _resolve(["--res", "100"])
    assert str(e.value) == "--res: resolution must be a power of two from 8 to 1024, got 100"
    with pytest.raises(UsageError) as e:
        _resolve(["--batch", "0"])
    assert str(e.value).startswith("--batch must be one size")
