"""Occlusion sensitivity (Zeiler & Fergus, 2014): the public entry points and the choice of engine.

Two engines compute the occluded copies' scores (``engine``):

* "incremental" (``incremental_occlusion``): the clean activations are cached once and every layer
  recomputes only the box each window can change (Krypton, Nakandala et al., 2019);
* "batched" (``batched_occlusion``): every occluded copy runs through the whole network.

"auto" takes the incremental engine where it skips a useful part of the work and falls back to the
batched one otherwise (networks with global pooling inside, such as squeeze-and-excitation in
MobileNet and EfficientNet, change every later map at once); ``OcclusionMap.note`` says which ran.

One knob trades fidelity for speed, ``tolerance``: the incremental engine may replace the deepest
layers by their first-order Taylor expansion around the clean image, as far as a sample of windows
computed exactly shows an error within that bound (see ``incremental_occlusion``).
``precision="float32"`` is exact unless ``tolerance`` says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..device import describe_device, fast_dtype
from ..folding import fast_inference_copy
from .batched_occlusion import _pair, batched_outputs, bf16_inference_copy, bf16_supported, occlusion_positions  # noqa: F401
from .incremental_occlusion import incremental_scores
from .op_graph import UnsupportedGraph
from .targets import Progress, Target, _check_input, target_indices

Engine = Literal["auto", "incremental", "batched"]

_REDUCED = {"bfloat16": torch.bfloat16, "float16": torch.float16}
"""``precision`` names of the fast copy's reduced precisions."""

MIN_SAVING = 0.25
"""``engine="auto"`` runs the batched engine when incremental inference would skip less than this
fraction of the convolutions' work."""

DEFAULT_TOLERANCE = 0.1
"""``tolerance`` of the default (``precision="auto"``) map: first-order score changes within 10% (RMS,
relative to their spread) of the exact ones on the sample, which keeps the map's Pearson correlation
with the exact one above 0.99 in bench/."""

DEFAULT_FIELD = 0.7
"""``field`` of the default map: a window's changes are followed over at most 70% of each map's side
(Krypton's projective-field threshold τ); beyond, the clean activations stand."""

FAST_PREVIEW = 0.3
"""``tolerance`` of the page's "fast preview"."""

OCCLUSION_MODES: dict[str, tuple[dict, str]] = {
    "default": ({}, "changes followed over at most 70 % of each map's side, first-order beyond the block "
                    "where that stays within 10 % on a sample; Pearson ≥ 0.99 with the exact map in bench/"),
    "fast preview": ({"tolerance": FAST_PREVIEW}, "30 % error bound; typically Pearson ≈ 0.98 with the exact map"),
    "exact": ({"precision": "float32", "tolerance": 0.0}, "float32, every layer recomputed where the window reaches"),
}
"""The occlusion settings the Saliency page offers: name -> (``occlusion`` keyword arguments, what to expect)."""


@dataclass
class OcclusionMap:
    """An occlusion map and how it was computed.

    Attributes:
        heat: (N, H, W) float32 map.
        engine: "incremental" or "batched" (the one that ran for the last image).
        precision: "float32", "bfloat16" or "float16" (the fast copy on a GPU without bfloat16).
        tolerance: the error bound used (0: exact; see ``occlusion``).
        saving: fraction of one full pass's multiply-adds that each occluded copy skipped (None:
            batched).
        note: one line for the viewer: engine, precision, and why the batched engine ran.
    """

    heat: Tensor
    engine: str
    precision: str
    tolerance: float
    saving: float | None
    note: str


def occlusion_map(
    model: nn.Module,
    x: Tensor,
    target: Target,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    baseline: float | Tensor = 0.0,
    score: Literal["logit", "prob"] = "logit",
    precision: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    batch_size: int = 32,
    progress: Progress | None = None,
    engine: Engine = "auto",
    tolerance: float | None = None,
    field: float | None = None,
) -> OcclusionMap:
    """Occlusion sensitivity (Zeiler & Fergus, 2014), with the engine's report (see ``occlusion``).

    ``field`` (incremental engine): the largest fraction of a map's side a window's changes are
    followed over (None: ``DEFAULT_FIELD`` for the default map, else 1, exact).

    Raises:
        ValueError: bad window, stride, score or limit; ``engine="incremental"`` on a network it
            cannot replay.
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
    if engine not in ("auto", "incremental", "batched"):
        raise ValueError('engine must be "auto", "incremental" or "batched".')
    if field is None:  # the default map limits the field; an explicit tolerance or float32 is exact unless told
        field = DEFAULT_FIELD if tolerance is None and precision != "float32" else 1.0
    if tolerance is None:
        tolerance = 0.0 if precision == "float32" else DEFAULT_TOLERANCE
    if not 0 < field <= 1:
        raise ValueError("field must be in (0, 1]: the largest fraction of a map's side a window's changes may span.")
    if not tolerance >= 0:
        raise ValueError("tolerance must be 0 (exact) or more: the first-order tail's allowed relative error.")
    # the fast copy: bfloat16 where native on a CPU, bfloat16 or float16 on a GPU (cnnviz.device.fast_dtype)
    fast = fast_dtype(x.device) if precision == "auto" else _REDUCED.get(precision)
    use_fast = fast is not None
    # the incremental engine gathers small boxes, which pays on a CPU; a GPU runs every copy in full faster
    incremental = engine == "incremental" or (engine == "auto" and x.device.type == "cpu")
    positions = occlusion_positions((h, w), window, stride)
    fill = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    fill = fill.expand(c, h, w) if fill.dim() <= 3 else fill
    targets = target_indices(target, n)
    network, dtype = (fast_inference_copy(model, example=x[:1], dtype=fast), fast) if use_fast else (model, x.dtype)

    deltas = torch.empty(n, len(positions), device=x.device)
    used, saving, why, cut, depth = engine if incremental else "batched", None, "", None, 1.0
    if engine == "auto" and not incremental:
        why = f"on {describe_device(x.device)} every copy runs in full, faster than by small boxes"
    for k in range(n):
        image = x[k : k + 1].to(dtype).contiguous(memory_format=torch.channels_last)
        background = (fill[k] if fill.dim() == 4 else fill).to(dtype)
        t = int(targets[k])

        def scores(output: Tensor, t: int = t) -> Tensor:
            return (output.softmax(dim=1) if score == "prob" else output)[:, t]

        done = k * len(positions)
        report = None if progress is None else (lambda m, done=done: progress((done + m) / (n * len(positions))))
        occluded = None
        if incremental:
            try:
                clean, occluded, plan = incremental_scores(
                    network, image, background, np.asarray(positions).reshape(-1, 2), window, scores, batch_size,
                    tolerance, MIN_SAVING if engine == "auto" else 0.0, report, field)
                used, saving, cut, depth = "incremental", plan.cut_saving, plan.cut, plan.depth_of(plan.cut)
            except UnsupportedGraph as reason:
                if engine == "incremental":
                    raise ValueError(f"Incremental occlusion cannot run on this network: {reason}.") from None
                used, saving, why, cut, depth = "batched", None, str(reason), None, 1.0
        if occluded is None:
            outputs = batched_outputs(network, image, background, positions, window, batch_size, report)
            clean, occluded = (scores(o.float()) for o in outputs)
        deltas[k] = clean - occluded
    sums = torch.zeros(n, h, w, device=x.device)
    counts = torch.zeros(h, w, device=x.device)
    for p, (i, j) in enumerate(positions):
        sums[:, i : i + window[0], j : j + window[1]] += deltas[:, p, None, None]
        counts[i : i + window[0], j : j + window[1]] += 1
    heat = torch.where(counts > 0, sums / counts.clamp(min=1), torch.zeros_like(sums))
    field = field if used == "incremental" else 1.0
    exact = cut is None and field == 1.0
    if used == "incremental":
        note = (f"incremental inference, {saving:.0%} of the work skipped"
                + ("" if field == 1.0 else f", changes beyond {field:.0%} of a map's side ignored")
                + ("" if cut is None else f", first-order Taylor beyond {depth:.0%} of the network, error ≤ {tolerance:.0%} on a sample"))
    else:
        note = "batched engine" + (f" (incremental inference does not pay here: {why})" if why else "")
    name = str(dtype).removeprefix("torch.") if use_fast else "float32"
    note += f", {name} copy with batch norms folded" if use_fast else ", float32"
    return OcclusionMap(heat, used, name, 0.0 if exact else tolerance, saving, note)


def occlusion(
    model: nn.Module,
    x: Tensor,
    target: Target,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    baseline: float | Tensor = 0.0,
    score: Literal["logit", "prob"] = "logit",
    precision: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    batch_size: int = 32,
    progress: Progress | None = None,
    engine: Engine = "auto",
    tolerance: float | None = None,
    field: float | None = None,
) -> Tensor:
    """Occlusion sensitivity (Zeiler & Fergus, 2014).

    For each window position, score(x) - score(x with the window set to ``baseline``) (all
    channels), averaged over the windows that cover each pixel. Windows are placed as Captum's
    ``Occlusion`` places them (top-left corners 0, stride, 2*stride, ... while the window fits);
    pixels no window covers get 0.

    Speed: with ``engine="auto"`` the clean image's activations are cached and each occluded copy
    recomputes only the part of each layer its window can change (incremental inference, exact up
    to rounding), where that skips enough work; otherwise every copy runs in full, in batches,
    channels-last. By default (``precision="auto"``) the deepest layers may be replaced by their
    first-order Taylor expansion within a bounded error (``tolerance``, ``DEFAULT_TOLERANCE``) and, on
    a CPU with native bfloat16, everything runs on ``bf16_inference_copy(model)`` (batch norms
    folded, bfloat16 weights); bench/ reports the map's correlation with the exact float32 one. The
    unoccluded score is computed by the same network so that rounding largely cancels.

    Args:
        window: window side in pixels, or (height, width).
        stride: step between windows, or (height, width).
        baseline: value the occluded pixels get (in the normalised input space), a number or a
            tensor broadcastable to (C, H, W).
        score: "logit" (target class logit) or "prob" (its softmax probability).
        precision: "float32" for the exact map; "bfloat16", "float16" or "auto" (the device's fast
            precision, ``cnnviz.device.fast_dtype``: bfloat16 on a CPU where native and on recent
            GPUs, float16 on other GPUs and MPS; all approximate by default).
        batch_size: window positions per pass.
        progress: called with the fraction done (0..1) after each batch.
        engine: "auto", "incremental" or "batched" (see the module docstring; "auto" runs the
            batched engine on a GPU).
        tolerance: the incremental engine runs one batch of windows spread over the image exactly,
            and beyond the earliest block output where the first-order Taylor expansion of the rest
            of the network reproduces those windows' score changes within this error (RMS, relative
            to their spread), uses that expansion for the other windows. 0 is exact. None: 0 for
            ``precision="float32"``, else ``DEFAULT_TOLERANCE``.
        field: the incremental engine follows a window's changes over at most this fraction of each
            map's side, centred on the window (Krypton's projective-field threshold; the changes
            beyond, far from the window and small, are ignored). None: ``DEFAULT_FIELD`` when
            ``tolerance`` is left to its default, else 1 (exact).

    Returns:
        (N, H, W) float32 map, on the input's device.
    """
    return occlusion_map(model, x, target, window, stride, baseline, score, precision, batch_size, progress,
                         engine, tolerance, field).heat
