"""Universal adversarial perturbations (Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, CVPR 2017).

One image-agnostic perturbation v, small in an ℓp norm (‖v‖p ≤ ξ), that changes the label of most
images. Algorithm 1 of the paper: pass over the data; where the current v does not yet fool an image,
add the DeepFool step that sends that image (plus v) across the nearest boundary, then project v back
onto the ℓp ball of radius ξ; stop when the fooling rate on the data reaches the target, or after
``max_passes``.

Everything lives in [0, 1] pixel space: v is added to an image's pixels, the sum is clipped to [0, 1]
and then normalised and classified. ξ is in pixel units (8/255 means 8 levels for ℓ∞). A v computed
for one model transfers to another with the same kind of input (the ImageNet models among themselves):
it is resized to the other model's input size (``resize_perturbation``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .data import ImageDataset
from .deepfool import deepfool_pixels
from .models import LoadedModel

NORMS = (math.inf, 2.0)
MAX_PASSES = 20
"""Most passes over the data one call may run."""
MAX_IMAGES = 5000
"""Most images one universal perturbation is computed on."""

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class UniversalStep:
    """A report of the universal perturbation as it forms.

    Attributes:
        step: images visited in the current pass.
        total: images per pass.
        pass_index: the current pass, 1-based.
        max_passes: the most passes this run will do.
        v: the perturbation so far (C, H, W), a copy.
        fooling_rate_per_pass: the fooling rate on the data after each finished pass.
        updates: DeepFool steps added to v in the current pass.
        best_v: v after the finished pass with the highest fooling rate (None before the first pass ends).
    """

    step: int
    total: int
    pass_index: int
    max_passes: int
    v: Tensor
    fooling_rate_per_pass: tuple[float, ...]
    updates: int
    best_v: Tensor | None = None

    @property
    def kept_v(self) -> Tensor:
        """The v to use: ``best_v`` once a pass has ended, else the v so far."""
        return self.v if self.best_v is None else self.best_v

    @property
    def pass_done(self) -> bool:
        """True when this report ends a pass (its fooling rate is in ``fooling_rate_per_pass``)."""
        return len(self.fooling_rate_per_pass) == self.pass_index


@dataclass(frozen=True)
class UniversalResult:
    """A universal perturbation.

    Attributes:
        v: the perturbation (C, H, W) in pixel units, ‖v‖p ≤ ξ: v after the pass with the highest fooling
            rate (a later pass can lower the rate when single DeepFool steps are large compared to ξ).
        fooling_rate_per_pass: the fooling rate on the data it was computed on, after each pass.
        xi: ξ, the radius of the ℓp ball (pixel units).
        p: ``math.inf`` or 2.
    """

    v: Tensor
    fooling_rate_per_pass: tuple[float, ...]
    xi: float
    p: float

    def amplified(self) -> tuple[Tensor, float]:
        """v made visible: 0.5 + scale·v with scale = 0.5 / max|v|, so the largest entry is black or white.

        Returns:
            (pixels (1, C, H, W) in [0, 1], scale factor).
        """
        return amplify(self.v)


def amplify(v: Tensor) -> tuple[Tensor, float]:
    """0.5 + scale·v, scale = 0.5 / max|v| (1 for v = 0): pixels (1, C, H, W) in [0, 1] and the scale."""
    peak = float(v.abs().max())
    scale = 0.5 / peak if peak > 0 else 1.0
    return (0.5 + scale * v).clamp(0, 1).unsqueeze(0), scale


def check_norm(xi: float, p: float) -> float:
    """Validate ξ and p; returns p as a float (``math.inf`` or 2.0)."""
    p = float(p)
    if p not in NORMS:
        raise ValueError(f"p must be float('inf') or 2, not {p}.")
    if not (isinstance(xi, (int, float)) and math.isfinite(xi) and xi > 0):
        raise ValueError(f"ξ must be a positive number (pixel units, e.g. 8/255), not {xi!r}.")
    if p == math.inf and xi > 1:
        raise ValueError(f"For ℓ∞, ξ is in [0, 1] pixel units (8/255 means 8 levels), not {xi}.")
    return p


def project_lp(v: Tensor, xi: float, p: float) -> Tensor:
    """Project v onto the ℓp ball of radius ξ: clamp for ℓ∞, rescale for ℓ2."""
    if float(p) == math.inf:
        return v.clamp(-xi, xi)
    norm = float(v.norm())
    return v * min(1.0, xi / norm) if norm > 0 else v


def lp_norm(v: Tensor, p: float) -> float:
    """‖v‖p over all entries."""
    return float(v.abs().max()) if float(p) == math.inf else float(v.norm())


def random_perturbation(like: Tensor, p: float, seed: int = 0) -> Tensor:
    """Random noise with the same ℓp norm as ``like``: random signs × ‖like‖∞, or Gaussian scaled to ‖like‖₂.

    For ℓ∞ every entry is ±‖like‖∞, the largest noise of that ℓ∞ norm, so it is a fair control.
    """
    generator = torch.Generator().manual_seed(int(seed))  # drawn on the CPU: the same noise on every device
    if float(p) == math.inf:
        signs = torch.randint(0, 2, like.shape, generator=generator, device="cpu").to(like.device).float() * 2 - 1
        return signs * lp_norm(like, p)
    noise = torch.randn(like.shape, generator=generator, device="cpu").to(like.device)
    return noise * (lp_norm(like, p) / float(noise.norm()))


def resize_perturbation(v: Tensor, size: tuple[int, int]) -> Tensor:
    """v (C, H, W) resized to (C, *size), bilinear (antialiased when shrinking); the same tensor if it fits."""
    if tuple(v.shape[-2:]) == tuple(size):
        return v
    return F.interpolate(v.unsqueeze(0), size=tuple(size), mode="bilinear", align_corners=False, antialias=True)[0]


def dataset_pixels(model: LoadedModel, dataset: ImageDataset | Tensor, batch_size: int = 256) -> Tensor:
    """A dataset's images as the model sees them, in [0, 1] pixels (N, C, H, W), on the model's device;
    a tensor passes through (moved there)."""
    if isinstance(dataset, Tensor):
        return dataset.detach().float().to(model.device)
    if len(dataset) == 0:
        raise ValueError("The dataset holds no image.")
    if len(dataset) > MAX_IMAGES:
        raise ValueError(f"Use at most {MAX_IMAGES} images, not {len(dataset)}.")
    pre = model.preprocessing
    chunks = [
        pre.denormalize(dataset.batch(pre, range(start, min(start + batch_size, len(dataset))))).clamp(0, 1)
        for start in range(0, len(dataset), batch_size)
    ]
    return torch.cat(chunks).to(model.device)


def _fitted(model: LoadedModel, v: Tensor) -> Tensor:
    channels, height, width = model.input_size
    if v.dim() != 3 or v.shape[0] != channels:
        raise ValueError(
            f"This perturbation has shape {tuple(v.shape)}; {model.name} takes {channels}-channel images, so it "
            "cannot be used there. Transfer works between models with the same kind of input."
        )
    return resize_perturbation(v.float().to(model.device), (height, width))


def predictions(model: LoadedModel, pixels: Tensor, v: Tensor | None = None, batch_size: int = 256) -> Tensor:
    """Top-1 labels (N,) of clip(pixels + v) in batches (v (C, H, W) is resized to the model's input)."""
    fitted = None if v is None else _fitted(model, v)
    labels = []
    with torch.no_grad():  # not inference_mode: the pipeline's cached constants must stay usable by autograd
        for start in range(0, len(pixels), batch_size):
            batch = pixels[start : start + batch_size]
            if fitted is not None:
                batch = (batch + fitted).clamp(0, 1)
            labels.append(model.module(model.preprocessing.normalize(batch)).argmax(1))
    return torch.cat(labels)


def fooling_rate(model: LoadedModel, dataset: ImageDataset | Tensor, v: Tensor, clean: Tensor | None = None) -> float:
    """The fraction of images whose top-1 label changes when v is added (and the sum clipped to [0, 1]).

    Args:
        dataset: an ``ImageDataset``, or its pixels (N, C, H, W) from ``dataset_pixels``.
        v: (C, H, W) in pixel units; resized to the model's input size when it was made for another
            model with the same input kind (transfer).
        clean: the labels of the clean images, when already known (N,).
    """
    pixels = dataset_pixels(model, dataset)
    clean = predictions(model, pixels) if clean is None else clean
    return float((predictions(model, pixels, v) != clean).float().mean())


@dataclass(frozen=True)
class Evaluation:
    """How a universal perturbation does on a set of images, beside random noise of the same norm.

    Attributes:
        fooling_rate: fraction of images whose top-1 label changes with v added.
        noise_fooling_rate: the same for ``random_perturbation(v, p, seed)``, the control.
        labels_before, labels_after, labels_noise: top-1 labels (N,) of the clean images, with v, with the noise.
    """

    fooling_rate: float
    noise_fooling_rate: float
    labels_before: Tensor
    labels_after: Tensor
    labels_noise: Tensor


def evaluate(model: LoadedModel, dataset: ImageDataset | Tensor, v: Tensor, p: float = math.inf, seed: int = 0) -> Evaluation:
    """Fooling rate of v (resized to the model's input when needed) and of random noise of the same ℓp norm.

    Args:
        dataset: an ``ImageDataset`` or its pixels (N, C, H, W).
        v: (C, H, W) in pixel units.
        p: the norm the noise matches (``math.inf`` or 2).
        seed: seeds the noise.
    """
    pixels = dataset_pixels(model, dataset)
    fitted = _fitted(model, v)
    before = predictions(model, pixels)
    after = predictions(model, pixels, fitted)
    noise = predictions(model, pixels, random_perturbation(fitted, p, seed))
    return Evaluation(
        float((after != before).float().mean()), float((noise != before).float().mean()), before, after, noise
    )


def universal_steps(
    model: LoadedModel,
    dataset: ImageDataset | Tensor,
    xi: float,
    p: float = math.inf,
    target_fooling_rate: float = 0.8,
    max_passes: int = 5,
    seed: int = 0,
    every: int = 0,
    classes: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 10,
) -> Iterator[UniversalStep]:
    """Algorithm 1 of the paper as a stream of reports (see ``universal_perturbation``).

    Args:
        every: report every ``every`` images within a pass (0: only at the end of each pass); the
            end of every pass is always reported.
        classes, overshoot, max_iter: DeepFool's parameters for each image's step.

    Yields:
        ``UniversalStep``s; the last one holds the final v.
    """
    p = check_norm(xi, p)
    if not 0 < target_fooling_rate <= 1:
        raise ValueError(f"The target fooling rate must be in (0, 1], not {target_fooling_rate}.")
    if not isinstance(max_passes, int) or not 1 <= max_passes <= MAX_PASSES:
        raise ValueError(f"The number of passes must be a whole number from 1 to {MAX_PASSES}, not {max_passes!r}.")
    pixels = dataset_pixels(model, dataset)
    clean = predictions(model, pixels)
    n = len(pixels)
    generator = torch.Generator().manual_seed(int(seed))
    v = torch.zeros(pixels.shape[1:], device=pixels.device)
    rates: list[float] = []
    best = None
    for pass_index in range(1, max_passes + 1):
        updates = 0
        for done, i in enumerate(torch.randperm(n, generator=generator).tolist(), start=1):
            image = (pixels[i : i + 1] + v).clamp(0, 1)
            result = deepfool_pixels(model, image, classes, overshoot, max_iter, labels=clean[i : i + 1])
            if bool(result.iterations[0] > 0) and bool(result.fooled[0]):  # not fooled yet, and DeepFool crossed
                v = project_lp(v + result.perturbation[0], xi, p)
                updates += 1
            if every and done % every == 0 and done < n:
                yield UniversalStep(done, n, pass_index, max_passes, v.clone(), tuple(rates), updates, best)
        rates.append(float((predictions(model, pixels, v) != clean).float().mean()))
        if rates[-1] >= max(rates):
            best = v.clone()
        yield UniversalStep(n, n, pass_index, max_passes, v.clone(), tuple(rates), updates, best)
        if rates[-1] >= target_fooling_rate:
            return


def universal_perturbation(
    model: LoadedModel,
    dataset: ImageDataset | Tensor,
    xi: float,
    p: float = math.inf,
    target_fooling_rate: float = 0.8,
    max_passes: int = 5,
    seed: int = 0,
    progress: Progress | None = None,
    **deepfool_params,
) -> UniversalResult:
    """One perturbation v with ‖v‖p ≤ ξ that changes the label of most images of ``dataset``.

    Args:
        model: the (shared) model; nothing is left on it.
        dataset: one of ``cnnviz.data``'s image datasets (or its pixels (N, C, H, W) in [0, 1]).
        xi: ξ, the radius of the ℓp ball in pixel units (8/255 means 8 levels for ℓ∞).
        p: ``float("inf")`` or 2.
        target_fooling_rate: stop once this fraction of the data is fooled.
        max_passes: stop after this many passes over the data.
        seed: fixes the order in which each pass visits the images, and so v.
        progress: called with (fraction of the current pass, message).
        deepfool_params: ``classes``, ``overshoot``, ``max_iter`` of each DeepFool step.

    Returns:
        ``UniversalResult`` with v (C, H, W) and the fooling rate after each pass.

    Raises:
        ValueError: bad parameters or an empty dataset.
    """
    last = None
    every = 0 if progress is None else max(1, len(dataset) // 50)
    for last in universal_steps(model, dataset, xi, p, target_fooling_rate, max_passes, seed, every, **deepfool_params):
        if progress is not None:
            rate = f", fooling rate {last.fooling_rate_per_pass[-1]:.0%}" if last.pass_done else ""
            progress(last.step / last.total, f"pass {last.pass_index}: {last.step} of {last.total} images{rate}")
    return UniversalResult(last.kept_v, last.fooling_rate_per_pass, float(xi), float(p))
