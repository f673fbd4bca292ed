"""Targets, scores and input checks shared by every attribution method."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from ..folding import private_copy  # noqa: F401 (part of this module's API)
from ..hooks import get_module

Target = int | Tensor
Progress = Callable[[float], None]

METHODS = (
    "vanilla gradient",
    "guided backprop",
    "Grad-CAM",
    "occlusion",
    "SmoothGrad",
    "integrated gradients",
)
"""Method names understood by ``attribute`` and ``randomization_sanity_check``."""


# --------------------------------------------------------------------------------------------
# Targets and scores


def target_indices(target: Target, n: int, num_classes: int | None = None) -> Tensor:
    """A class index or N indices -> a long tensor (N,) on the CPU, checked against the number of classes.

    Raises:
        ValueError: wrong count, or an index outside the model's classes.
    """
    t = torch.as_tensor(target, dtype=torch.long, device="cpu").flatten()  # checked here; callers move it
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"Got {t.numel()} target classes for a batch of {n} images; give one class or one per image.")
    if num_classes is not None and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"The target class must be between 0 and {num_classes - 1}.")
    return t.contiguous()


def _check_input(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"Expected a preprocessed batch (N, C, H, W); got {shape}.")


def top_class(model: nn.Module, x: Tensor) -> int:
    """Index of the highest logit for the first image of ``x``: the default target."""
    with torch.inference_mode():
        return int(model(x[:1]).argmax(dim=1)[0])


def logit_objective(target: Target) -> Callable[[Tensor], Tensor]:
    """Objective for ``cnnviz.hooks.input_gradient``: the target class logit of each image, (N,)."""

    def objective(output: Tensor) -> Tensor:
        t = target_indices(target, output.shape[0], output.shape[1]).to(output.device)
        return output.gather(1, t[:, None])[:, 0]

    return objective


def module_check(model: nn.Module, layer: str) -> nn.Module:
    """``get_module`` with a ValueError (shown as a message in the UI) for an unknown name."""
    try:
        return get_module(model, layer)
    except KeyError as error:
        raise ValueError(str(error).strip("'\"")) from None
