"""Labels from the data (conditional training): subfolders, a dataset.json in a folder or a zip,
the built-in faces' hair colour; kept in the image cache; what a conditional run refuses."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

import fastpggan.data.dataset as ds
from fastpggan.data import DataError, check_labels, load_data, open_source
from fastpggan.data.faces import HAIR_NAMES, hair_class


def _png(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


def _grey(level):  # the images' colour tells which file each cached row came from
    return np.asarray(level)[:, 0, 0, 0].tolist()


def test_subfolders_are_classes_and_labels_survive_the_cache(tmp_path, monkeypatch):
    top = tmp_path / "data"
    _png(top / "cat" / "a.png", (10, 10, 10))
    _png(top / "cat" / "deep" / "b.png", (20, 20, 20))
    (top / "dog").mkdir()
    (top / "dog" / "broken.png").write_bytes(b"not an image")  # skipped: labels stay aligned
    _png(top / "dog" / "c.png", (30, 30, 30))
    data = load_data(open_source(str(top)), 8, cache_dir=tmp_path / "cache")
    assert data.class_names == ("cat", "dog") and data.skipped == 1
    assert _grey(data.levels[8]) == [10, 20, 30] and data.labels.tolist() == [0, 0, 1]
    assert data.class_counts() == [2, 1]
    check_labels(data)
    monkeypatch.setattr(ds, "_Decode", lambda *a, **k: pytest.fail("decoded again despite a cache"))
    again = load_data(open_source(str(top)), 8, cache_dir=tmp_path / "cache")
    assert again.labels.tolist() == [0, 0, 1] and again.class_names == ("cat", "dog")


def test_labels_file_in_a_folder_and_in_a_zip(tmp_path):
    top = tmp_path / "data"
    for k, name in enumerate(["x.png", "sub/y.png", "z.png"]):
        _png(top / name, (10 * (k + 1),) * 3)
    doc = {"labels": [["x.png", 1], ["sub/y.png", 0], ["z.png", 1]], "class_names": ["red", "blue"]}
    (top / "dataset.json").write_text(json.dumps(doc))
    data = load_data(open_source(str(top)), 8)
    assert data.skipped == 0  # the labels file is not taken for an image
    # names sorted: sub/y.png, x.png, z.png
    assert _grey(data.levels[8]) == [20, 10, 30] and data.labels.tolist() == [0, 1, 1]
    assert data.class_names == ("red", "blue")
    zpath = tmp_path / "data.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for name in ["x.png", "sub/y.png", "z.png"]:
            z.write(top / name, name)
        z.writestr("dataset.json", json.dumps({"labels": doc["labels"]}))  # no names: "0", "1"
    zdata = load_data(open_source(str(zpath)), 8)
    assert zdata.labels.tolist() == [0, 1, 1] and zdata.class_names == ("0", "1")
    check_labels(zdata)
    # a changed labels file is a different cache
    before = open_source(str(top)).fingerprint(8)
    doc["labels"][0][1] = 0
    (top / "dataset.json").write_text(json.dumps(doc))
    assert open_source(str(top)).fingerprint(8) != before


def test_built_in_faces_carry_their_hair_colour():
    data = load_data(open_source(None, 40), 8)
    assert data.class_names == HAIR_NAMES
    assert data.labels.tolist() == [hair_class(i) for i in range(40)]


@pytest.mark.parametrize("layout,message", [
    ({"top.png": None, "a/x.png": None, "b/y.png": None}, r"1 of 3 images have no label \(e.g. top.png\)"),
    ({"a/x.png": None, "a/y.png": None}, r"only one class \(a\)"),
    ({"x.png": None}, "has no labels: put each class's images in its own subfolder"),
    ({"x.png": 0, "y.png": 2}, r"1 class\(es\) have no images: 1"),
    ({"x.png": 0, "y.png": "one"}, r"dataset.json: each label must be"),
])
def test_what_a_conditional_run_refuses(tmp_path, layout, message):
    top = tmp_path / "data"
    for k, name in enumerate(layout):
        _png(top / name, (k * 40,) * 3)
    if any(v is not None for v in layout.values()):
        (top / "dataset.json").write_text(json.dumps({"labels": [[n, v] for n, v in layout.items()]}))
    data = load_data(open_source(str(top)), 8)
    with pytest.raises(DataError, match=message):
        check_labels(data)


def test_bad_labels_file_leaves_an_unconditional_run_alone(tmp_path):
    top = tmp_path / "data"
    _png(top / "x.png", (0, 0, 0))
    (top / "dataset.json").write_text("{not json")
    data = load_data(open_source(str(top)), 8)
    assert data.count == 1 and data.skipped == 0
    with pytest.raises(DataError, match="dataset.json: "):
        check_labels(data)
