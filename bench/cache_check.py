"""What checking the decoded-image cache costs: the block CRC-32 that every open of a cache runs
over its files (:func:`fastpggan.data.dataset.verify_cache`), timed on a file of random bytes
held in the page cache (so it measures the hashing, not the disk), then extrapolated to a cache
of ``--images`` images at ``--res`` px (every level, ``R`` down to 4 px).

    python -m bench.cache_check --mib 512 --reps 3 --images 50000 --res 256

A cache read from a cold disk is checked no faster than the disk reads it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from fastpggan.data.dataset import _block_crcs, _levels


def cache_bytes(images: int, res: int) -> int:
    """Bytes of every ``.npy`` level of a cache of ``images`` images at ``res`` px (headers aside)."""
    return sum(images * r * r * 3 for r in _levels(res))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, default=512, help="size of the timed file (default: %(default)s)")
    p.add_argument("--reps", type=int, default=3, help="timed passes; the best counts (default: %(default)s)")
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--res", type=int, default=256)
    args = p.parse_args(argv)
    size = args.mib << 20
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "res.npy"
        with open(path, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        _block_crcs(path, size)  # warm: the file in the page cache
        best = float("inf")
        for _ in range(args.reps):
            t = time.perf_counter()
            _block_crcs(path, size)
            best = min(best, time.perf_counter() - t)
    rate = size / best
    total = cache_bytes(args.images, args.res)
    print(f"block CRC-32 of {args.mib} MiB (page cache, {os.cpu_count()} CPUs, up to 4 threads): "
          f"{best:.3f} s, {rate / 1e6:.0f} MB/s")
    print(f"extrapolated: a {args.images}-image {args.res} px cache ({total / 1e9:.1f} GB, all levels) "
          f"takes {total / rate:.1f} s to check at that rate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
