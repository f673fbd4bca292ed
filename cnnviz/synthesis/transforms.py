"""Transforms: random, differentiable changes of the image before each forward pass, drawn from a
``torch.Generator`` so a seed fixes the result."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Transform = Callable[[Tensor, torch.Generator], Tensor]


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=generator, device=generator.device))


def jitter(pixels: int) -> Transform:
    """Shift the image by up to ``pixels`` in x and y, wrapping around (Yosinski et al. 2015)."""
    if pixels < 0:
        raise ValueError("Jitter must be a number of pixels >= 0.")

    def fn(x: Tensor, generator: torch.Generator) -> Tensor:
        if pixels == 0:
            return x
        # one draw of both shifts: the same numbers as two draws of one
        dy, dx = torch.randint(-pixels, pixels + 1, (2,), generator=generator, device=generator.device).tolist()
        return torch.roll(x, shifts=(dy, dx), dims=(2, 3))

    return fn


def random_scale(scales: Sequence[float]) -> Transform:
    """Zoom by a random factor of ``scales``, keeping the size (crop, or reflect-pad)."""

    def fn(x: Tensor, generator: torch.Generator) -> Tensor:
        s = float(scales[_randint(generator, 0, len(scales) - 1)])
        h, w = x.shape[2:]
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        if (nh, nw) == (h, w):
            return x
        y = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        if nh >= h:
            top, left = (nh - h) // 2, (nw - w) // 2
            return y[:, :, top : top + h, left : left + w]
        pt, pl = (h - nh) // 2, (w - nw) // 2
        return F.pad(y, (pl, w - nw - pl, pt, h - nh - pt), mode="replicate")

    return fn


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order."""

    def fn(x: Tensor, generator: torch.Generator) -> Tensor:
        for t in transforms:
            x = t(x, generator)
        return x

    return fn
