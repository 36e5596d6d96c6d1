"""FID: the Frechet distance against closed forms, streaming statistics, the weights check,
the stats cache, and the whole generator evaluation with a small injected feature extractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastpggan import Generator
from fastpggan.metrics import (
    INCEPTION_URL,
    FeatureStats,
    FeatureStatsAccumulator,
    InceptionWeightsError,
    dataset_identity,
    evaluate_generator,
    feature_stats,
    fid_from_stats,
    frechet_distance,
    inception_extractor,
    metric_names,
    sample_images,
    stats_cache_path,
)
from fastpggan.metrics import features as features_mod
from fastpggan.metrics.images import iterate_batches


class TinyFeatures:
    """Deterministic stand-in for Inception: uint8 [N, 3, H, W] -> float32 [N, 16]."""

    name = "tiny-test-features"

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(123)
        self.proj = torch.randn(48, 16, generator=g)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8
        x = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)
        return torch.tanh(x @ self.proj.to(x.device))


def random_images(n: int, res: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.randn(n, 3, 4, 4, generator=g), size=res, mode="bilinear")
    return (128 + 60 * scale * x).round().clamp(0, 255).to(torch.uint8)


def small_generator() -> Generator:
    torch.manual_seed(0)
    return Generator(16, latent_dim=16, fmap_base=64, fmap_max=16, impl="reference")


# --- the Frechet distance ------------------------------------------------------------------


def test_frechet_distance_diagonal_closed_form() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=7), rng.normal(size=7)
    v1, v2 = rng.uniform(0.1, 3, size=7), rng.uniform(0.1, 3, size=7)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert got == pytest.approx(want, rel=1e-12)


def test_frechet_distance_matches_the_eigvals_formula() -> None:
    # The reference FID code's form: tr sqrt(S1 S2) from the eigenvalues of the product.
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(9, 9)), rng.normal(size=(9, 12))
    s1, s2 = a @ a.T / 9, b @ b.T / 12
    mu1, mu2 = rng.normal(size=9), rng.normal(size=9)
    tr = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(complex)).real.sum()
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-10)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-10)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="mu \\[D\\]"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))


def test_streaming_stats_match_numpy() -> None:
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(301, 5)) * [1, 2, 3, 0.5, 1e-3] + 1e4  # far from zero, on purpose
    acc = FeatureStatsAccumulator()
    for chunk in np.array_split(feats, 7):
        acc.update(torch.from_numpy(chunk))
    stats = acc.stats()
    assert stats.count == 301
    np.testing.assert_allclose(stats.mu, feats.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(stats.sigma, np.cov(feats, rowvar=False), rtol=1e-8, atol=1e-14)


# --- FID end to end with the injected extractor --------------------------------------------


def test_fid_of_a_set_against_itself_and_against_another() -> None:
    ext = TinyFeatures()
    a = feature_stats(random_images(200, 16, seed=0), 200, 16, ext, progress=False)
    a_again = feature_stats(list(random_images(200, 16, seed=0).split(33)), 200, 16, ext, progress=False)
    same_dist = feature_stats(random_images(200, 16, seed=1), 200, 16, ext, progress=False)
    other = feature_stats(random_images(200, 16, seed=2, scale=0.3), 200, 16, ext, progress=False)
    assert fid_from_stats(a, a_again) == pytest.approx(0.0, abs=1e-9)
    assert 0 < fid_from_stats(a, same_dist) < fid_from_stats(a, other) / 5


def test_feature_stats_downscale_larger_reals() -> None:
    ext = TinyFeatures()
    big = random_images(20, 32, seed=0)
    small = next(iterate_batches(big, 20, 16, batch_size=20))
    s_big = feature_stats(big, 20, 16, ext, progress=False)
    s_small = feature_stats(small, 20, 16, ext, progress=False)
    np.testing.assert_array_equal(s_big.mu, s_small.mu)


# --- the Inception weights -----------------------------------------------------------------


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache and no network (a failing connect, never a real one)."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    calls = []

    def offline(host_port, timeout):
        calls.append((host_port, timeout))
        raise OSError("network is unreachable")

    monkeypatch.setattr(features_mod.socket, "create_connection", offline)
    yield calls
    torch.hub.set_dir(old)


def test_missing_weights_without_network_fail_fast_with_the_url(empty_hub) -> None:
    with pytest.raises(InceptionWeightsError) as err:
        inception_extractor(None, "cpu")
    msg = str(err.value)
    assert INCEPTION_URL in msg and "--inception-weights" in msg and "no network" in msg
    assert len(empty_hub) == 1 and empty_hub[0][1] <= 5.0  # one bounded connect, no download


def test_missing_weights_file_is_reported(tmp_path, empty_hub) -> None:
    with pytest.raises(InceptionWeightsError, match="does not exist.*" + INCEPTION_URL.replace(".", r"\.")):
        inception_extractor(tmp_path / "nope.pth", "cpu")
    assert empty_hub == []


def test_missing_weights_stop_evaluation_before_sampling(empty_hub) -> None:
    class NeverRun(torch.nn.Module):
        resolution, latent_dim = 16, 4

        def forward(self, *args):
            raise AssertionError("sampled before the weights check")

    with pytest.raises(InceptionWeightsError):
        evaluate_generator(NeverRun(), random_images(4, 16, 0), metrics=("fid",), num_images=4)


def test_inception_extractor_with_given_weights(tmp_path, empty_hub) -> None:
    """torch-fidelity's Inception, loaded from a local file: uint8 in, 2048-d features out.

    The weights here are random (made from the network's own initialisation): the test checks
    the wiring (offline loading, shapes, resize to 299 inside), not the standard values.
    """
    tf = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    cls = tf.FeatureExtractorInceptionV3
    orig_load = cls.load_state_dict
    cls.load_state_dict = lambda self, sd: None  # build one net without any weights file
    try:
        tf_load = tf.load_state_dict_from_url
        tf.load_state_dict_from_url = lambda *a, **k: {}
        try:
            net = cls("inception-v3-compat", ["2048"])
        finally:
            tf.load_state_dict_from_url = tf_load
    finally:
        cls.load_state_dict = orig_load
    weights = tmp_path / "inception.pth"
    torch.save(net.state_dict(), weights)

    ext = inception_extractor(weights, "cpu")
    feats = ext(random_images(2, 32, seed=0))
    assert feats.shape == (2, 2048) and feats.dtype == torch.float32 and torch.isfinite(feats).all()
    assert empty_hub == []  # a given path never touches the network

    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    with pytest.raises(InceptionWeightsError, match="cannot load"):
        inception_extractor(tmp_path / "junk.pth", "cpu")


# --- the stats cache and the generator evaluation ------------------------------------------


def test_stats_cache_key_separates_what_matters(tmp_path) -> None:
    base = stats_cache_path(tmp_path, "d1", 64, 1000, "inc")
    assert base == stats_cache_path(tmp_path, "d1", 64, 1000, "inc")
    others = [
        stats_cache_path(tmp_path, "d2", 64, 1000, "inc"),
        stats_cache_path(tmp_path, "d1", 32, 1000, "inc"),
        stats_cache_path(tmp_path, "d1", 64, 999, "inc"),
        stats_cache_path(tmp_path, "d1", 64, 1000, TinyFeatures()),
    ]
    assert len({base, *others}) == 5


def test_dataset_identity_follows_the_files(tmp_path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    first = dataset_identity(tmp_path)
    assert dataset_identity(tmp_path) == first
    (tmp_path / "b.png").write_bytes(b"yy")
    assert dataset_identity(tmp_path) != first
    assert dataset_identity("builtin-faces") == "name:builtin-faces"


def test_stats_save_load_roundtrip(tmp_path) -> None:
    s = FeatureStats(np.arange(3.0), np.eye(3) * 2, 17)
    s.save(tmp_path / "s.npz")
    t = FeatureStats.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(t.mu, s.mu)
    np.testing.assert_array_equal(t.sigma, s.sigma)
    assert t.count == 17 and list(tmp_path.iterdir()) == [tmp_path / "s.npz"]


def test_sample_images_is_seeded_and_batch_independent() -> None:
    G = small_generator()
    a = torch.cat(list(sample_images(G, 10, batch_size=10, seed=5, progress=False)))
    b = torch.cat(list(sample_images(G, 10, batch_size=3, seed=5, progress=False)))
    c = torch.cat(list(sample_images(G, 10, batch_size=10, seed=6, progress=False)))
    assert a.shape == (10, 3, 16, 16) and a.dtype == torch.uint8
    assert (a.int() - b.int()).abs().max() <= 1  # float round-off may flip one rounding step
    assert not torch.equal(a, c)


def test_evaluate_generator_end_to_end_with_cache(tmp_path) -> None:
    G, ext = small_generator(), TinyFeatures()
    reals = random_images(48, 32, seed=0)  # larger than G's 16 px: box-filtered down
    kw = dict(num_images=48, batch_size=16, extractor=ext, progress=False, device="cpu")

    res = evaluate_generator(G, reals, cache_dir=tmp_path, dataset_id="toy", **kw)
    assert list(res) == metric_names(16) + ["fid"]
    assert res["fid"] > 0 and res["swd_x1e3_avg"] > 0
    cached = list((tmp_path / "fid-stats").iterdir())
    assert len(cached) == 1  # miss: computed and written

    # Hit: FID alone needs no reals now, and gives the same value.
    again = evaluate_generator(G, None, metrics=("fid",), cache_dir=tmp_path, dataset_id="toy", **kw)
    assert again["fid"] == res["fid"]
    # Another resolution is another entry (miss).
    evaluate_generator(G, reals, res=8, metrics=("fid",), cache_dir=tmp_path, dataset_id="toy", **kw)
    assert len(list((tmp_path / "fid-stats").iterdir())) == 2

    # The in-process cache keeps both real sides for repeated evaluation during training.
    held: dict = {}
    first = evaluate_generator(G, reals, real_cache=held, **kw)
    second = evaluate_generator(G, None, real_cache=held, **kw)
    assert first == second == res

    # Another seed: other latents and SWD positions, so other values.
    other = evaluate_generator(G, reals, seed=1, **kw)
    assert other["fid"] != res["fid"]


def test_evaluate_generator_rejects_bad_arguments() -> None:
    G = small_generator()
    with pytest.raises(ValueError, match="subset"):
        evaluate_generator(G, None, metrics=("is",), extractor=TinyFeatures())
    with pytest.raises(ValueError, match="no real images"):
        evaluate_generator(G, None, metrics=("swd",), num_images=4, progress=False)
    with pytest.raises(ValueError, match="at least 16"):
        evaluate_generator(G, None, res=8, metrics=("swd",), num_images=4)
