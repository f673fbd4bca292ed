"""Training data as tensors: real MNIST digits, scikit-learn's digits, scikit-image's faces, or any
``ImageDataset`` (an uploaded zip or folder, torchvision's datasets).

A ``TrainData`` keeps the pixels in [0, 1] (augmentations work on pixels) with the normalisation
measured on its training split; ``TrainData.preprocessing`` is the matching image pipeline, so a
network trained on it is used by every page like any model of the zoo.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import Tensor

from ..data import ImageDataset
from ..preprocessing import Preprocessing


@dataclass
class TrainData:
    """A training and a validation split as tensors.

    Attributes:
        name: for captions, e.g. "MNIST (4,000 train / 1,000 validation)".
        x_train, x_val: (N, C, H, W) float32 pixels in [0, 1].
        y_train, y_val: (N,) int64 class indices.
        class_names: one name per class.
        mean, std: per-channel statistics of ``x_train`` (the normalisation).
        invert_light_background: whether the pipeline inverts light-background pictures (digits are
            light on dark).
        pad: black pixels the pipeline adds on every side after resizing to ``size - 2 * pad`` (MNIST's
            28×28 digits padded to 32×32, as LeNet-5 did).
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    invert_light_background: bool = False
    pad: int = 0

    def __post_init__(self) -> None:
        if not self.mean:
            x = self.x_train.double()
            self.mean = tuple(float(v) for v in x.mean(dim=(0, 2, 3)))
            self.std = tuple(max(float(v), 1e-3) for v in x.std(dim=(0, 2, 3)))
        if len(self.x_train) == 0 or len(self.x_val) == 0:
            raise ValueError("The dataset needs at least one training and one validation image.")
        if len(self.class_names) < 2:
            raise ValueError("Training a classifier needs at least two classes (one folder per class).")

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def size(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def preprocessing(self) -> Preprocessing:
        """The image pipeline a network trained on this data expects."""
        inner = self.size - 2 * self.pad
        return Preprocessing(resize=inner, crop=inner, mean=self.mean, std=self.std,
                             invert_light_background=self.invert_light_background, pad=self.pad)

    def normalize(self, x: Tensor) -> Tensor:
        """Pixels (N, C, H, W) in [0, 1] -> network input."""
        return self.preprocessing.normalize(x)

    def subset(self, train: int | None = None, val: int | None = None, seed: int = 0) -> "TrainData":
        """A seeded random subset (same normalisation), e.g. for short search trials."""
        generator = torch.Generator().manual_seed(seed)

        def pick(n_all: int, n: int | None) -> Tensor:
            if n is None or n >= n_all:
                return torch.arange(n_all)
            return torch.randperm(n_all, generator=generator)[:n].sort().values

        ti, vi = pick(len(self.y_train), train), pick(len(self.y_val), val)
        return TrainData(f"{self.name}, subset", self.x_train[ti], self.y_train[ti], self.x_val[vi], self.y_val[vi],
                         self.class_names, self.mean, self.std, self.invert_light_background, self.pad)


def _frame(x: Tensor, size: int) -> tuple[Tensor, int]:
    """28×28 digits (N, 1, 28, 28) padded with black to ``size`` (or resized when smaller); the padding."""
    pad = (size - 28) // 2
    if pad > 0:
        return F.pad(x, [pad, size - 28 - pad, pad, size - 28 - pad]), pad
    if size != 28:
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False), 0
    return x, 0


def mnist_data(size: int = 32, train_limit: int | None = None, seed: int = 0) -> TrainData:
    """The real MNIST digits (4,000 train / 1,000 held out, ``cnnviz.data.mnist_split``), 28×28 padded
    with black to ``size`` (32 by default, like the bundled small CNN and LeNet-5).

    Raises:
        SourceError: when the digits are not fetched yet (the message says how).
    """
    from ..data import mnist_arrays, mnist_split

    pixels, labels = mnist_arrays()
    train, val = mnist_split(seed)
    x, pad = _frame(torch.from_numpy(pixels).float().div_(255.0).unsqueeze(1), size)
    y = torch.from_numpy(labels)
    if train_limit is not None and train_limit < len(train):
        train = np.sort(np.random.default_rng(seed).permutation(train)[:train_limit])
    t, v = torch.from_numpy(train), torch.from_numpy(val)
    return TrainData(f"MNIST ({len(t):,} train / {len(v):,} validation)", x[t], y[t], x[v], y[v],
                     tuple(str(d) for d in range(10)), invert_light_background=True, pad=pad)


def digits_data(size: int = 32, seed: int = 0) -> TrainData:
    """scikit-learn's 1,797 digits, framed as MNIST frames its digits (28×28) and padded to ``size``,
    with the seeded stratified 80/20 split of ``cnnviz.small_cnn.digits_split``."""
    from ..small_cnn import digits_split, load_digits_images

    images, labels = load_digits_images()
    train, val = digits_split(seed)
    x = torch.stack([TF.pil_to_tensor(im.convert("L")) for im in images]).float().div_(255.0)
    x, pad = _frame(x, size) if x.shape[-1] == 28 else (x, 0)
    y = torch.from_numpy(labels)
    t, v = torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(val))
    return TrainData(f"digits, scikit-learn ({len(t):,} train / {len(v):,} validation)", x[t], y[t], x[v], y[v],
                     tuple(str(d) for d in range(10)), invert_light_background=True, pad=pad)


def faces_dataset() -> ImageDataset:
    """scikit-image's faces-versus-not-faces set: 200 gray 25×25 crops (100 faces from LFW, then
    100 other image patches), shipped with the package (offline)."""
    from PIL import Image
    from skimage.data import lfw_subset

    pixels = (lfw_subset() * 255).round().astype(np.uint8)
    images = [Image.fromarray(p).convert("RGB") for p in pixels]
    return ImageDataset("faces vs not faces (scikit-image)", images, np.repeat([0, 1], 100), ("face", "not a face"))


def images_tensor(dataset: ImageDataset, size: int, channels: int, indices=None) -> Tensor:
    """Images of ``dataset`` resized (shorter side) and center-cropped to ``size``, as (N, C, size, size)
    pixels in [0, 1]; ``channels`` 1 converts to gray."""
    pre = Preprocessing(resize=size, crop=size, mean=(0.0,) * channels, std=(1.0,) * channels)
    indices = range(len(dataset)) if indices is None else indices
    return torch.stack([TF.pil_to_tensor(pre.view(dataset.images[int(i)])) for i in indices]).float().div_(255.0)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split with every class in both parts where it has at least two images."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
        val += idx[:k].tolist()
        train += idx[k:].tolist()
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def dataset_data(dataset: ImageDataset, size: int = 32, channels: int = 1, val_fraction: float = 0.2,
                 seed: int = 0, invert_light_background: bool | None = None) -> TrainData:
    """Any ``ImageDataset`` (an uploaded zip or folder, torchvision's datasets) as training tensors,
    with a seeded stratified validation split.

    Args:
        channels: 1 (gray) or 3 (RGB).
        invert_light_background: None decides from the data: True when most images are light on dark.

    Raises:
        ValueError: fewer than two classes or too few images to split.
    """
    if channels not in (1, 3):
        raise ValueError("Channels must be 1 (gray) or 3 (colour).")
    if len(dataset) < 4:
        raise ValueError(f"{dataset.name} has {len(dataset)} images; training needs at least 4.")
    x = images_tensor(dataset, size, channels)
    y = torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64))
    train, val = stratified_split(dataset.labels, val_fraction, seed)
    if len(val) == 0:
        raise ValueError("Every class needs at least two images so that one can be held out for validation.")
    if invert_light_background is None:
        border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=-1)
        invert_light_background = bool(channels == 1 and border.mean() < 0.5)
    t, v = torch.from_numpy(train), torch.from_numpy(val)
    return TrainData(f"{dataset.name} ({len(t):,} train / {len(v):,} validation)", x[t], y[t], x[v], y[v],
                     tuple(dataset.class_names), invert_light_background=invert_light_background)
