"""Texture synthesis (Gatys et al. 2015) and style transfer by optimisation (Gatys et al. 2016).

Both are objectives on the one optimisation loop of ``cnnviz.synthesis`` (Adam), or on the L-BFGS
runner beside it; both are generators of ``Step``s like every other method. Images are pixels
(N, 3, H, W) in [0, 1]; the loss network is VGG-16's convolutions (``loss_network()``).
"""

from __future__ import annotations

import math
import re
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import LoadedModel
from ..synthesis import (
    MAX_SIZE,
    MAX_STEPS,
    Objective,
    Step,
    adam,
    check_steps,
    feature_error,
    initial_pixels,
    lbfgs_optimize,
    optimize,
    target_features,
    total_variation,
)
from .gram import style_grams, style_loss
from .vgg import CONTENT_LAYER, STYLE_LAYERS, module_name

OPTIMIZERS = ("adam", "lbfgs")
INITS = ("content", "noise")
GATYS_SIZE = 256
"""Default longer side of a Gatys result: with ``GATYS_STEPS`` Adam steps it takes about a minute here."""
GATYS_STEPS = 150
TEXTURE_SIZE = 128
"""Default side of a synthesised texture (the row runs five of them)."""
TEXTURE_STEPS = 100

SECONDS_PER_STEP = {128: 0.11, 256: 0.44, 512: 2.0}
"""One Gatys step (VGG-16 to conv5_1, forward and input gradient) on this project's 2-core machine,
by longer side in pixels, measured by ``bench/bench_style.py``."""


def resize_longer(pixels: Tensor, size: int) -> Tensor:
    """Resize (N, C, H, W) so the longer side is ``size`` (antialiased bilinear), aspect kept.

    Raises:
        ValueError: ``size`` outside 16 to ``MAX_SIZE``.
    """
    if not 16 <= size <= MAX_SIZE:
        raise ValueError(f"The image size must be from 16 to {MAX_SIZE} pixels, not {size}.")
    h, w = pixels.shape[2:]
    factor = size / max(h, w)
    shape = (max(1, round(h * factor)), max(1, round(w * factor)))
    if shape == (h, w):
        return pixels.float()
    return F.interpolate(pixels.float(), size=shape, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _run(model: LoadedModel, objective: Objective, start: Tensor, steps: int, optimizer: str, lr: float, seed: int, every: int) -> Iterator[Step]:
    if optimizer == "adam":
        return optimize(model.module, objective, start, steps, adam(lr), model.preprocessing, seed=seed, every=every)
    if optimizer == "lbfgs":
        return lbfgs_optimize(model.module, objective, start, steps, model.preprocessing, every=every)
    raise ValueError(f"The optimizer must be one of {', '.join(OPTIMIZERS)}, not {optimizer!r}.")


def _check_weight(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"The {name} weight must be a number >= 0, not {value!r}.")
    return float(value)


def texture_synthesis(
    model: LoadedModel,
    style: Tensor,
    layers: Sequence[str] = STYLE_LAYERS,
    weights: Mapping[str, float] | None = None,
    size: int = TEXTURE_SIZE,
    steps: int = TEXTURE_STEPS,
    lr: float = 0.02,
    tv_weight: float = 0.0,
    optimizer: str = "adam",
    seed: int = 0,
    every: int = 1,
) -> Iterator[Step]:
    """Texture synthesis (Gatys et al. 2015): from noise, match the Gram matrices of ``layers``.

    Minimises Σ_l w_l ‖G_l(x) − A_l‖² / ‖A_l‖² (+ ``tv_weight``·TV²), A_l the Gram matrices of the
    style image resized so its longer side is ``size``; the texture is ``size`` × ``size``.

    Args:
        model: the loss network (``loss_network()``).
        style: the texture's example, pixels (1, 3, H, W) in [0, 1].
        layers: Gatys names ("conv1_1") or module names; weights per layer (default: equal).
        lr: Adam's step in pixel units.

    Yields:
        ``Step``s; losses "style loss" (and "TV^2").
    """
    steps = check_steps(steps, MAX_STEPS)
    grams = style_grams(model, resize_longer(style, size), layers)
    objective = -style_loss(grams, weights)
    if _check_weight("TV", tv_weight) > 0:
        objective = objective - tv_weight * total_variation(2.0)
    start = initial_pixels(model, "noise", size, seed=seed)
    return _run(model, objective, start, steps, optimizer, lr, seed, every)


def texture_row(model: LoadedModel, style: Tensor, layers: Sequence[str] = STYLE_LAYERS, **params) -> Iterator[tuple[str, Step]]:
    """Textures from the first layer alone, then the first two, ... up to all of ``layers``.

    Higher layers see larger regions, so each texture of the row keeps larger structures.

    Yields:
        (label such as "conv1_1 … conv3_1", ``Step``) for each report of each texture.
    """
    if not layers:
        raise ValueError("Pick at least one layer.")
    for i in range(1, len(layers) + 1):
        label = layers[0] if i == 1 else f"{layers[0]} … {layers[i - 1]}"
        for step in texture_synthesis(model, style, layers[:i], **params):
            yield label, step


def _min_side(layers: Sequence[str]) -> int:
    """Shortest side, in pixels, an image needs to reach the deepest of ``layers``: VGG-16 halves it
    before each block, so "conv5_1" needs 16 (other names: 16 too)."""
    blocks = [int(m.group(1)) for m in (re.fullmatch(r"conv(\d)_\d", layer) for layer in layers) if m]
    return 2 ** (max(blocks) - 1) if blocks and len(blocks) == len(layers) else 16


def _wide_enough(pixels: Tensor, what: str, size: int, minimum: int) -> Tensor:
    """``pixels`` (1, C, H, W), or a ValueError saying what to do when a side is under ``minimum``."""
    h, w = pixels.shape[-2:]
    if min(h, w) < minimum:
        raise ValueError(f"At {size} px the {what} image is {w}×{h} pixels; these VGG-16 layers need at least "
                         f"{minimum} pixels on each side. Pick a less elongated image (a panorama is too thin) "
                         "or a larger size.")
    return pixels


def style_transfer(
    model: LoadedModel,
    content: Tensor,
    style: Tensor,
    content_layer: str = CONTENT_LAYER,
    style_layers: Sequence[str] = STYLE_LAYERS,
    content_weight: float = 1.0,
    style_weight: float = 10.0,
    tv_weight: float = 10.0,
    optimizer: str = "adam",
    steps: int = GATYS_STEPS,
    size: int = GATYS_SIZE,
    lr: float = 0.02,
    init: str = "content",
    seed: int = 0,
    every: int = 1,
) -> Iterator[Step]:
    """Style transfer by optimisation (Gatys et al. 2016).

    Minimises α·‖Φ(x) − Φ(c)‖²/‖Φ(c)‖² + β·Σ_l ‖G_l(x) − A_l‖²/‖A_l‖²/L + γ·TV²(x): the content
    image's features at ``content_layer``, the style image's Gram matrices at ``style_layers``, and
    smoothness. Both images are resized so their longer side is ``size``.

    Args:
        model: the loss network (``loss_network()``).
        content, style: pixels (1, 3, H, W) in [0, 1]; the result has the content's aspect ratio.
        content_weight, style_weight, tv_weight: α, β, γ (>= 0).
        optimizer: "adam" (the one loop; ``lr`` in pixel units) or "lbfgs" (one step = one iteration).
        init: start from the "content" image or from "noise".

    Yields:
        ``Step``s; losses "content loss", "style loss", "TV^2".
    """
    steps = check_steps(steps, MAX_STEPS)
    content_weight = _check_weight("content", content_weight)
    style_weight = _check_weight("style", style_weight)
    tv_weight = _check_weight("TV", tv_weight)
    if content_weight == 0 and style_weight == 0:
        raise ValueError("The content and style weights are both 0: nothing to optimise.")
    if init not in INITS:
        raise ValueError(f"Start from one of {', '.join(INITS)}, not {init!r}.")
    minimum = _min_side([content_layer, *style_layers])  # the result, content-sized, goes through the style layers too
    content = _wide_enough(resize_longer(content, size), "content", size, minimum)
    style = _wide_enough(resize_longer(style, size), "style", size, minimum)
    name = module_name(content_layer)
    target = target_features(model, model.preprocessing.normalize(content), [name])[name].float()
    objective = -(content_weight * feature_error(name, target, name="content loss"))
    objective = objective - style_weight * style_loss(style_grams(model, style, style_layers))
    objective = objective - tv_weight * total_variation(2.0)
    if init == "content":
        start = content
    else:
        generator = torch.Generator().manual_seed(int(seed))
        start = torch.rand(content.shape, generator=generator, device="cpu")  # the same start on every device
    return _run(model, objective, start, steps, optimizer, lr, seed, every)


def gatys_seconds(size: int, steps: int) -> float:
    """Expected time of ``steps`` Adam steps of Gatys' method at longer side ``size`` on this
    project's machine, from the bench's measured time per step (log-log interpolation in size)."""
    sizes = sorted(SECONDS_PER_STEP)
    x = math.log(max(size, 1))
    lo, hi = (sizes[0], sizes[1]) if size <= sizes[1] else (sizes[-2], sizes[-1])
    slope = (math.log(SECONDS_PER_STEP[hi]) - math.log(SECONDS_PER_STEP[lo])) / (math.log(hi) - math.log(lo))
    return steps * math.exp(math.log(SECONDS_PER_STEP[lo]) + slope * (x - math.log(lo)))
