"""Quality metrics: the PGGAN paper's multi-scale sliced Wasserstein distance and FID.

Public names:
    swd, multiscale_swd, SWDDescriptors, sliced_wasserstein, laplacian_pyramid   SWD (``swd``)
    frechet_distance, fid_from_stats, feature_stats, FeatureStats,
    FeatureStatsAccumulator, dataset_identity, stats_cache_path, default_cache_dir  FID (``fid``)
    inception_extractor, InceptionWeightsError, FeatureExtractor   extractors (``features``)
    evaluate_generator, sample_images                              for a generator (``evaluate``)
"""

from fastpggan.metrics.evaluate import evaluate_generator, sample_images
from fastpggan.metrics.features import (
    INCEPTION_URL,
    FeatureExtractor,
    InceptionWeightsError,
    inception_extractor,
)
from fastpggan.metrics.fid import (
    FeatureStats,
    FeatureStatsAccumulator,
    dataset_identity,
    default_cache_dir,
    feature_stats,
    fid_from_stats,
    frechet_distance,
    stats_cache_path,
)
from fastpggan.metrics.swd import (
    SWDDescriptors,
    laplacian_pyramid,
    metric_names,
    multiscale_swd,
    sliced_wasserstein,
    swd,
)

__all__ = [
    "INCEPTION_URL",
    "FeatureExtractor",
    "FeatureStats",
    "FeatureStatsAccumulator",
    "InceptionWeightsError",
    "SWDDescriptors",
    "dataset_identity",
    "default_cache_dir",
    "evaluate_generator",
    "feature_stats",
    "fid_from_stats",
    "frechet_distance",
    "inception_extractor",
    "laplacian_pyramid",
    "metric_names",
    "multiscale_swd",
    "sample_images",
    "sliced_wasserstein",
    "stats_cache_path",
    "swd",
]
