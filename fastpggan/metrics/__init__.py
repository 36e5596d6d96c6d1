"""Quality metrics: multi-scale sliced Wasserstein distance and FID."""
