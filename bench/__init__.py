"""Benchmarks: ``pytest bench/ --benchmark-only`` and the GPU report (``python -m bench.gpu_report``)."""
