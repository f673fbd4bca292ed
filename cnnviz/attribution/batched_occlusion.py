"""Occlusion (Zeiler & Fergus, 2014), batched engine: every occluded copy runs through the whole network,
in batches, channels-last, optionally on a private bfloat16 copy with batch norms folded."""

from __future__ import annotations

import threading
import weakref
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .targets import Progress, Target, _check_input, private_copy, target_indices

def _pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (int(value), int(value)) if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"The occlusion {what} must be a positive number of pixels (or a pair of them).")
    return pair  # type: ignore[return-value]


def bf16_supported() -> bool:
    """True when this CPU runs bfloat16 matrix products natively (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_INFERENCE_COPIES: "weakref.WeakKeyDictionary[nn.Module, nn.Module]" = weakref.WeakKeyDictionary()
_INFERENCE_COPIES_LOCK = threading.Lock()


def bf16_inference_copy(model: nn.Module) -> nn.Module:
    """A private copy of ``model`` for fast many-image inference: batch norms folded into the
    convolutions before them (where torch.fx can trace the model), bfloat16 weights, channels-last.

    Built once per model and kept while the model lives; the shared model itself is never changed.
    Its outputs differ from the float32 model's by bfloat16 rounding only.
    """
    with _INFERENCE_COPIES_LOCK:
        fast = _INFERENCE_COPIES.get(model)
        if fast is None:
            fast = private_copy(model)
            try:
                from torch.fx.experimental.optimization import fuse

                fast = fuse(fast)
            except Exception:  # not traceable (data-dependent control flow): keep the batch norms
                pass
            fast = fast.to(torch.bfloat16).to(memory_format=torch.channels_last)
            for param in fast.parameters():
                param.requires_grad_(False)
            _INFERENCE_COPIES[model] = fast
    return fast


def occlusion_positions(size: tuple[int, int], window: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners of the sliding window, row by row (as Captum's Occlusion places them)."""
    (h, w), (wh, ww), (sh, sw) = size, window, stride
    return [(i, j) for i in range(0, h - wh + 1, sh) for j in range(0, w - ww + 1, sw)]


def occlusion(
    model: nn.Module,
    x: Tensor,
    target: Target,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    baseline: float | Tensor = 0.0,
    score: Literal["logit", "prob"] = "logit",
    precision: Literal["auto", "float32", "bfloat16"] = "auto",
    batch_size: int = 16,
    progress: Progress | None = None,
) -> Tensor:
    """Occlusion sensitivity (Zeiler & Fergus, 2014).

    For each window position, score(x) - score(x with the window set to ``baseline``) (all
    channels), averaged over the windows that cover each pixel. Windows are placed as Captum's
    ``Occlusion`` places them (top-left corners 0, stride, 2*stride, ... while the window fits);
    pixels no window covers get 0.

    Speed: the occluded copies run in batches of ``batch_size`` under ``torch.inference_mode``
    in channels-last layout; with ``precision="auto"`` on a CPU with native bfloat16, on
    ``bf16_inference_copy(model)`` (batch norms folded, bfloat16 weights; its map correlates > 0.99
    with the float32 one, see bench/). The unoccluded score is computed by the same network so
    that rounding largely cancels.

    Args:
        window: window side in pixels, or (height, width).
        stride: step between windows, or (height, width).
        baseline: value the occluded pixels get (in the normalised input space), a number or a
            tensor broadcastable to (C, H, W).
        score: "logit" (target class logit) or "prob" (its softmax probability).
        precision: "float32" for the exact map; "bfloat16" or "auto" (bfloat16 where native).
        batch_size: occluded images per forward pass.
        progress: called with the fraction done (0..1) after each batch.

    Returns:
        (N, H, W) float32 map, on the input's device.
    """
    _check_input(x)
    n, c, h, w = x.shape
    window, stride = _pair(window, "window"), _pair(stride, "stride")
    if window[0] > h or window[1] > w:
        raise ValueError(f"The occlusion window {window[0]}×{window[1]} is larger than the image ({h}×{w}).")
    if score not in ("logit", "prob"):
        raise ValueError('score must be "logit" or "prob".')
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    use_bf16 = precision == "bfloat16" or (precision == "auto" and x.device.type == "cpu" and bf16_supported())
    positions = occlusion_positions((h, w), window, stride)
    fill = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    fill = fill.expand(c, h, w) if fill.dim() <= 3 else fill
    targets = target_indices(target, n)

    network, dtype = (bf16_inference_copy(model), torch.bfloat16) if use_bf16 else (model, x.dtype)

    def scores(batch: Tensor, t: int) -> Tensor:
        output = network(batch.to(dtype)).float()
        if score == "prob":
            output = output.softmax(dim=1)
        return output[:, t]

    deltas = torch.empty(n, len(positions), device=x.device)
    total, done = n * len(positions), 0
    with torch.inference_mode():
        for k in range(n):
            image = x[k : k + 1].contiguous(memory_format=torch.channels_last)
            background = fill[k] if fill.dim() == 4 else fill
            t = int(targets[k])
            reference = scores(image, t)[0]
            for start in range(0, len(positions), batch_size):
                chunk = positions[start : start + batch_size]
                batch = image.expand(len(chunk), -1, -1, -1).clone(memory_format=torch.channels_last)
                for m, (i, j) in enumerate(chunk):
                    batch[m, :, i : i + window[0], j : j + window[1]] = background[:, i : i + window[0], j : j + window[1]]
                deltas[k, start : start + len(chunk)] = reference - scores(batch, t)
                done += len(chunk)
                if progress is not None:
                    progress(done / total)
    sums = torch.zeros(n, h, w, device=x.device)
    counts = torch.zeros(h, w, device=x.device)
    for p, (i, j) in enumerate(positions):
        sums[:, i : i + window[0], j : j + window[1]] += deltas[:, p, None, None]
        counts[i : i + window[0], j : j + window[1]] += 1
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.zeros_like(sums))
