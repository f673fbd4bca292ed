"""Occlusion (Zeiler & Fergus, 2014), batched engine: every occluded copy runs through the whole network,
in batches, channels-last (optionally on the private bfloat16 copy with batch norms folded,
``cnnviz.folding.bf16_inference_copy``)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..folding import bf16_inference_copy, bf16_supported  # noqa: F401 (part of this module's API)


def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (int(value), int(value)) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"The occlusion {what} must be a positive number of pixels (or a pair of them).")
    return pair  # type: ignore[return-value]


def occlusion_positions(size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners of the sliding window, row by row (as Captum's Occlusion places them)."""
    (h, w), (wh, ww), (sh, sw) = size, window, stride
    return [(i, j) for i in range(0, h - wh + 1, sh) for j in range(0, w - ww + 1, sw)]


def batched_outputs(
    network: nn.Module,
    image: Tensor,
    background: Tensor,
    positions: Sequence[tuple[int, int]],
    window: tuple[int, int],
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """The network's outputs on the clean image and on every occluded copy, each copy run in full.

    The copies run in batches of ``batch_size`` under ``torch.inference_mode``, channels-last.

    Args:
        network: the classifier (not modified).
        image: (1, C, H, W) in the network's dtype.
        background: (C, H, W) values the occluded pixels take.
        positions: window corners (row, col).
        window: (height, width).
        progress: called with the number of positions done after each batch.

    Returns:
        (clean output (1, K), occluded outputs (P, K)).
    """
    image = image.contiguous(memory_format=torch.channels_last)
    outputs = []
    with torch.inference_mode():
        reference = network(image)
        for start in range(0, len(positions), batch_size):
            chunk = positions[start : start + batch_size]
            batch = image.expand(len(chunk), -1, -1, -1).clone(memory_format=torch.channels_last)
            for m, (i, j) in enumerate(chunk):
                batch[m, :, i : i + window[0], j : j + window[1]] = background[:, i : i + window[0], j : j + window[1]]
            outputs.append(network(batch))
            if progress is not None:
                progress(start + len(chunk))
    return reference, torch.cat(outputs)
