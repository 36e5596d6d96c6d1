"""Which images a run holds out of training (``--holdout``), to measure how much the critic
overfits: it scores held-out reals it never trained on beside the training reals
(:func:`fastpggan.training.ada.overfit_ratio`, the signal of ``--aug ada``).

The built-in faces are unlimited, so their held-out faces are extra ones, past ``--num-faces``
(the data is loaded with them at its end): training keeps every one of its ``--num-faces``
faces and draws exactly the batches a run without a holdout draws. A folder's held-out images
are taken from it, chosen by ``--seed`` from all of them (not its last files, which sort by
name and so by subfolder, that is by class or artist).
"""

from __future__ import annotations

import numpy as np

# --holdout when --aug ada needs one and none is given: extra built-in faces cost nothing; a
# folder gives up a share of its images (fewer would make the held-out mean too noisy to steer p)
FACES_HOLDOUT = 1000
FOLDER_SHARE = 0.1
FOLDER_MAX = 1000
# r_v from fewer held-out images scatters too much to steer by: about +-0.12 with 20, +-0.05
# with 100, against an overfitting signal of 0.1 to 0.2 (bench/RESULTS.md, 2026-12-03)
STEADY_HOLDOUT = 100
# the held-out images' random stream (which a folder holds out, the order they are scored in):
# its own, so that changing how training draws never moves them
HOLDOUT_STREAM = 0x401D


def check_holdout(count: int, holdout: int, aug: str = "off") -> None:
    """``ValueError`` (one line) unless ``holdout`` of ``count`` images leaves some to train on
    and, with ``aug == "ada"`` (which steers by them), holds at least one out."""
    if aug == "ada" and holdout < 1:
        raise ValueError("--aug ada steers p by the critic's scores of held-out images: --holdout "
                         "must be 1 or more (or left out)")
    if not 0 <= holdout < count:
        raise ValueError(f"--holdout {holdout} of {count} images leaves none to train on")


def split_holdout(count: int, holdout: int, seed: int, tail: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(train, held)``: sorted int64 indices into ``count`` images, disjoint, together all of
    them, ``held`` of length ``holdout``. ``tail``: the held-out images are the last ``holdout``
    (built-in faces); else a draw seeded by ``seed``. ``ValueError`` (one line) when no image
    would be left to train on."""
    check_holdout(count, holdout)
    if tail:
        return np.arange(count - holdout, dtype=np.int64), np.arange(count - holdout, count, dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, HOLDOUT_STREAM]))
    held = np.sort(rng.choice(count, size=holdout, replace=False)).astype(np.int64)
    train = np.setdiff1d(np.arange(count, dtype=np.int64), held, assume_unique=True)
    return train, held


class Rows:
    """Rows ``index`` (sorted int64) of a ``[N, ...]`` array (memory-mapped or not), read as an
    array of ``len(index)`` rows without copying it: ``shape``, ``dtype``, ``nbytes``, integer
    indexing (arrays, slices) and ``np.asarray``. What the feed, the collapse watch and the
    metrics read of one level of :class:`fastpggan.data.ImageData`."""

    def __init__(self, base: np.ndarray, index: np.ndarray) -> None:
        self.base, self.index = base, np.asarray(index, dtype=np.int64)
        self.shape = (len(self.index), *base.shape[1:])
        self.dtype = base.dtype
        self.nbytes = int(np.prod(self.shape)) * base.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):  # noqa: ANN001, ANN204 (numpy's indexing)
        if isinstance(key, tuple):
            return self.base[(self.index[key[0]], *key[1:])]
        return self.base[self.index[key]]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # noqa: ANN001
        out = self.base[self.index]
        return out if dtype is None else out.astype(dtype)


def rows(base: np.ndarray, index: np.ndarray) -> np.ndarray | Rows:
    """``base``'s rows ``index``: a plain view when they are one run (the built-in faces' training
    part), else :class:`Rows`."""
    if len(index) and index[-1] - index[0] + 1 == len(index):
        return base[int(index[0]) : int(index[-1]) + 1]
    return Rows(base, index)


def auto_holdout(count: int, faces: bool) -> int:
    """``--holdout``'s value when not given and ``--aug ada`` needs one: :data:`FACES_HOLDOUT`
    extra built-in faces (free), else :data:`FOLDER_SHARE` of a folder's ``count`` images
    (at least 1, at most :data:`FOLDER_MAX`)."""
    if faces:
        return FACES_HOLDOUT
    return max(1, min(FOLDER_MAX, round(count * FOLDER_SHARE)))
