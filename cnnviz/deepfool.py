"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016): the smallest L2 change that flips the label.

At the current image the classifier is linearised: for each candidate class k the boundary between
the label l and k is the hyperplane f_k − f_l + w_k·r = 0 with w_k = ∇(f_k − f_l). The nearest of
these hyperplanes is at distance |f_k − f_l| / ‖w_k‖; one step moves exactly there, and the steps are
repeated until the label changes. The total is scaled by (1 + overshoot) to land just past the boundary.

Everything lives in [0, 1] pixel space, as ``cnnviz.adversarial.attack`` reports it: the image plus the
perturbation is clipped to [0, 1] before it is classified, norms are measured there, and gradients are
taken with respect to the pixels (through the model's normalisation). Directions that would push a
pixel already at 0 or 1 further out are dropped from w_k, so a step is not wasted on what the clip
undoes (MNIST's black background).

DeepFool does not run on ``cnnviz.synthesis.optimize``: each of its iterations needs the gradients of
several logits at once and picks its own step length from them, which is not a step rule of that loop.
The gradients of the candidate logits come from one forward pass and one batched backward pass
(``torch.autograd.grad`` with ``is_grads_batched``), never ``.backward()`` into the parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .models import LoadedModel

MAX_ITERATIONS = 500
"""Most DeepFool iterations one call may run."""


@dataclass(frozen=True)
class DeepFoolResult:
    """Outcome of DeepFool on a batch; all pixels in [0, 1].

    Attributes:
        original: pixels (N, C, H, W).
        perturbation: adversarial − original (N, C, H, W).
        adversarial: the clipped image original + perturbation (N, C, H, W).
        norm: ‖perturbation‖₂ per image (N,).
        relative_norm: norm / ‖original‖₂ (N,).
        iterations: DeepFool steps taken per image (N,); 0 when the label was already not the one to leave.
        labels_before: the labels DeepFool moved away from (N,).
        labels_after: the predictions for ``adversarial`` (N,).
    """

    original: Tensor
    perturbation: Tensor
    adversarial: Tensor
    norm: Tensor
    relative_norm: Tensor
    iterations: Tensor
    labels_before: Tensor
    labels_after: Tensor

    @property
    def fooled(self) -> Tensor:
        """Whether the label changed, (N,) bool."""
        return self.labels_after != self.labels_before

    def amplified_perturbation(self) -> tuple[Tensor, float]:
        """The perturbation made visible: 0.5 + scale·δ, scale = 0.5 / max|δ|, so the largest change is black or white.

        Returns:
            (pixels (N, C, H, W) in [0, 1], scale factor).
        """
        peak = float(self.perturbation.abs().max())
        scale = 0.5 / peak if peak > 0 else 1.0
        return (0.5 + scale * self.perturbation).clamp(0, 1), scale


BATCHED_GRADIENTS_UP_TO = 4
"""Up to this many images, the K gradients come from one vmapped backward pass (``is_grads_batched``):
faster than K passes for one image (0.86× of the plain loop on the small CNN). For a batch, vmap's
per-sample overhead outweighs that (1.74× at 64 digits), so K backward passes over the batch are used."""


def candidate_gradients(logits: Tensor, pixels: Tensor, classes: Tensor) -> Tensor:
    """Gradients of several logits per image with respect to the pixels (one vmapped backward pass for a
    few images, else one pass per candidate over the whole batch).

    Args:
        logits: (N, num_classes), computed from ``pixels`` with the autograd graph kept.
        pixels: (N, C, H, W), the tensor ``logits`` was computed from (requires grad).
        classes: (N, K) class indices per image.

    Returns:
        (K, N, C, H, W): d logits[n, classes[n, k]] / d pixels[n].
    """
    k = classes.shape[1]
    chosen = logits.gather(1, classes)  # (N, K)
    if len(pixels) <= BATCHED_GRADIENTS_UP_TO:
        basis = torch.eye(k, dtype=chosen.dtype, device=chosen.device).unsqueeze(1).expand(k, len(pixels), k)
        (grads,) = torch.autograd.grad(chosen, pixels, grad_outputs=basis, is_grads_batched=True)
        return grads
    # images do not interact in an eval-mode network: the gradient of a column's sum is each image's own
    return torch.stack([torch.autograd.grad(chosen[:, j].sum(), pixels, retain_graph=j < k - 1)[0] for j in range(k)])


def boundary_step(logits: Tensor, grads: Tensor, pixels: Tensor, classes: Tensor, linf: bool = False) -> Tensor:
    """DeepFool's step: onto the nearest boundary of the classifier linearised at ``pixels``.

    Directions that would push a pixel at 0 or 1 further out are dropped first (the clip would undo them).

    Args:
        logits: (N, num_classes) at ``pixels``.
        grads: (K, N, C, H, W) gradients of the logits ``classes`` (``candidate_gradients``).
        pixels: (N, C, H, W) in [0, 1].
        classes: (N, K), the label to leave first.
        linf: measure distances in ℓ∞ (steps of equal size on every pixel) instead of L2.

    Returns:
        (N, C, H, W) steps.
    """
    chosen = logits.gather(1, classes)  # (N, K)
    f = chosen[:, 1:] - chosen[:, :1]  # (N, K-1), negative while the label wins
    w = (grads[1:] - grads[:1]).transpose(0, 1)  # (N, K-1, C, H, W)
    edge = pixels.unsqueeze(1)
    w = w.masked_fill(((edge <= 0) & (w < 0)) | ((edge >= 1) & (w > 0)), 0.0)
    # distance to each linearised boundary: |f| / ‖w‖_q, q dual to the norm measured (L2: 2, ℓ∞: 1)
    w_norm = w.flatten(2).norm(p=1 if linf else 2, dim=2)  # (N, K-1)
    distance = (f.abs() / w_norm.clamp_min(1e-12)).masked_fill(w_norm == 0, float("inf"))
    best = distance.argmin(1)  # the nearest boundary
    rows = torch.arange(len(pixels), device=pixels.device)
    w_best, reach = w[rows, best], (distance[rows, best] + 1e-4).view(-1, 1, 1, 1)
    if linf:  # every pixel moves by the same amount
        step = reach * w_best.sign()
    else:  # along w
        step = reach * w_best / w_norm[rows, best].clamp_min(1e-12).view(-1, 1, 1, 1)
    return torch.nan_to_num(step, nan=0.0, posinf=0.0, neginf=0.0)


def _check(classes: int, overshoot: float, max_iter: int) -> None:
    if not isinstance(classes, int) or classes < 2:
        raise ValueError(f"DeepFool needs at least 2 candidate classes, not {classes!r}.")
    if not 0 <= overshoot <= 1:
        raise ValueError(f"The overshoot must be between 0 and 1, not {overshoot}.")
    if not isinstance(max_iter, int) or not 1 <= max_iter <= MAX_ITERATIONS:
        raise ValueError(f"max_iter must be a whole number from 1 to {MAX_ITERATIONS}, not {max_iter!r}.")


def _candidates(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """(N, k) classes: the label first, then the k − 1 other classes with the largest logits."""
    others = logits.scatter(1, labels[:, None], float("-inf")).topk(k - 1, dim=1).indices
    return torch.cat([labels[:, None], others], dim=1)


def deepfool_pixels(
    model: LoadedModel,
    pixels: Tensor,
    classes: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 50,
    labels: Tensor | None = None,
    p: float = 2.0,
) -> DeepFoolResult:
    """DeepFool on pixels in [0, 1] (see ``deepfool``, which takes the normalised input).

    Args:
        pixels: (N, C, H, W) in [0, 1].
        labels: the classes to move away from (N,); default: the current predictions. An image whose
            prediction is already not its label is left as it is (0 iterations).
        p: 2 (the paper's DeepFool) or ``math.inf``: the ℓ∞ variant of the paper's section 3.3, whose
            steps reach each linearised boundary with the smallest largest pixel change.
    """
    net, pre = model.module, model.preprocessing
    _check(classes, overshoot, max_iter)
    if float(p) not in (2.0, math.inf):
        raise ValueError(f"DeepFool's norm p must be 2 or float('inf'), not {p}.")
    linf = float(p) == math.inf
    original = pixels.detach().float().clamp(0, 1)
    n = len(original)
    total = torch.zeros_like(original)  # r_tot, kept so that original + r_tot stays in [0, 1]
    iterations = torch.zeros(n, dtype=torch.long, device=original.device)
    after = torch.zeros(n, dtype=torch.long, device=original.device)
    active = torch.arange(n, device=original.device)
    candidates = None
    scale = 1 + overshoot
    while len(active):
        # one forward per iteration: it checks the label at the current point and, for the images not
        # fooled yet, gives the logits and gradients of the next step
        current = (original[active] + scale * total[active]).clamp(0, 1).requires_grad_(True)
        with torch.enable_grad():
            out = net(pre.normalize(current))
            predicted = out.argmax(1)
            if candidates is None:  # the first pass is at the original image
                labels = predicted.detach() if labels is None else labels.to(predicted.device).long()
                candidates = _candidates(out.detach(), labels, min(classes, out.shape[1]))
            after[active] = predicted
            still = (predicted == labels[active]) & (iterations[active] < max_iter)
            if not bool(still.any()):
                break
            grads = candidate_gradients(out, current, candidates[active])[:, still]  # (K, A, C, H, W)
        out, current, active = out.detach()[still], current.detach()[still], active[still]
        step = boundary_step(out, grads, current, candidates[active], linf)
        total[active] = (original[active] + total[active] + step).clamp(0, 1) - original[active]
        iterations[active] += 1

    adversarial = (original + scale * total).clamp(0, 1)  # the point each image was last classified at
    perturbation = adversarial - original
    norm = perturbation.flatten(1).norm(dim=1)
    return DeepFoolResult(
        original, perturbation, adversarial, norm, norm / original.flatten(1).norm(dim=1).clamp_min(1e-12),
        iterations.cpu(), labels.cpu(), after.cpu(),
    )


def deepfool(
    model: LoadedModel,
    x: Tensor,
    classes: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 50,
    labels: Tensor | None = None,
    p: float = 2.0,
) -> DeepFoolResult:
    """The smallest L2 perturbation (in pixel space) that changes the model's label (DeepFool).

    Args:
        x: normalised model input (N, C, H, W), as for ``cnnviz.adversarial.attack``.
        classes: candidate classes per image: the label and the classes with the next-largest logits.
        overshoot: the total step is scaled by 1 + overshoot, to land just past the boundary.
        max_iter: most linearisation steps per image.
        labels: the classes to move away from (N,); default: the current predictions.
        p: 2 (DeepFool as in the paper) or ``math.inf`` (its ℓ∞ variant).

    Returns:
        ``DeepFoolResult``: perturbation and adversarial pixels (N, C, H, W), norms, iterations, labels.

    Raises:
        ValueError: bad parameters.
    """
    pixels = model.preprocessing.denormalize(x.detach().float()).clamp(0, 1)
    return deepfool_pixels(model, pixels, classes, overshoot, max_iter, labels, p)
