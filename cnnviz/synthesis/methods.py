"""The methods built on the loop: class and neuron visualization, feature inversion, DeepDream."""

from __future__ import annotations

import difflib
import numbers
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..hooks import forward_until, get_module
from ..models import LoadedModel
from .loop import MAX_DREAM_SIZE, MAX_OCTAVES, MAX_SIZE, Step, check_steps, optimize
from .objectives import Objective, channel, class_logit, deepdream, inversion, l2, total_variation, unit
from .steps import Regularizer, adam, blur_every, clip_small_contribution, clip_small_norm, normalized_ascent
from .transforms import jitter

def class_index(model: LoadedModel, name: str | int) -> int:
    """Index of a class given by index or name (case-insensitive).

    Raises:
        ValueError: unknown name (with close matches) or index out of range.
    """
    k = len(model.class_names)
    if isinstance(name, numbers.Integral):
        if not 0 <= int(name) < k:
            raise ValueError(f"Class index {name} is out of range: {model.name} has {k} classes (0 to {k - 1}).")
        return int(name)
    lowered = [c.lower() for c in model.class_names]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    close = difflib.get_close_matches(name.lower(), lowered, n=3)
    hint = f" Did you mean {', '.join(repr(model.class_names[lowered.index(c)]) for c in close)}?" if close else ""
    raise ValueError(f"{model.name} has no class called {name!r}.{hint}")


INITS = ("zeros", "noise", "image")


def initial_pixels(
    model: LoadedModel, init: str, size: int | None = None, image: Tensor | None = None, seed: int = 0
) -> Tensor:
    """Start image (1, C, S, S) in [0, 1], on the model's device.

    Args:
        init: "zeros" (zero after normalisation: the data's mean colour, as in Simonyan et al., plus
            noise of std 0.001 so ReLUs are not all exactly at their kink),
            "noise" (mean colour plus Gaussian noise of std 0.1) or "image" (``image``, normalised model
            input (1, C, H, W), resized to ``size``).
        size: side in pixels (default: the model's input size).
    """
    c, h, w = model.input_size
    size = size or h
    if not 8 <= size <= MAX_SIZE:
        raise ValueError(f"The image size must be from 8 to {MAX_SIZE} pixels, not {size}.")
    # drawn on the CPU (the same start on every device), then moved to the model's device
    mean = torch.tensor(model.preprocessing.mean, device="cpu").view(1, -1, 1, 1).expand(1, c, size, size)
    generator = torch.Generator().manual_seed(int(seed))
    if init == "zeros":
        # a whisper of noise breaks ReLU ties: an exactly zero input to bias-free conv + BN + ReLU
        # (random-weight ResNets) has a zero gradient everywhere, and the ascent would never start
        noise = torch.randn(1, c, size, size, generator=generator, device="cpu")
        return (mean + 1e-3 * noise).clamp(0, 1).to(model.device)
    if init == "noise":
        noise = torch.randn(1, c, size, size, generator=generator, device="cpu")
        return (mean + 0.1 * noise).clamp(0, 1).to(model.device)
    if init == "image":
        if image is None:
            raise ValueError("Starting from the image needs an image.")
        pixels = model.preprocessing.denormalize(image.detach().float().to(model.device)).clamp(0, 1)
        if pixels.shape[2:] != (size, size):
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
        return pixels
    raise ValueError(f"Start from one of {', '.join(INITS)}, not {init!r}.")


def _regularizers(
    blur_every_steps: int, blur_sigma: float, clip_norm_percentile: float, clip_contribution_percentile: float
) -> list[Regularizer]:
    out: list[Regularizer] = []
    if blur_every_steps and blur_sigma > 0:
        out.append(blur_every(blur_every_steps, blur_sigma))
    if clip_norm_percentile:
        out.append(clip_small_norm(clip_norm_percentile))
    if clip_contribution_percentile:
        out.append(clip_small_contribution(clip_contribution_percentile))
    return out


def visualize(
    model: LoadedModel,
    objective: Objective,
    steps: int = 100,
    lr: float = 0.05,
    l2_weight: float = 0.0,
    blur_every_steps: int = 0,
    blur_sigma: float = 0.5,
    clip_norm_percentile: float = 0.0,
    clip_contribution_percentile: float = 0.0,
    jitter_pixels: int = 0,
    init: str = "zeros",
    image: Tensor | None = None,
    size: int | None = None,
    seed: int = 0,
    every: int = 1,
) -> Iterator[Step]:
    """Gradient ascent on the image for any objective, with Yosinski et al.'s regularizers as switches.

    Maximises ``objective − l2_weight·‖I‖²`` with normalised gradient steps of ``lr`` pixel units
    (mean |update| per pixel); blur every ``blur_every_steps`` steps (0: off), clip small-norm and
    small-contribution pixels (percentile 0: off), jitter (0: off).

    Yields:
        ``Step``s, as ``optimize``.
    """
    if l2_weight < 0:
        raise ValueError("The L2 weight λ must be >= 0.")
    if l2_weight > 0:
        objective = objective - l2_weight * l2()
    start = initial_pixels(model, init, size, image, seed)
    return optimize(
        model.module,
        objective,
        start,
        steps,
        normalized_ascent(lr),
        model.preprocessing,
        transforms=[jitter(jitter_pixels)] if jitter_pixels else [],
        regularizers=_regularizers(blur_every_steps, blur_sigma, clip_norm_percentile, clip_contribution_percentile),
        seed=seed,
        every=every,
    )


def class_visualization(model: LoadedModel, target: str | int, **params) -> Iterator[Step]:
    """Simonyan et al. 2014: argmax_I S_c(I) − λ‖I‖², with optional regularizers (see ``visualize``)."""
    return visualize(model, class_logit(class_index(model, target)), **params)


def neuron_visualization(
    model: LoadedModel, layer: str, index: int, position: tuple[int, int] | str | None = None, **params
) -> Iterator[Step]:
    """Maximise one channel of ``layer`` (mean over positions, ``position`` None), or one unit at
    ``position`` = (row, col) or "centre"."""
    get_module(model.module, layer)
    if position is None:
        objective = channel(layer, index)
    elif position == "centre":
        objective = unit(layer, index)
    else:
        objective = unit(layer, index, *position)
    return visualize(model, objective, **params)


def target_features(model: LoadedModel, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
    """Features Φ₀ of ``layers`` for the normalised input ``x`` (no graph)."""
    for name in layers:
        get_module(model.module, name)
    try:
        with torch.inference_mode():
            acts = forward_until(model.module, x.to(model.device), layers)  # the layers after the last one never run
    except ValueError as error:
        raise ValueError(f"{error} It cannot be inverted; pick another layer.") from error
    return {name: acts[name].clone() for name in layers}


def invert_features(
    model: LoadedModel,
    x: Tensor,
    layer: str,
    steps: int = 200,
    lr: float = 0.05,
    tv_weight: float = 0.5,
    tv_beta: float = 2.0,
    init: str = "noise",
    seed: int = 0,
    every: int = 1,
) -> Iterator[Step]:
    """Feature inversion (Mahendran & Vedaldi 2015): from noise, minimise
    ‖Φ(x) − Φ₀‖²/‖Φ₀‖² + λ·TV^β(x), where Φ₀ = features of ``layer`` for the image ``x``.

    Uses Adam with step ``lr`` in pixel units; the losses report "feature error" and "TV^β".

    Args:
        x: normalised model input (1, C, H, W).
    """
    if tv_weight < 0:
        raise ValueError("The total variation weight λ must be >= 0.")
    target = target_features(model, x, [layer])[layer].float()
    objective = inversion(layer, target)
    tv = total_variation(tv_beta)
    if tv_weight > 0:
        objective = objective - tv_weight * tv
    start = initial_pixels(model, init, x.shape[-1], x, seed)
    return optimize(model.module, objective, start, steps, adam(lr), model.preprocessing, seed=seed, every=every)


def invert_layers(model: LoadedModel, x: Tensor, layers: Sequence[str], **params) -> Iterator[tuple[str, Step]]:
    """Invert several layers one after the other (a row of reconstructions from several depths).

    Yields:
        (layer, ``Step``) for each step report of each layer's inversion.
    """
    if not layers:
        raise ValueError("Pick at least one layer to invert.")
    for layer in layers:
        for step in invert_features(model, x, layer, **params):
            yield layer, step


def dream(
    model: LoadedModel,
    image: Tensor,
    layer: str,
    steps: int = 20,
    lr: float = 0.01,
    octaves: int = 3,
    octave_scale: float = 1.4,
    jitter_pixels: int = 4,
    size: int | None = None,
    seed: int = 0,
    every: int = 1,
) -> Iterator[Step]:
    """DeepDream (Mordvintsev et al. 2015): maximise ½‖A‖² of ``layer`` with normalised gradient steps
    and jitter, over ``octaves`` scales from small to full size; the detail dreamt at one scale is
    upsampled and added to the image at the next.

    Args:
        image: pixels (1, C, H, W) in [0, 1] (resized so the longer side is ``size``, if given).
        steps: steps per octave.
        size: longer side of the result, at most ``MAX_DREAM_SIZE``.

    Yields:
        ``Step``s whose ``step`` and ``total`` count over all octaves; ``pixels`` are at the current
        octave's scale.
    """
    steps = check_steps(steps)
    if not 1 <= octaves <= MAX_OCTAVES:
        raise ValueError(f"The number of octaves must be from 1 to {MAX_OCTAVES}.")
    if not 1.0 < octave_scale <= 2.0:
        raise ValueError("The octave scale must be in (1, 2].")
    get_module(model.module, layer)
    base = image.detach().float().to(model.device).clamp(0, 1)
    h, w = base.shape[2:]
    if size is not None:
        if not 16 <= size <= MAX_DREAM_SIZE:
            raise ValueError(f"The DeepDream size must be from 16 to {MAX_DREAM_SIZE} pixels, not {size}.")
        factor = size / max(h, w)
        h, w = max(1, round(h * factor)), max(1, round(w * factor))
        base = F.interpolate(base, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
    if max(h, w) > MAX_DREAM_SIZE:
        raise ValueError(f"The DeepDream image may be at most {MAX_DREAM_SIZE} pixels on its longer side; pass size=.")
    shapes = [(max(8, round(h / octave_scale**i)), max(8, round(w / octave_scale**i))) for i in range(octaves)][::-1]
    detail = torch.zeros(1, base.shape[1], *shapes[0], device=base.device)
    history: list[dict[str, float]] = []
    total = steps * octaves
    for octave, shape in enumerate(shapes):
        scaled = F.interpolate(base, size=shape, mode="bilinear", align_corners=False) if shape != (h, w) else base
        detail = F.interpolate(detail, size=shape, mode="bilinear", align_corners=False)
        loop = optimize(
            model.module,
            deepdream(layer),
            (scaled + detail).clamp(0, 1),
            steps,
            normalized_ascent(lr),
            model.preprocessing,
            transforms=[jitter(jitter_pixels)] if jitter_pixels else [],
            seed=seed + octave,
            every=1,
        )
        for s in loop:
            history.append({**s.losses, "octave": octave + 1})
            k = octave * steps + s.step
            if k % every == 0 or s.step == steps:
                yield Step(k, total, s.pixels, history[-1], tuple(history))
            last = s.pixels
        detail = last - scaled


def image_pixels(model: LoadedModel, image, size: int) -> Tensor:
    """A PIL image as pixels (1, C, H, W) in [0, 1] for ``model``'s channels, longer side ``size``.

    One-channel models get the image as they see it (``preprocessing.view``: grayscale, inverted when
    its background is light), resized; three-channel models get the whole photo, not a center crop.
    """
    if not 16 <= size <= MAX_SIZE:
        raise ValueError(f"The image size must be from 16 to {MAX_SIZE} pixels, not {size}.")
    pre = model.preprocessing
    picture = pre.view(image) if pre.channels == 1 else image.convert("RGB")
    w, h = picture.size
    factor = size / max(w, h)
    picture = picture.resize((max(1, round(w * factor)), max(1, round(h * factor))), resample=3)  # bicubic
    array = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0)
    return (array.unsqueeze(0) if array.dim() == 2 else array.permute(2, 0, 1)).unsqueeze(0).contiguous()
