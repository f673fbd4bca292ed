"""Gradient checking: compare backpropagation's gradient with a centred finite difference.

The lecture's one-time set-up check. On a private float64 copy of the network, for a few sampled
weights per layer: the analytic gradient from autograd, and the numerical one
(L(w + h) - L(w - h)) / 2h. Their relative error |a - n| / max(|a|, |n|) tells (CS231n):

* above 1e-2: the gradient is probably wrong;
* 1e-2 to 1e-4: uncomfortable;
* 1e-4 to 1e-7: fine for a loss with kinks (ReLU, max pooling), too high for a smooth one;
* below 1e-7: as good as it gets.

Kinks: when w ± h lands on two sides of a ReLU's zero or changes which input a max pooling picks,
the finite difference measures a different function than the derivative at w; those samples are
counted as "crossed a kink" and may exceed the thresholds without a bug.
"""

from __future__ import annotations


from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hooks import forward_hooks
from .network import private_copy

THRESHOLDS = ((1e-7, "excellent"), (1e-4, "fine with kinks, too high for a smooth loss"),
              (1e-2, "uncomfortable"), (float("inf"), "probably wrong"))
"""(upper bound of the relative error, verdict), in order."""

KINK_TYPES = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.MaxPool2d)


def verdict(relative_error: float) -> str:
    """The lecture's reading of a relative error."""
    return next(text for bound, text in THRESHOLDS if relative_error < bound)


@dataclass
class GradCheckRow:
    """One parameter tensor: its sampled entries' relative errors."""

    parameter: str
    samples: int
    max_relative_error: float
    median_relative_error: float
    kink_crossings: int  # samples where w ± h crossed a ReLU / max-pooling kink
    max_error_without_kinks: float

    @property
    def verdict(self) -> str:
        return verdict(self.max_error_without_kinks if self.kink_crossings else self.max_relative_error)


@dataclass
class GradCheckReport:
    rows: list[GradCheckRow]
    step: float
    has_kinks: bool

    @property
    def max_relative_error(self) -> float:
        return max(r.max_relative_error for r in self.rows)

    @property
    def explanation(self) -> str:
        text = (f"Centred differences with h = {self.step:g} in float64 on sampled weights. A smooth loss gives "
                "relative errors around 1e-8 here (h balances truncation, h², against rounding, 1e-16/h); above 1e-2 the backward pass is probably wrong.")
        if self.has_kinks:
            text += (" This network has kinks (ReLU or max pooling): where w ± h crosses one, the finite "
                     "difference differs from the derivative and the error can exceed 1e-7 (even 1e-2) without "
                     "any bug; such samples are counted separately.")
        return text


def relative_error(analytic: Tensor, numeric: Tensor, floor: float = 1e-12) -> Tensor:
    """|a - n| / max(|a|, |n|), and 0 where both are below ``floor``."""
    scale = torch.maximum(analytic.abs(), numeric.abs())
    return torch.where(scale < floor, torch.zeros_like(scale), (analytic - numeric).abs() / scale.clamp_min(floor))


def _kink_signature(model: nn.Module) -> tuple[dict[str, Callable], list[Tensor]]:
    """Forward hooks recording, per kink module, which side of each kink the forward pass was on."""
    seen: list[Tensor] = []

    def relu_hook(module, inputs, output):
        seen.append(inputs[0] > 0)

    def pool_hook(module, inputs, output):
        _, idx = F.max_pool2d(inputs[0], module.kernel_size, module.stride, module.padding, module.dilation,
                              module.ceil_mode, return_indices=True)
        seen.append(idx)

    hooks = {name: (pool_hook if isinstance(m, nn.MaxPool2d) else relu_hook)
             for name, m in model.named_modules() if isinstance(m, KINK_TYPES)}
    return hooks, seen


def gradient_check(model: nn.Module, x: Tensor, y: Tensor, per_layer: int = 5, step: float = 1e-5,
                   seed: int = 0, loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy) -> GradCheckReport:
    """Compare autograd's gradient of ``loss_fn(model(x), y)`` with centred differences.

    Works on a float64 copy of ``model`` in eval mode (the model itself is untouched).

    Args:
        x: a small input batch (N, C, H, W); y: its targets.
        per_layer: weights sampled per parameter tensor (not all: one sample costs two forward passes).
        step: h of the centred difference.
        seed: picks the sampled entries.

    Returns:
        One row per parameter tensor, with the relative errors of its samples.
    """
    net = private_copy(model).double().eval()
    x, generator = x.double(), torch.Generator().manual_seed(seed)
    params = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_fn(net(x), y), [p for _, p in params])
    hooks, seen = _kink_signature(net)
    has_kinks = bool(hooks)
    rows = []
    with torch.no_grad(), forward_hooks(net, hooks):
        for (name, p), g in zip(params, grads):
            flat, gflat = p.view(-1), g.reshape(-1)
            picks = torch.randperm(flat.numel(), generator=generator)[:per_layer]
            errors, kinked = [], []
            for i in picks.tolist():
                original = float(flat[i])
                flat[i] = original + step
                seen.clear()
                plus = float(loss_fn(net(x), y))
                sig_plus = list(seen)
                flat[i] = original - step
                seen.clear()
                minus = float(loss_fn(net(x), y))
                sig_minus = list(seen)
                flat[i] = original
                numeric = torch.tensor((plus - minus) / (2 * step), dtype=torch.float64)
                errors.append(float(relative_error(gflat[i], numeric)))
                kinked.append(any(not torch.equal(a, b) for a, b in zip(sig_plus, sig_minus)))
            errs = torch.tensor(errors, dtype=torch.float64)
            clean = [e for e, k in zip(errors, kinked) if not k]
            rows.append(GradCheckRow(name, len(errors), float(errs.max()), float(errs.median()), sum(kinked),
                                     max(clean) if clean else 0.0))
    return GradCheckReport(rows, step, has_kinks)
