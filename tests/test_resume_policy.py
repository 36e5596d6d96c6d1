"""The resume policy table and the numeric limits of the train settings."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from fastpggan.training.config import TrainConfig
from fastpggan.training.limits import LIMITS, check_config_numbers
from fastpggan.training.resume_policy import RESUME_POLICY, ResumeRefused, policy_summary, resume_changes
from fastpggan.training.settings import FIXED, MAY_CHANGE, SCHEDULE


# 4 px to 4 kimg; 8 px fades to 8 and is stable to 12; 16 px fades to 16, then trains to 20 kimg.
SCHEDULE_16 = dict(fade_kimg=4, stable_kimg=4, total_kimg=20)


def _stored(**kw) -> dict:
    """A config as a checkpoint stores it (through JSON: string keys, lists)."""
    return json.loads(json.dumps(TrainConfig(resolution=16, **{**SCHEDULE_16, **kw}).to_dict()))


def _new(**kw) -> TrainConfig:
    return TrainConfig(resolution=16, **{**SCHEDULE_16, **kw})


def test_every_setting_has_a_rule():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields <= set(RESUME_POLICY), fields - set(RESUME_POLICY)
    assert {r.kind for r in RESUME_POLICY.values()} == {FIXED, SCHEDULE, MAY_CHANGE}
    # the settings other issues add have their rows already
    for name in ("fade_kimg", "stable_kimg", "total_kimg", "gp_resolution", "compile_backend",
                 "diversity", "diversity_threshold"):
        assert name in RESUME_POLICY
    assert RESUME_POLICY["total_kimg"].kind == SCHEDULE and RESUME_POLICY["lr"].kind == MAY_CHANGE


def test_same_settings_change_nothing():
    assert resume_changes(_stored(), _new(), 5000) == {}


def test_allowed_changes_are_returned_with_old_and_new():
    lr = {r: 0.01 for r in TrainConfig().lr}
    changes = resume_changes(_stored(), _new(lr=lr, batch={4: 8, 8: 8, 16: 8}, tick_kimg=3.0), 5000)
    assert changes["lr"][1] == lr and changes["lr"][0][16] == 0.001 and changes["tick_kimg"] == [50.0, 3.0]
    assert changes["batch"][1] == {4: 8, 8: 8, 16: 8} and set(changes) == {"lr", "batch", "tick_kimg"}


def test_fixed_settings_are_refused_in_one_line_naming_each():
    with pytest.raises(ResumeRefused) as e:
        resume_changes(_stored(), _new(seed=1, fmap_base=256, data="/elsewhere"), 5000)
    msg = str(e.value)
    assert "\n" not in msg and "--seed 1 (checkpoint: 0)" in msg and "--fmap-base 256 (checkpoint: 8192)" in msg
    assert "--data /elsewhere (checkpoint: None)" in msg and "another --out" in msg


def test_num_faces_only_matters_for_the_built_in_faces():
    assert resume_changes(_stored(data="/d"), _new(data="/d", num_faces=5), 5000) == {}
    with pytest.raises(ResumeRefused, match="--num-faces 5"):
        resume_changes(_stored(), _new(num_faces=5), 5000)


@pytest.mark.parametrize("images, kw, ok", [
    (1000, dict(fade_kimg=5, stable_kimg=5), True),   # still in the 4x4 phase: fine
    (6000, dict(fade_kimg=5, stable_kimg=5), False),  # mid-fade at 8 px: the fade would jump
    (6000, dict(fade_kimg=2, stable_kimg=2), False),  # would skip ahead to 16 px
    (20000, dict(total_kimg=35), True),               # finished at 16 px: training longer is fine
    (26000, dict(total_kimg=22), False),              # shorter, ending before where the run is
    (26000, dict(total_kimg=27), True),               # shorter, still ahead
])
def test_schedule_changes_only_where_the_run_stays_put(images, kw, ok):
    old = _stored(total_kimg=30.0) if images > 20000 else _stored()
    if ok:
        assert set(resume_changes(old, _new(**kw), images)) == set(kw)
    else:
        with pytest.raises(ResumeRefused, match="cannot resume with --"):
            resume_changes(old, _new(**kw), images)


def test_settings_the_checkpoint_predates_and_unknown_keys():
    old = _stored()
    old.pop("metric_n")
    old["a_setting_since_removed"] = 3
    assert resume_changes(old, _new(), 100) == {"metric_n": [None, 2000]}


def test_help_summary_names_the_flags():
    s = policy_summary()
    assert "--seed" in s and "--total-kimg" in s and "'resume' event" in s


@pytest.mark.parametrize("field, bad", [
    ("lr", {4: math.nan}), ("lr", {4: math.inf}), ("lr", {8: 0.0}), ("lr", {1024: 2.0}), ("fade_kimg", math.inf),
    ("stable_kimg", -1.0), ("total_kimg", math.nan), ("total_kimg", 0.0), ("ema_beta", 1.0), ("ema_beta", math.nan),
    ("tick_kimg", 1e-6), ("log_kimg", 0.0004), ("seed", 2**40), ("seed", -1), ("grid", 1000),
    ("latent_dim", 10**30), ("workers", -1), ("metric_n", 1), ("batch", {4: 0, 8: 8}),
    ("metric_every", 1e-5), ("metric_every", math.inf), ("gp_every", 0),
])
def test_numbers_that_cannot_train_are_refused_naming_the_flag(field, bad):
    cfg = dataclasses.replace(TrainConfig(), **{field: bad})
    with pytest.raises(ValueError) as e:
        check_config_numbers(cfg)
    flag = {"resolution": "--res"}.get(field, "--" + field.replace("_", "-"))
    assert str(e.value).startswith(flag) and "\n" not in str(e.value)


def test_training_grid_must_fit_one_sheet():
    check_config_numbers(TrainConfig(resolution=1024, grid=8))
    with pytest.raises(ValueError, match="--grid must be at most 8 at --res 1024"):
        check_config_numbers(TrainConfig(resolution=1024, grid=9))


def test_defaults_and_edges_pass():
    check_config_numbers(TrainConfig())
    check_config_numbers(TrainConfig(tick_kimg=0.001, log_kimg=0.001, metric_every=0.001, seed=2**32 - 1,
                                     ema_beta=0.0, lr={4: 1.0}, fade_kimg=0.0))
    assert set(LIMITS) <= set(RESUME_POLICY)  # every limited setting is a known one
