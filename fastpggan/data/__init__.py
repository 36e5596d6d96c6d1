"""Image data: the built-in procedural anime faces and user image folders or zips.

Public names:
    render_face(index, size, seed)      one built-in face as a PIL RGB image (``faces``)
    open_source(data, num_faces, seed)  resolve ``--data`` into a :class:`Source` (``dataset``)
    load_data(source, R, cache_dir)     decode once -> per-resolution ``uint8`` arrays
    RealBatches, EpochDraws, step_batch per-step real minibatches, epoch by epoch (``feed``)
    split_holdout, auto_holdout         the images a run keeps out of training (``holdout``)
    check_labels(data)                  can a conditional run use its labels? (``dataset``)
    DataError                           unusable data path (one-line message)
"""

from fastpggan.data.dataset import DataError, ImageData, Source, check_labels, load_data, open_source
from fastpggan.data.faces import render_face
from fastpggan.data.feed import EpochDraws, RealBatches, step_batch
from fastpggan.data.holdout import auto_holdout, split_holdout

__all__ = [
    "DataError",
    "EpochDraws",
    "ImageData",
    "RealBatches",
    "Source",
    "auto_holdout",
    "check_labels",
    "load_data",
    "open_source",
    "render_face",
    "split_holdout",
    "step_batch",
]
