"""One entry point for the page and the sanity check: run any method by name and time it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from torch import Tensor, nn

from ..display import channel_max_abs
from .averaged_gradients import completeness_gap, integrated_gradients, smoothgrad
from .sensitivity import occlusion_map
from .gradcam import default_cam_layer, grad_cam
from .gradient import vanilla_gradient
from .guided import guided_backprop
from .targets import METHODS, Progress, Target

@dataclass
class Attribution:
    """One method's result for the page.

    Attributes:
        method: one of ``METHODS``.
        raw: what the method returns, (N, C, H, W) or (N, H, W).
        heat: the map shown, (N, H, W): |.| then max over channels for per-channel methods,
            the map itself for Grad-CAM and occlusion (occlusion keeps its sign).
        seconds: wall time of the computation.
        note: anything the viewer should know (e.g. which ReLUs were guided).
    """

    method: str
    raw: Tensor
    heat: Tensor
    seconds: float
    note: str = ""


def to_heat(raw: Tensor) -> Tensor:
    """Attribution -> map shown: (N, C, H, W) -> |.| max over channels (Simonyan); (N, H, W) as is."""
    return channel_max_abs(raw) if raw.dim() == 4 else raw


def attribute(
    method: str,
    model: nn.Module,
    x: Tensor,
    target: Target,
    params: dict | None = None,
    progress: Progress | None = None,
) -> Attribution:
    """Run one method by name (see ``METHODS``) with its parameters, and time it.

    Params used: "layer" (Grad-CAM), "window", "stride", "baseline", "score", "precision", "engine",
    "tolerance", "field" (occlusion), "samples", "noise", "seed" (SmoothGrad), "steps" (integrated gradients).
    """
    params = dict(params or {})
    start = time.perf_counter()
    note = ""
    if method == "vanilla gradient":
        raw = vanilla_gradient(model, x, target)
    elif method == "guided backprop":
        raw = guided_backprop(model, x, target)
    elif method == "Grad-CAM":
        layer = params.get("layer") or default_cam_layer(model, x)
        raw = grad_cam(model, x, target, layer)
        note = f"layer {layer}"
    elif method == "occlusion":
        result = occlusion_map(
            model, x, target, params.get("window", 16), params.get("stride", 8), params.get("baseline", 0.0),
            params.get("score", "logit"), params.get("precision", "auto"), progress=progress,
            engine=params.get("engine", "auto"), tolerance=params.get("tolerance"), field=params.get("field"),
        )
        raw, note = result.heat, result.note
    elif method == "SmoothGrad":
        raw = smoothgrad(model, x, target, params.get("samples", 25), params.get("noise", 0.15), params.get("seed", 0),
                         progress=progress)
    elif method == "integrated gradients":
        raw = integrated_gradients(model, x, target, params.get("baseline"), params.get("steps", 50), progress=progress)
        sums, difference = completeness_gap(model, x, target, raw, params.get("baseline"))
        note = f"sum of attributions {float(sums[0]):.3f} vs score(x) − score(black) {float(difference[0]):.3f}"
    else:
        raise ValueError(f"Unknown method {method!r}. Choose from: {', '.join(METHODS)}.")
    return Attribution(method, raw.detach(), to_heat(raw.detach()), time.perf_counter() - start, note)
