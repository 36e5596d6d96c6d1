"""Multi-scale sliced Wasserstein distance: pieces against numpy references, then behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastpggan.metrics.swd import (
    SWDDescriptors,
    extract_descriptors,
    laplacian_pyramid,
    metric_names,
    multiscale_swd,
    normalize_descriptors,
    pyr_down,
    pyr_up,
    random_directions,
    sliced_wasserstein,
    swd,
)

# Fewer directions than the paper's 4 x 128 keep the CPU sorts cheap; what they test does not
# depend on the count (one test runs the defaults).
FAST = {"dir_repeats": 1, "dirs_per_repeat": 64}


def smooth_images(n: int, res: int, seed: int) -> torch.Tensor:
    """uint8 ``[n, 3, res, res]``: smooth random colour fields plus finer detail."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 3, 8, 8, generator=g)
    fine = torch.randn(n, 3, res // 2, res // 2, generator=g)
    up = torch.nn.functional.interpolate
    x = up(coarse, size=res, mode="bicubic", align_corners=False)
    x = x + 0.3 * up(fine, size=res, mode="bilinear", align_corners=False)
    return (x * 50 + 128).round().clamp(0, 255).to(torch.uint8)


def add_noise(images: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = images.float() + sigma * torch.randn(images.shape, generator=g)
    return x.round().clamp(0, 255).to(torch.uint8)


def blur(images: torch.Tensor, times: int) -> torch.Tensor:
    x = images.float()
    for _ in range(times):
        x = pyr_up(pyr_down(x))
    return x.round().clamp(0, 255).to(torch.uint8)


def descriptors(images: torch.Tensor, seed: int = 0, **kw: int) -> SWDDescriptors:
    d = SWDDescriptors(images.shape[-1], images.shape[0], seed=seed, **kw)
    d.update(images)
    return d


@pytest.fixture(scope="module")
def reals() -> torch.Tensor:
    return smooth_images(64, 32, seed=0)


@pytest.fixture(scope="module")
def real_desc(reals: torch.Tensor) -> SWDDescriptors:
    return descriptors(reals)


# --- pieces against references -------------------------------------------------------------

_K = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def _np_filter(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    # scipy.ndimage's mode="mirror" (what the authors use) is numpy's pad mode "reflect".
    h, w = x.shape[-2:]
    p = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    return sum(k[i, j] * p[:, :, i : i + h, j : j + w] for i in range(5) for j in range(5))


def _np_laplacian(x: np.ndarray, levels: int) -> list[np.ndarray]:
    pyramid = [x]
    for _ in range(levels - 1):
        down = _np_filter(pyramid[-1], _K)[:, :, ::2, ::2]
        up = np.zeros(down.shape[:2] + (down.shape[2] * 2, down.shape[3] * 2))
        up[:, :, ::2, ::2] = down
        pyramid[-1] = pyramid[-1] - _np_filter(up, 4 * _K)
        pyramid.append(down)
    return pyramid


def test_pyramid_matches_numpy_reference() -> None:
    x = torch.rand(2, 3, 48, 32, dtype=torch.float64) * 255  # not square, on purpose
    ours = laplacian_pyramid(x, 3)
    ref = _np_laplacian(x.numpy(), 3)
    assert [tuple(t.shape) for t in ours] == [(2, 3, 48, 32), (2, 3, 24, 16), (2, 3, 12, 8)]
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a.numpy(), b, rtol=0, atol=1e-10)


def test_pyramid_reconstructs_the_image() -> None:
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    levels = laplacian_pyramid(x, 3)
    y = levels[-1]
    for level in levels[-2::-1]:
        y = pyr_up(y) + level
    torch.testing.assert_close(y, x, rtol=0, atol=1e-12)


def test_extract_descriptors_matches_slicing() -> None:
    level = torch.randn(3, 3, 16, 16)
    pos = torch.tensor([[3, 3], [12, 12], [5, 9], [9, 4], [3, 12], [12, 3]])
    got = extract_descriptors(level, pos, per_image=2)
    assert got.shape == (6, 3, 7, 7)
    for i, (y, x) in enumerate(pos.tolist()):
        torch.testing.assert_close(got[i], level[i // 2, :, y - 3 : y + 4, x - 3 : x + 4], rtol=0, atol=0)


def test_sliced_wasserstein_matches_numpy() -> None:
    raw_a = torch.randn(300, 3, 7, 7) * torch.tensor([1.0, 5.0, 0.2]).view(1, 3, 1, 1) + 2
    raw_b = torch.randn(300, 3, 7, 7) ** 2
    got = sliced_wasserstein(
        normalize_descriptors(raw_a), normalize_descriptors(raw_b),
        torch.Generator().manual_seed(5), dir_repeats=3, dirs_per_repeat=16,
    )
    # The authors' finalize_descriptors and sliced_wasserstein, in numpy float64.
    g = torch.Generator().manual_seed(5)
    norm = []
    for raw in (raw_a.double().numpy(), raw_b.double().numpy()):
        raw = (raw - raw.mean(axis=(0, 2, 3), keepdims=True)) / raw.std(axis=(0, 2, 3), keepdims=True)
        norm.append(raw.reshape(300, -1))
    results = []
    for _ in range(3):
        dirs = random_directions(147, 16, g).double().numpy()
        pa, pb = np.sort(norm[0] @ dirs, axis=0), np.sort(norm[1] @ dirs, axis=0)
        results.append(np.abs(pa - pb).mean())
    assert got == pytest.approx(float(np.mean(results)), rel=1e-5)
    assert got > 0


# --- behaviour -----------------------------------------------------------------------------


def test_metric_names_and_units(real_desc: SWDDescriptors) -> None:
    assert metric_names(64) == ["swd_x1e3_64", "swd_x1e3_32", "swd_x1e3_16", "swd_x1e3_avg"]
    res = multiscale_swd(real_desc, descriptors(add_noise(smooth_images(64, 32, 0), 8)), **FAST)
    assert list(res) == metric_names(32)
    assert res["swd_x1e3_avg"] == pytest.approx((res["swd_x1e3_32"] + res["swd_x1e3_16"]) / 2)


def test_self_distance_is_zero_with_same_positions(reals: torch.Tensor, real_desc: SWDDescriptors) -> None:
    res = multiscale_swd(real_desc, descriptors(reals), **FAST)
    assert all(v == 0.0 for v in res.values())


def test_self_distance_is_sampling_noise_that_shrinks(reals: torch.Tensor) -> None:
    # With other positions the same images give only the sampling noise of M descriptors,
    # which falls like 1/sqrt(M): 16x the descriptors, about 1/4 of the distance.
    few = multiscale_swd(descriptors(reals, 0, nhoods_per_image=8), descriptors(reals, 1, nhoods_per_image=8), **FAST)
    many = multiscale_swd(descriptors(reals, 0), descriptors(reals, 1), **FAST)
    ratio = many["swd_x1e3_avg"] / few["swd_x1e3_avg"]
    assert 0.15 < ratio < 0.4, (few, many)


def test_grows_monotonically_with_noise(reals: torch.Tensor, real_desc: SWDDescriptors) -> None:
    values = [multiscale_swd(real_desc, descriptors(add_noise(reals, s)), **FAST) for s in (2, 8, 32)]
    for name in metric_names(32):
        seq = [v[name] for v in values]
        assert 0 < seq[0] < seq[1] < seq[2], (name, seq)


def test_grows_with_blur(reals: torch.Tensor, real_desc: SWDDescriptors) -> None:
    values = [multiscale_swd(real_desc, descriptors(blur(reals, k)), **FAST) for k in (1, 2)]
    noise_floor = multiscale_swd(real_desc, descriptors(reals, seed=1), **FAST)
    assert noise_floor["swd_x1e3_avg"] < values[0]["swd_x1e3_avg"] < values[1]["swd_x1e3_avg"]
    # Blur removes detail: the finest level moves most.
    assert values[0]["swd_x1e3_32"] > values[0]["swd_x1e3_16"]


def test_deterministic_given_seed_and_independent_of_batching(reals: torch.Tensor) -> None:
    # The paper's default directions (4 x 128) here; two separate runs with the same seed.
    reals, fakes = reals[:32], add_noise(reals[:32], 8)
    one = swd(reals, fakes, 32, 32, seed=3, batch_size=32)
    split = swd(list(reals.split(7)), list(fakes.split(13)), 32, 32, seed=3, batch_size=10)
    other = swd(reals, fakes, 32, 32, seed=4)
    assert one == split
    assert one["swd_x1e3_avg"] != other["swd_x1e3_avg"]


def test_float_input_is_converted_like_generator_output(reals: torch.Tensor) -> None:
    as_float = reals.float() / 127.5 - 1.0
    a, b = descriptors(reals), descriptors(as_float)
    for da, db in zip(a.descriptors, b.descriptors):
        torch.testing.assert_close(da, db, rtol=0, atol=0)


def test_max_descriptors_caps_memory() -> None:
    d = SWDDescriptors(64, 50_000, max_descriptors=2**19)
    assert d.per_image == 10  # 2**19 // 50_000
    assert [t.shape[0] for t in d.descriptors] == [500_000] * 3
    assert SWDDescriptors(32, 10).per_image == 128  # the paper's count when under the cap


def test_bad_inputs_fail_clearly(reals: torch.Tensor, real_desc: SWDDescriptors) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        SWDDescriptors(8, 4)
    d = SWDDescriptors(32, 4)
    with pytest.raises(ValueError, match="32x32"):
        d.update(reals[:2, :, :16, :16])
    with pytest.raises(ValueError, match="exceed"):
        d.update(reals[:5])
    d.update(reals[:4])
    with pytest.raises(ValueError, match="same num_images"):
        multiscale_swd(real_desc, d)
    with pytest.raises(ValueError, match="complete"):
        multiscale_swd(real_desc, SWDDescriptors(32, 64))
