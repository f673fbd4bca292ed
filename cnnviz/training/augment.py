"""Data augmentation as small composable transforms on batches.

A transform takes ``(x, y, generator)``: images (N, C, H, W) in [0, 1], soft targets (N, K) whose
rows sum to 1, and a ``torch.Generator``, and returns new ``(x, y)`` of the same shapes. Only mixup
changes the targets. ``compose([...])`` chains them; ``augmentation(config)`` builds the chain the
training loop uses; ``apply(transform, x, labels, seed)`` runs one seeded pass (for previews and
tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Transform = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations the training loop applies, and how strongly (0 or False: off).

    Attributes:
        hflip: mirror half of the images left-right.
        crop_scale: random crop and scale: zoom by a factor in [1 - s, 1 + s] and shift by up to
            ``s`` of the image size (0.1 = ±10 %).
        color_jitter: random brightness, contrast (and saturation for colour images), each by a
            factor in [1 - j, 1 + j].
        cutout: side of a square, as a fraction of the image, set to zero at a random place
            (DeVries & Taylor, 2017).
        mixup: α of the Beta(α, α) mixing weight: each image and its target are blended with those of
            another image of the batch (Zhang et al., 2018).
    """

    hflip: bool = False
    crop_scale: float = 0.0
    color_jitter: float = 0.0
    cutout: float = 0.0
    mixup: float = 0.0

    @property
    def active(self) -> list[str]:
        """Names of the augmentations switched on, in the order they are applied."""
        return [name for name in ("hflip", "crop_scale", "color_jitter", "cutout", "mixup") if getattr(self, name)]


def hflip(p: float = 0.5) -> Transform:
    """Mirror each image left-right with probability ``p``."""

    def transform(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        flip = torch.rand(len(x), generator=generator) < p
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x), y

    return transform


def crop_scale(strength: float = 0.1) -> Transform:
    """Random zoom by a factor in [1 - s, 1 + s] and shift by up to ``s`` of the size (zero fill),
    one affine resampling (bilinear) per batch."""

    def transform(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n = len(x)
        scale = 1.0 + strength * (2 * torch.rand(n, generator=generator) - 1)
        shift = strength * 2 * (2 * torch.rand(n, 2, generator=generator) - 1)  # grid units span 2
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False), y

    return transform


def color_jitter(strength: float = 0.2) -> Transform:
    """Random brightness and contrast (and saturation with 3 channels), each a factor in
    [1 - s, 1 + s]; the result is clipped to [0, 1]."""

    def transform(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n = len(x)
        factors = 1.0 + strength * (2 * torch.rand(n, 3, 1, 1, 1, generator=generator, dtype=x.dtype) - 1)
        out = x * factors[:, 0]
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = mean + (out - mean) * factors[:, 1]
        if x.shape[1] == 3:
            gray = out.mean(dim=1, keepdim=True)
            out = gray + (out - gray) * factors[:, 2]
        return out.clamp(0.0, 1.0), y

    return transform


def cutout(fraction: float = 0.25) -> Transform:
    """Set a square of side ``fraction`` × image size to zero at a random centre in each image
    (the square may be cut by the border)."""

    def transform(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n, _, h, w = x.shape
        side = max(1, round(fraction * min(h, w)))
        cy = torch.randint(0, h, (n, 1, 1), generator=generator)
        cx = torch.randint(0, w, (n, 1, 1), generator=generator)
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        inside = ((rows - cy).abs() * 2 < side) & ((cols - cx).abs() * 2 < side)
        return x.masked_fill(inside.unsqueeze(1), 0.0), y

    return transform


def mixup(alpha: float = 0.2) -> Transform:
    """Blend each image and its target with another of the batch: λ x + (1 - λ) x', the same for the
    targets, λ ~ Beta(α, α) per image (Zhang et al., 2018). Targets stay distributions."""

    def transform(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        n = len(x)
        # torch's Beta sampler takes no generator: Beta(α, α) from two Gamma draws made with ours
        lam = _beta(alpha, n, generator).to(x.dtype)
        partner = torch.randperm(n, generator=generator)
        lam_x = lam.view(-1, 1, 1, 1)
        return lam_x * x + (1 - lam_x) * x[partner], lam.view(-1, 1) * y + (1 - lam.view(-1, 1)) * y[partner]

    return transform


def _gamma(shape: float, n: int, generator: torch.Generator) -> Tensor:
    """Gamma(shape, 1) samples (n,) by Marsaglia & Tsang (2000), from ``generator`` only."""
    boost = shape < 1.0
    k = shape + 1.0 if boost else shape
    d = k - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.empty(n, dtype=torch.float64)
    filled = 0
    while filled < n:
        m = 2 * (n - filled) + 8
        z = torch.randn(m, generator=generator, dtype=torch.float64)
        u = torch.rand(m, generator=generator, dtype=torch.float64)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (torch.log(u.clamp_min(1e-300)) < 0.5 * z**2 + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        good = (d * v)[ok][: n - filled]
        out[filled : filled + len(good)] = good
        filled += len(good)
    if boost:
        out = out * torch.rand(n, generator=generator, dtype=torch.float64) ** (1.0 / shape)
    return out


def _beta(alpha: float, n: int, generator: torch.Generator) -> Tensor:
    a, b = _gamma(alpha, n, generator), _gamma(alpha, n, generator)
    return (a / (a + b)).float()


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` one after the other."""

    def transform(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        for t in transforms:
            x, y = t(x, y, generator)
        return x, y

    return transform


def augmentation(config: AugmentConfig) -> Transform | None:
    """The chain for ``config`` (flip, crop & scale, colour jitter, cutout, mixup), or None when all are off."""
    chain: list[Transform] = []
    if config.hflip:
        chain.append(hflip())
    if config.crop_scale:
        chain.append(crop_scale(config.crop_scale))
    if config.color_jitter:
        chain.append(color_jitter(config.color_jitter))
    if config.cutout:
        chain.append(cutout(config.cutout))
    if config.mixup:
        chain.append(mixup(config.mixup))
    return compose(chain) if chain else None


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """(N,) int64 -> (N, K) float32 one-hot targets."""
    return F.one_hot(labels, num_classes).float()


def apply(transform: Transform, x: Tensor, labels: Tensor, num_classes: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """One seeded pass of ``transform``: the same seed gives the same images and targets.

    Args:
        x: (N, C, H, W) in [0, 1].
        labels: (N,) class indices.

    Returns:
        Augmented images (N, C, H, W) and soft targets (N, K).
    """
    return transform(x, one_hot(labels, num_classes), torch.Generator().manual_seed(seed))
