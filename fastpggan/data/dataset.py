"""Training images: where they come from, decoding them once, per-resolution ``uint8`` caches.

A source is the built-in faces, a folder (searched recursively; hidden files skipped) or a
``.zip``. :func:`load_data` decodes every file once at the target resolution ``R`` and keeps one
``uint8`` ``[N, r, r, 3]`` array per resolution ``r = R, R/2, ..., 4`` (each level a 2x2 area
average of the one above, as the authors' dataset tool does). With a ``cache_dir`` the arrays are
``.npy`` files under a folder named by a hash of the source (file names, sizes, modification
times), memory-mapped on later runs so a restart does not decode again.

Labels (for conditional training) travel with the images, into the cache: one class index per
decoded image (``-1``: none) and the class names. Where they come from: the built-in faces' hair
colour (known by construction: :data:`fastpggan.data.faces.HAIR_NAMES`); a labels file,
``dataset.json`` at the top of the folder or zip, ``{"labels": [["rel/path.png", 3], ...]}`` (as
stylegan2-ada-pytorch's dataset tool writes it) with optional ``"class_names": ["cat", ...]``;
else the subfolder convention, ``DIR/<class>/**/*.png`` (as torchvision's ``ImageFolder``): the
class is the first folder of the path, classes in sorted order. An unconditional run ignores
them; :func:`check_labels` says whether a conditional one can use them.

Files that cannot be decoded are skipped, counted and reported once; so are links that point
nowhere, link loops and entries that cannot be read (found while listing the folder), folders
that cannot be listed (reported as folders), members of a zip whose name an earlier member
already has (the first of each name is used; ``zipfile`` alone would give the last), and
images smaller than ``R`` (they are upscaled). Every name in a message is printable on one
line (:func:`fastpggan.console.one_line`) whatever the terminal's encoding.

Every cache carries a check of its contents, made when it is built: ``meta.json`` records each
``.npy`` file's size and a CRC-32 of every :data:`CHECK_BLOCK` bytes of it (header included).
Opening a cache verifies all of it before anything reads an image: ``meta.json`` parses, each
file has its size and a ``.npy`` header of the right shape, and every block matches its CRC
(:func:`verify_cache`; the cost is in the README). A damaged cache is rebuilt from the source,
with a warning; when the source can no longer rebuild it (no readable image left),
:class:`DataError`. CRC-32 finds accidental damage (a truncated or zeroed file, a bad sector,
a partial copy); it is not a defence against someone who rewrites the cache on purpose.

Cache folders: building one writes ``.KEY.tmp-HOST-PID`` and renames it to ``KEY`` when complete.
A build interrupted by a crash leaves its temp folder; the next :func:`load_data` on that cache
folder removes temps of processes of this machine that no longer run. When a source's files
change its key changes: the new cache is built beside the old one, and the older caches of the
same source and resolution (the same folder or zip path, or the same built-in face set) are
then removed as superseded. Caches of other sources in a shared ``--cache-dir`` stay.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import zlib
from concurrent.futures import ThreadPoolExecutor
import hashlib
import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastpggan.atomic import HOST, DiskFullError, clean_temp_files, is_disk_full
from fastpggan.console import one_line
from fastpggan.errors import ignore_stop_signals, stop_signals_blocked
from fastpggan.data.holdout import rows
from fastpggan.data.faces import FACES_VERSION, HAIR_NAMES, face_array, hair_class
from fastpggan.data.images import UnreadableImage, halve, open_image, to_square_array

# Bump when decoding or the cache layout changes, so older caches are not reused.
# 2: meta.json carries the arrays' rows, sizes and block checksums; EXIF orientation applied;
# labels and class names in the cache.
CACHE_VERSION = 2
FACES = "faces"
LABELS_FILE = "dataset.json"
LABELS_NPY = "labels.npy"  # in a cache: one class index per image, -1 for none
# A CRC-32 per this many bytes of each cache file: small enough that blocks are checked in
# parallel, large enough that meta.json stays small (~800 entries for a 13 GB cache).
CHECK_BLOCK = 1 << 24


class DataError(ValueError):
    """The data path cannot be used (missing, empty, no decodable image); one-line message."""


class CacheDamaged(Exception):
    """A cache folder whose files do not match the check recorded when it was built; the
    message is one line naming the file and what is wrong."""


@dataclass(frozen=True)
class Source:
    """Where images come from. ``kind`` is ``"faces"``, ``"folder"`` or ``"zip"``.

    ``names``: file names relative to ``path`` (folder/zip), sorted; for faces, ``count`` faces
    drawn from set ``seed``. ``broken``: ``(name, reason)`` of folder entries that could not be
    listed as files (links pointing nowhere, link loops, no permission), skipped and counted
    with the unreadable files. ``unlisted``: ``(name, reason)`` of folders that could not be
    listed. ``duplicates``: names of zip members skipped because an earlier member has the
    same name (once per skipped member).
    """

    kind: str
    path: str = ""
    names: tuple[str, ...] = ()
    count: int = 0
    seed: int = 0
    _stamps: tuple = field(default=(), repr=False, compare=False)
    broken: tuple[tuple[str, str], ...] = ()
    unlisted: tuple[tuple[str, str], ...] = ()
    duplicates: tuple[str, ...] = ()
    # One class index per name (-1: no label), the class names, where they came from
    # ("faces", "dataset.json", "folders" or "" for none) and, for a labels file that cannot be
    # used, why (said only when a conditional run asks for the labels).
    labels: tuple[int, ...] = ()
    class_names: tuple[str, ...] = ()
    label_source: str = ""
    label_error: str = ""

    def __len__(self) -> int:
        return self.count if self.kind == FACES else len(self.names)

    def describe(self) -> str:
        if self.kind == FACES:
            return f"built-in faces ({self.count}, seed {self.seed})"
        return self.path

    def fingerprint(self, resolution: int) -> str:
        """Hash naming the cache: changes when any file is added, removed or modified."""
        h = hashlib.sha256()
        h.update(json.dumps([CACHE_VERSION, resolution, self.kind, self.path]).encode())
        if self.kind == FACES:
            h.update(json.dumps([FACES_VERSION, self.count, self.seed]).encode())
        for name, stamp in zip(self.names, self._stamps):
            h.update(json.dumps([name, stamp]).encode())
        for name, _ in self.broken:
            h.update(json.dumps(["broken", name]).encode())
        for name, _ in self.unlisted:
            h.update(json.dumps(["unlisted", name]).encode())
        for name in self.duplicates:
            h.update(json.dumps(["duplicate", name]).encode())
        if self.label_source and self.label_source != FACES:
            h.update(json.dumps([self.label_source, self.labels, self.class_names, self.label_error]).encode())
        return h.hexdigest()[:20]

    def label_of(self, i: int) -> int:
        """Entry ``i``'s class index, ``-1`` when it has none."""
        if self.kind == FACES:
            return hair_class(i, self.seed)
        return self.labels[i] if self.labels else -1

    def identity(self) -> list:
        """What stays the same when the files change: which cached arrays a newer cache of
        the same source supersedes."""
        if self.kind == FACES:
            return [self.kind, self.count, self.seed]
        return [self.kind, self.path]


def _is_hidden(rel: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in Path(rel).parts)


def open_source(data: str | None, num_faces: int = 10000, faces_seed: int = 0) -> Source:
    """Resolve ``--data``: ``None`` or ``"faces"`` is the built-in faces; else a folder or zip.

    ``DataError`` when the path is missing, not a folder or zip, or holds no files.
    """
    if data is None or data == FACES:
        if num_faces <= 0:
            raise DataError(f"the number of built-in faces must be positive, got {num_faces}")
        return Source(FACES, count=num_faces, seed=faces_seed, class_names=HAIR_NAMES, label_source=FACES)
    p = Path(data).expanduser()
    if not p.exists():
        raise DataError(f"data path {data!r} does not exist")
    if p.is_dir():
        found, broken, unlisted = _walk_folder(p)
        if not found and not broken and not unlisted:
            raise DataError(f"data folder {one_line(data)!r} holds no files")
        text = None
        if any(n == LABELS_FILE for n, _ in found):
            try:
                text = (p / LABELS_FILE).read_bytes()
            except OSError as e:
                text = e
        found = [(n, st) for n, st in found if n != LABELS_FILE]
        names = tuple(n for n, _ in found)
        return Source(
            "folder", str(p.resolve()), names,
            _stamps=tuple(st for _, st in found), broken=tuple(broken), unlisted=tuple(unlisted),
            **_labels_of(names, text),
        )
    if p.suffix.lower() == ".zip":
        text = None
        try:
            with zipfile.ZipFile(p) as z:
                infos = [i for i in z.infolist() if not i.is_dir() and not _is_hidden(i.filename)]
                if any(i.filename == LABELS_FILE for i in infos):
                    try:
                        text = z.read(LABELS_FILE)
                    except (zipfile.BadZipFile, OSError) as e:
                        text = e
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"data zip {data!r} cannot be read: {e}") from None
        # stable: members of one name keep the archive's order
        infos = sorted((i for i in infos if i.filename != LABELS_FILE), key=lambda i: i.filename)
        if not infos:
            raise DataError(f"data zip {data!r} holds no files")
        first = [i for k, i in enumerate(infos) if k == 0 or i.filename != infos[k - 1].filename]
        duplicates = tuple(i.filename for k, i in enumerate(infos) if k and i.filename == infos[k - 1].filename)
        names = tuple(i.filename for i in first)
        return Source(
            "zip",
            str(p.resolve()),
            names,
            _stamps=tuple((i.file_size, i.CRC, i.date_time) for i in first),
            duplicates=duplicates,
            **_labels_of(names, text),
        )
    raise DataError(f"data path {data!r} is neither a folder nor a .zip file")


def _labels_of(names: tuple[str, ...], labels_file: bytes | OSError | None) -> dict:
    """The label fields of a folder's or zip's :class:`Source`: from the labels file's contents
    when there is one (``labels_file``; an ``OSError`` when it could not be read), else from the
    subfolder convention (images at the top level have no label; no subfolders: no labels)."""
    if labels_file is None:
        classes = sorted({n.split("/", 1)[0] for n in names if "/" in n})
        if not classes:
            return {}
        index = {c: k for k, c in enumerate(classes)}
        labels = tuple(index[n.split("/", 1)[0]] if "/" in n else -1 for n in names)
        return {"labels": labels, "class_names": tuple(classes), "label_source": "folders"}
    out = {"label_source": LABELS_FILE, "labels": tuple(-1 for _ in names)}
    try:
        if isinstance(labels_file, OSError):
            raise ValueError(f"cannot be read: {labels_file.strerror or labels_file}")
        doc = json.loads(labels_file.decode("utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("labels"), list):
            raise ValueError('needs {"labels": [["relative/path.png", class index], ...]}')
        given: dict[str, int] = {}
        for entry in doc["labels"]:
            if (not isinstance(entry, list) or len(entry) != 2 or not isinstance(entry[0], str)
                    or not isinstance(entry[1], int) or isinstance(entry[1], bool) or entry[1] < 0):
                raise ValueError(f"each label must be [\"path\", class index >= 0], got {str(entry)[:60]}")
            given[entry[0].replace("\\", "/")] = entry[1]
        class_names = doc.get("class_names")
        top = max(given.values(), default=-1) + 1
        if class_names is None:
            class_names = [str(k) for k in range(top)]
        elif (not isinstance(class_names, list) or not all(isinstance(c, str) and c for c in class_names)
              or len(set(class_names)) != len(class_names)):
            raise ValueError('"class_names" must be a list of distinct, non-empty names')
        elif top > len(class_names):
            raise ValueError(f"class index {top - 1} but only {len(class_names)} class names")
    except (ValueError, UnicodeDecodeError) as e:
        return {**out, "label_error": f"{LABELS_FILE}: {str(e).splitlines()[0][:200]}"}
    out["labels"] = tuple(given.get(n, -1) for n in names)
    out["class_names"] = tuple(class_names)
    return out


def _walk_folder(
    top: Path,
) -> tuple[list[tuple[str, tuple[int, int]]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Files under ``top`` (links followed, hidden entries skipped), sorted by name, each with
    ``(size, mtime_ns)``; the entries that are not usable files, with the reason; and the
    folders that cannot be listed, with the reason. A folder reached twice (a link loop, or
    two links to one folder) is listed once."""
    found: list[tuple[str, tuple[int, int]]] = []
    broken: list[tuple[str, str]] = []
    unlisted: list[tuple[str, str]] = []
    seen: set[tuple[int, int]] = set()
    # Breadth first, real folders before links to folders: a folder reached twice keeps the
    # name of its shortest, real path.
    queue = collections.deque([(top, "")])
    while queue:
        folder, rel = queue.popleft()
        try:
            st = folder.stat()
            key = (st.st_dev, st.st_ino)
            if key in seen:
                broken.append((rel, "folder already listed (a link loop, or a second link to it)"))
                continue
            seen.add(key)
            entries = sorted(os.scandir(folder), key=lambda e: (e.is_symlink(), e.name))
        except OSError as e:
            unlisted.append((rel or ".", _os_reason(e)))
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.name == "__MACOSX":
                continue
            name = f"{rel}/{entry.name}" if rel else entry.name
            try:
                st = entry.stat()  # follows links: a dangling link or a loop raises here
            except OSError as e:
                broken.append((name, _os_reason(e)))
                continue
            if entry.is_dir():
                queue.append((Path(entry.path), name))
            elif entry.is_file():
                found.append((name, (st.st_size, st.st_mtime_ns)))
            else:
                broken.append((name, "not a regular file"))
    found.sort()
    broken.sort()
    unlisted.sort()
    return found, broken, unlisted


def _os_reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "link loop"
    if e.errno == errno.ENOENT:
        return "link to nothing (its target does not exist)"
    return f"{type(e).__name__}: {e.strerror or e}"


class _Reader:
    """Reads the raw bytes of entry ``i``; opens the zip lazily once per process (workers fork)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._zip: zipfile.ZipFile | None = None
        self._first: dict[str, zipfile.ZipInfo] = {}  # each name's first member
        self._pid = -1

    def read(self, i: int) -> bytes:
        name = self.source.names[i]
        if self.source.kind == "zip":
            if self._zip is None or self._pid != os.getpid():
                self._zip = zipfile.ZipFile(self.source.path)
                self._pid = os.getpid()
                self._first = {}
                for info in self._zip.infolist():
                    self._first.setdefault(info.filename, info)
            return self._zip.read(self._first[name])
        with open(os.path.join(self.source.path, name), "rb") as f:
            return f.read()


def count_image_headers(source: Source) -> int:
    """How many entries PIL recognises as images from their header (cheap: no full decode)."""
    if source.kind == FACES:
        return len(source)
    reader, n = _Reader(source), 0
    for i in range(len(source)):
        try:
            with Image.open(io.BytesIO(reader.read(i))):
                n += 1
        except Exception:
            pass
    return n


class _Decode(torch.utils.data.Dataset):
    """Item ``i`` -> ``(i, uint8 [R, R, 3] or None, smaller than R?, error message, label)``."""

    def __init__(self, source: Source, resolution: int) -> None:
        self.source, self.resolution = source, resolution
        self.reader = _Reader(source)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, bool, str, int]:
        label = self.source.label_of(i)
        if self.source.kind == FACES:
            return i, face_array(i, self.resolution, self.source.seed), False, "", label
        try:
            img = open_image(self.reader.read(i))
            small = min(img.size) < self.resolution
            return i, to_square_array(img, self.resolution), small, "", label
        except (UnreadableImage, OSError, ValueError) as e:
            return i, None, False, str(e).splitlines()[0][:200] if str(e) else type(e).__name__, label


def _identity(x):  # module level: picklable for DataLoader workers
    return x


@dataclass
class ImageData:
    """Decoded images: ``levels[r]`` is ``uint8`` ``[count, r, r, 3]`` for ``r = R .. 4``.

    ``skipped``: files that were not decodable images (``skipped_examples``: a few
    ``(name, reason)``); ``small``: images smaller than ``R`` (upscaled). ``labels``: int64
    ``[count]``, each image's class index into ``class_names`` or ``-1`` (none); ``unlabelled``:
    a few names of images without one.
    """

    source: Source
    resolution: int
    levels: dict[int, np.ndarray]
    skipped: int = 0
    skipped_examples: list[tuple[str, str]] = field(default_factory=list)
    small: int = 0
    notes: list[str] = field(default_factory=list)  # e.g. superseded caches removed
    unlisted: int = 0  # folders that could not be listed (their files are not counted)
    unlisted_examples: list[tuple[str, str]] = field(default_factory=list)
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    unlabelled: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return self.levels[self.resolution].shape[0]

    def take(self, index: np.ndarray) -> ImageData:
        """The images ``index`` (sorted int64, e.g. :func:`fastpggan.data.split_holdout`'s) as an
        :class:`ImageData` of their own, their levels read through the original arrays (no
        copy: :func:`fastpggan.data.holdout.rows`) and their labels with them."""
        labels = None if self.labels is None else np.asarray(self.labels)[index]
        return dataclasses.replace(self, levels={r: rows(a, index) for r, a in self.levels.items()},
                                   labels=labels)

    def class_counts(self) -> list[int]:
        """Images per class, in ``class_names`` order."""
        labels = self.labels if self.labels is not None else np.full(self.count, -1)
        return np.bincount(labels[labels >= 0], minlength=len(self.class_names)).tolist()

    def report(self) -> list[str]:
        """The lines to show once: what was loaded, what was skipped, what was too small."""
        lines = [f"data: {self.count} images from {one_line(self.source.describe())} at {self.resolution}px"]
        if self.skipped:
            ex = "; ".join(f"{one_line(n)}: {one_line(r)}" for n, r in self.skipped_examples)
            lines.append(f"warning: skipped {self.skipped} files that are not readable images (e.g. {ex})")
        if self.unlisted:
            ex = "; ".join(f"{one_line(n)}: {one_line(r)}" for n, r in self.unlisted_examples)
            lines.append(f"warning: skipped {self.unlisted} folder(s) that cannot be listed, with "
                         f"everything in them (e.g. {ex})")
        if self.source.duplicates:
            names = collections.Counter(self.source.duplicates)
            ex = "; ".join(f"{one_line(n)} {k + 1} times" for n, k in names.most_common(3))
            lines.append(f"warning: skipped {len(self.source.duplicates)} zip members whose name an "
                         f"earlier member already has (only the first of each name is used; e.g. {ex})")
        if self.small:
            lines.append(
                f"warning: {self.small} images are smaller than {self.resolution}px and were upscaled"
            )
        return lines + self.notes


def _levels(resolution: int) -> list[int]:
    return [resolution >> k for k in range(int(np.log2(resolution)) - 1)]  # R, R/2, ..., 4


def _preallocate(path: Path) -> None:
    """Reserve the disk blocks of a new ``.npy`` file, so that a full disk shows as an error
    here rather than as a crash (SIGBUS) when its memory map is written."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if e.errno in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
                    return  # the filesystem cannot reserve blocks: writes go unchecked
                raise
    finally:
        os.close(fd)


def _remove_superseded(source: Source, resolution: int, keep: Path) -> list[tuple[Path, int]]:
    """Remove complete caches beside ``keep`` built from an older state of the same source
    at the same resolution (see module doc). Returns what was removed, with its size."""
    removed: list[tuple[Path, int]] = []
    mine = [source.identity(), resolution]
    for other in keep.parent.iterdir():
        if other == keep or not (other / "meta.json").is_file():
            continue
        try:
            meta = json.loads((other / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if [meta.get("source"), meta.get("resolution")] == mine:
            size = _folder_bytes(other)
            shutil.rmtree(other, ignore_errors=True)
            removed.append((other, size))
    return removed


def _folder_bytes(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        try:
            total += p.stat().st_size
        except OSError:
            pass
    return total


def _read_block(fd: int, offset: int, length: int) -> int:
    """CRC-32 of ``length`` bytes of ``fd`` from ``offset`` (fewer at the end of the file)."""
    return zlib.crc32(os.pread(fd, length, offset))


def _block_crcs(path: Path, size: int) -> list[int]:
    """CRC-32 of each :data:`CHECK_BLOCK` bytes of the first ``size`` bytes of ``path``, computed
    on a few threads (``zlib.crc32`` releases the GIL, so blocks are hashed in parallel)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        offsets = range(0, size, CHECK_BLOCK)
        threads = max(1, min(4, os.cpu_count() or 1, len(offsets)))
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda o: _read_block(fd, o, min(CHECK_BLOCK, size - o)), offsets))
    finally:
        os.close(fd)


def file_check(path: str | os.PathLike) -> dict:
    """What ``meta.json`` records of a cache file: ``{"size": bytes, "block": CHECK_BLOCK,
    "crc32": [one per block]}``."""
    path = Path(path)
    size = path.stat().st_size
    return {"size": size, "block": CHECK_BLOCK, "crc32": _block_crcs(path, size)}


def _check_header(path: Path, rows: int, r: int, size: int) -> None:
    """``CacheDamaged`` unless ``path`` starts with a ``.npy`` header of ``uint8 [rows, r, r, 3]``
    whose data ends exactly at ``size`` bytes."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            offset = f.tell()
    except (ValueError, OSError, SyntaxError) as e:
        raise CacheDamaged(f"{path.name} has no valid .npy header ({str(e).splitlines()[0][:80]})") from None
    if tuple(shape) != (rows, r, r, 3) or fortran or dtype != np.uint8:
        raise CacheDamaged(f"{path.name}'s header says {dtype} {list(shape)}, not uint8 [{rows}, {r}, {r}, 3]")
    if offset + rows * r * r * 3 != size:
        raise CacheDamaged(f"{path.name}'s header does not match its size")


def _cache_files(resolution: int) -> list[str]:
    """The files of a cache at ``resolution`` that ``meta.json`` holds a check of."""
    return [f"res{r}.npy" for r in _levels(resolution)] + [LABELS_NPY]


def verify_cache(folder: str | os.PathLike, resolution: int, contents: bool = True) -> dict:
    """Check cache ``folder`` against its ``meta.json`` (see module doc) and return the meta.
    ``contents=False`` checks sizes and headers only (right after a build, whose checksums were
    just read from the files). ``CacheDamaged`` (one line) on the first problem found."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        rows, count, checks = int(meta["rows"]), int(meta["count"]), meta["checks"]
        missing = [k for k in ("skipped", "skipped_examples", "small") if k not in meta]
        if missing:
            raise KeyError(missing[0])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CacheDamaged(f"meta.json cannot be read ({type(e).__name__}: {str(e)[:80]})") from None
    if not 0 < count <= rows:
        raise CacheDamaged(f"meta.json counts {count} images in arrays of {rows}")
    for name in _cache_files(resolution):
        path, want = folder / name, checks.get(name) if isinstance(checks, dict) else None
        if not isinstance(want, dict) or want.get("block") != CHECK_BLOCK:
            raise CacheDamaged(f"meta.json holds no check of {name}")
        try:
            size = path.stat().st_size
        except OSError as e:
            raise CacheDamaged(f"{name} cannot be read ({e.strerror or e})") from None
        if size != want.get("size"):
            raise CacheDamaged(f"{name} is {size} bytes, not the {want.get('size')} it was written with")
        if name != LABELS_NPY:  # labels: count entries of int64, checked by their CRCs
            _check_header(path, rows, int(name[3:-4]), size)
        if contents:
            got = _block_crcs(path, size)
            bad = [i for i, (a, b) in enumerate(zip(got, want.get("crc32", []))) if a != b]
            if bad or len(got) != len(want.get("crc32", [])):
                first = bad[0] if bad else min(len(got), len(want.get("crc32", [])))
                raise CacheDamaged(f"{name}'s contents do not match their checksum (from byte "
                                   f"{first * CHECK_BLOCK}, {len(bad) or 1} of {len(got)} blocks)")
    return meta


def load_data(
    source: Source,
    resolution: int,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
    verify_contents: bool = True,
) -> ImageData:
    """Decode ``source`` once at ``resolution`` into per-resolution arrays (see module doc).

    ``workers`` DataLoader processes decode in parallel. ``verify_contents=False`` checks an
    existing cache's sizes and headers only: for a process whose cache another one has just
    verified (the ranks after rank 0 under torchrun), so that the hashing is not repeated per
    process. ``DataError`` if nothing decodes;
    :class:`fastpggan.atomic.DiskFullError` when the disk fills up while the cache is written
    (nothing partial is left).
    """
    key = source.fingerprint(resolution)
    final = Path(cache_dir) / key if cache_dir is not None else None
    if final is not None:
        clean_temp_files(final.parent, owned=False)
    damaged = None
    if final is not None and (final / "meta.json").exists():
        try:
            return _open_cache(source, resolution, final, contents=verify_contents)
        except CacheDamaged as e:
            damaged = f"the image cache {one_line(str(final))} is damaged ({one_line(str(e))})"
    if source.kind != FACES and count_image_headers(source) == 0:
        if damaged:  # the data that could rebuild the cache is gone too
            raise DataError(f"{damaged}, and it cannot be rebuilt: data path "
                            f"{one_line(source.path)!r} holds no readable images now")
        raise DataError(f"data path {one_line(source.path)!r} holds no readable images")
    if damaged:
        shutil.rmtree(final, ignore_errors=True)  # the rebuilt cache takes its name
    try:
        data = _build(source, resolution, final, workers, progress)
    except OSError as e:
        if not is_disk_full(e):
            if final is None:
                raise
            # a read-only filesystem, a file where the cache folder should be, no permission:
            # the cache folder cannot be used (the partial build is already removed)
            raise DataError(f"cannot write the image cache in {one_line(str(final.parent))!r}: "
                            f"{e.strerror or type(e).__name__}; choose another --cache-dir") from None
        need = sum(len(source) * r * r * 3 for r in _levels(resolution))
        raise DiskFullError(final if final is not None else Path(key),
                            f"the image cache ({need / 2**20:.0f} MiB; or choose another --cache-dir)") from None
    if damaged:
        data.notes.append(f"warning: {damaged}; rebuilt it from {one_line(source.describe())}")
    if final is not None:
        gone = _remove_superseded(source, resolution, final)
        if gone:
            mib = sum(size for _, size in gone) / 2**20
            data.notes.append(
                f"note: removed {len(gone)} superseded cache folder(s) of this data in "
                f"{one_line(str(final.parent))} ({mib:.0f} MiB; the files changed since they were built)"
            )
    return data


def _build(
    source: Source,
    resolution: int,
    final: Path | None,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> ImageData:
    n = len(source)
    tmp = None
    try:
        if final is not None:
            tmp = final.parent / f".{final.name}.tmp-{HOST}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            arrays = {}
            for r in _levels(resolution):
                arrays[r] = np.lib.format.open_memmap(tmp / f"res{r}.npy", "w+", np.uint8, (n, r, r, 3))
                _preallocate(tmp / f"res{r}.npy")
        else:
            arrays = {r: np.empty((n, r, r, 3), np.uint8) for r in _levels(resolution)}
        loader = torch.utils.data.DataLoader(
            _Decode(source, resolution), batch_size=None, num_workers=workers, collate_fn=_identity,
            worker_init_fn=ignore_stop_signals,
        )
        good = small = 0
        labels = np.full(n, -1, np.int64)
        unlabelled: list[str] = []
        skipped = len(source.broken)  # found while listing the folder: counted like unreadable files
        examples: list[tuple[str, str]] = [(one_line(nm), r) for nm, r in source.broken[:3]]
        unlisted = [(one_line(nm), r) for nm, r in source.unlisted[:3]]
        with stop_signals_blocked():  # the workers start ignoring them (ignore_stop_signals)
            decoded = iter(loader)
        for done, (i, a, is_small, err, label) in enumerate(decoded, 1):
            if a is None:
                skipped += 1
                if len(examples) < 3:
                    examples.append((one_line(source.names[i]), one_line(err)))
            else:
                small += is_small
                labels[good] = label
                if label < 0 and len(unlabelled) < 3:
                    unlabelled.append(one_line(source.names[i]))
                for r in _levels(resolution):
                    arrays[r][good] = a
                    a = halve(a)
                good += 1
            if progress is not None:
                progress(done, n)
        if good == 0:
            raise DataError(f"data path {one_line(source.describe())!r} holds no readable images")
        meta = {"count": good, "rows": n, "skipped": skipped, "skipped_examples": examples, "small": small,
                "unlisted": len(source.unlisted), "unlisted_examples": unlisted,
                "source": source.identity(), "resolution": resolution,
                "class_names": list(source.class_names), "unlabelled": unlabelled}
        if final is None:
            levels = {r: a[:good] for r, a in arrays.items()}
            return ImageData(source, resolution, levels, skipped, examples, small,
                             unlisted=len(source.unlisted), unlisted_examples=unlisted,
                             labels=labels[:good], class_names=source.class_names, unlabelled=unlabelled)
        for a in arrays.values():
            a.flush()
        del arrays
        np.save(tmp / LABELS_NPY, labels[:good])
        # The check is read back from the files as written, so it covers what later runs read.
        meta["checks"] = {name: file_check(tmp / name) for name in _cache_files(resolution)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        fd = os.open(tmp / "meta.json", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, final)  # atomic: a cache folder is complete or absent
        except OSError:  # another process finished the same cache first
            pass
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return _open_cache(source, resolution, final, contents=False)


def _open_cache(source: Source, resolution: int, folder: Path, contents: bool = True) -> ImageData:
    """The cached arrays of ``folder``, memory-mapped once :func:`verify_cache` passed
    (``CacheDamaged`` else)."""
    meta = verify_cache(folder, resolution, contents)
    levels = {
        r: np.load(folder / f"res{r}.npy", mmap_mode="r")[: meta["count"]] for r in _levels(resolution)
    }
    examples = [tuple(e) for e in meta["skipped_examples"]]
    return ImageData(source, resolution, levels, meta["skipped"], examples, meta["small"],
                     unlisted=int(meta.get("unlisted", 0)),
                     unlisted_examples=[tuple(e) for e in meta.get("unlisted_examples", [])],
                     labels=np.load(folder / LABELS_NPY), class_names=tuple(meta["class_names"]),
                     unlabelled=list(meta["unlabelled"]))


def check_labels(data: ImageData) -> None:
    """Whether a conditional run can train on ``data``'s labels: ``DataError`` (one line)
    when a labels file cannot be used, some images have no label, a class has no images, or
    there is only one class."""
    source = data.source
    if source.label_error:
        raise DataError(source.label_error)
    if not data.class_names or data.labels is None:
        raise DataError(
            f"{one_line(source.describe())} has no labels: put each class's images in its own "
            f"subfolder (DIR/<class>/...), or add a {LABELS_FILE} with "
            '{"labels": [["relative/path.png", class index], ...]}'
        )
    missing = int((data.labels < 0).sum())
    if missing:
        ex = ", ".join(data.unlabelled)
        raise DataError(f"{missing} of {data.count} images have no label (e.g. {ex}); "
                        f"label them ({source.label_source}) or leave them out")
    counts = data.class_counts()
    empty = [name for name, c in zip(data.class_names, counts) if c == 0]
    if empty:
        raise DataError(f"{len(empty)} class(es) have no images: {', '.join(one_line(e) for e in empty[:5])}; "
                        "remove them or add images")
    if len(counts) < 2:
        raise DataError(f"only one class ({one_line(data.class_names[0])}): conditional training needs two or more")
