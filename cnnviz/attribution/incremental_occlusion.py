"""Occlusion by incremental inference (Krypton: Nakandala, Kumar & Papakonstantinou, SIGMOD 2019).

An occluding patch changes only a small region of each early layer's output, its projective field.
So the clean image's activations are recorded once (``op_graph.capture_graph``) and, for each batch
of window positions, every layer recomputes only a box around that region:

* the input's region is the window itself;
* a convolution or pooling with kernel k, stride s, padding p, dilation d maps input rows [a, b)
  to output rows [ceil((a + p - d(k-1)) / s), floor((b - 1 + p) / s) + 1), clipped to the map; to
  compute them it reads a crop of its input (the clean activation with the changed box pasted in,
  padded by hand with what the real padding holds) and runs without padding;
* pointwise operations keep the region; additions and channel concatenations take the union;
* anything else (global pooling, flatten, linear...) and any box covering most of its map
  (``FULL_AREA``) switch to the full computation from there on.

Boxes have one size per layer (the largest region over all window positions, moved inwards at the
borders), so a batch of positions is one tensor op per layer. Every value outside a box equals the
clean one, so the result is exact up to rounding.

Bounded approximation (``tolerance`` > 0): the deep layers, where the field covers the whole map and
nothing is saved, can be replaced by their first-order Taylor expansion around the clean image. The
network is cut at a node every path from input to output passes through (``cut_points``: a block's
output); up to the cut everything is exact (incremental), beyond it the score changes by
gradient · (change of the cut's activation), the gradients taken once on the clean image. Which cut:
one batch of window positions spread over the image runs exactly, and the earliest (cheapest) cut
whose first-order score changes stay within ``tolerance`` of the exact ones on that sample (RMS
error relative to the exact changes' standard deviation) is used for the other positions; none: the
map stays exact. The sample keeps its exact scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from .op_graph import Graph, Ref, UnsupportedGraph, capture_graph, channels_last_convolutions, fold_recorded_batch_norms

FULL_AREA = 0.7
"""A box covering this fraction of its map (or more) is computed in full instead."""

CALIBRATION_SAMPLE = 16
"""Window positions, spread over the image, that run exactly to place the first-order cut: each costs a
whole forward pass beyond the cut, so few (with 8, the cut chosen on ResNet-18 moved later)."""


@dataclass
class Region:
    """Where one node's output differs from the clean pass, per window position.

    Attributes:
        state: "clean" (never changes), "box" (changes inside a fixed-size box) or "full".
        rows, cols: (P, 2) int arrays, the changed rows [r0, r1) and columns [c0, c1) per position
            (empty as (0, 0)); for "box" only.
        size: (h, w) of the box.
        origin: (P, 2) top-left corner of each position's box, inside the map.
        shape: the node's output shape in the clean pass.
    """

    state: str
    rows: np.ndarray | None = None
    cols: np.ndarray | None = None
    size: tuple[int, int] = (0, 0)
    origin: np.ndarray | None = None
    shape: tuple[int, ...] = ()


@dataclass
class Plan:
    """Regions of every node for a set of window positions, and the work they save.

    Attributes:
        regions: one ``Region`` per node of the graph.
        costs: multiply-adds of each node in one full pass (convolutions, poolings, linear layers).
        saving: fraction of one full pass's multiply-adds that exact incremental inference skips.
        cut: the node beyond which the first-order tail took over (None: exact to the output).
        cut_saving: the fraction skipped with that cut, on average over all window positions (the
            sample ran exactly).
    """

    regions: list[Region]
    costs: list[float]
    saving: float
    cut: int | None = None
    cut_saving: float | None = None

    def depth_of(self, cut: int | None) -> float:
        """Fraction of one full pass's multiply-adds up to and including node ``cut`` (None: 1)."""
        return 1.0 if cut is None else sum(self.costs[: cut + 1]) / (sum(self.costs) or 1.0)

    def saving_to(self, cut: int | None, graph: Graph) -> float:
        """Fraction of one full pass's multiply-adds skipped when replaying the nodes up to ``cut``
        only (None: all of them)."""
        last = len(graph.nodes) if cut is None else cut + 1
        spent = 0.0
        for node, region, cost in zip(graph.nodes[:last], self.regions[:last], self.costs[:last]):
            if region.state == "full":
                spent += cost
            elif region.state == "box" and node.kind == "window":
                spent += cost * region.size[0] * region.size[1] / (region.shape[2] * region.shape[3])
        return 1.0 - spent / (sum(self.costs) or 1.0)


def _span(a: np.ndarray, b: np.ndarray, k: int, s: int, p: int, d: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Output range [lo, hi) of a window op reached by input range [a, b) (empty -> (0, 0))."""
    lo = np.clip(-((d * (k - 1) - a - p) // s), 0, size)  # ceil((a + p - d(k-1)) / s)
    hi = np.clip((b - 1 + p) // s + 1, 0, size)
    empty = (a >= b) | (lo >= hi)
    return np.where(empty, 0, lo), np.where(empty, 0, hi)


def _box(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, ...], fixed: bool = False) -> Region:
    """A "box" region (or "clean" when nothing changes, "full" when the box covers most of the map)."""
    height, width = shape[-2:]
    if not ((rows[:, 1] > rows[:, 0]) & (cols[:, 1] > cols[:, 0])).any():
        return Region("clean", shape=shape)
    h, w = int((rows[:, 1] - rows[:, 0]).max()), int((cols[:, 1] - cols[:, 0]).max())
    if not fixed and h * w >= FULL_AREA * height * width:
        return Region("full", shape=shape)
    origin = np.stack([np.minimum(rows[:, 0], height - h), np.minimum(cols[:, 0], width - w)], axis=1)
    return Region("box", rows, cols, (h, w), origin, shape)


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, Tensor) else ()


def _cost(node: Any) -> float:
    """Multiply-adds of one node in one full pass (0 for cheap pointwise operations)."""
    shape = _shape(node.clean)
    if node.kind == "window":
        g = node.window
        return g.kernel[0] * g.kernel[1] * (g.params["weight"].shape[1] if g.op == "conv" else 1) * math.prod(shape[1:])
    if node.func is torch.nn.functional.linear and isinstance(node.args[1] if len(node.args) > 1 else None, Tensor):
        return float(node.args[1].numel() * math.prod(shape[:-1]))
    return 0.0


def cut_points(graph: Graph) -> list[int]:
    """Nodes that every path from the input to the output passes through (the input, block
    outputs, every layer of a plain chain), in order."""
    output = graph.output.node
    jumped = np.zeros(len(graph.nodes) + 1, dtype=np.int64)
    for j, node in enumerate(graph.nodes[: output + 1]):
        for i in node.inputs:
            if j - i > 1:  # an edge over the nodes between i and j
                jumped[i + 1] += 1
                jumped[j] -= 1
    covered = np.cumsum(jumped)[: output + 1]
    reaches = np.zeros(len(graph.nodes), dtype=bool)  # nodes the output depends on
    reaches[output] = True
    for j in range(output, -1, -1):
        if reaches[j]:
            reaches[graph.nodes[j].inputs] = True
    return [k for k in range(output + 1) if covered[k] == 0 and reaches[k]]


def _cap(span: np.ndarray, size: int, field: float) -> np.ndarray:
    """Spans (P, 2) longer than ``field`` of ``size`` shrunk to that length around their centre."""
    cap = max(1, math.ceil(field * size))
    lo, hi = span[:, 0], span[:, 1]
    start = np.clip(np.round((lo + hi - cap) / 2).astype(np.int64), 0, max(0, size - cap))
    longer = hi - lo > cap
    return np.stack([np.where(longer, start, lo), np.where(longer, start + cap, hi)], axis=1)


def plan_regions(graph: Graph, positions: np.ndarray, window: tuple[int, int], field: float = 1.0) -> Plan:
    """Propagate each window position's changed region through the graph.

    Args:
        graph: from ``capture_graph``.
        positions: (P, 2) top-left corners of the windows.
        window: (height, width) of the window.
        field: largest fraction of a map's side that a window op's changed region may span (1:
            exact). Less is Krypton's projective-field threshold: the changes outside it are
            ignored (they are small, far from the window), and deep layers stay boxes.

    Returns:
        the ``Plan``.
    """
    positions = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    regions: list[Region] = []
    for node in graph.nodes:
        shape = _shape(node.clean)
        inputs = [regions[i] for i in node.inputs]
        if node.kind == "input":
            rows = np.stack([positions[:, 0], positions[:, 0] + window[0]], axis=1)
            cols = np.stack([positions[:, 1], positions[:, 1] + window[1]], axis=1)
            regions.append(_box(rows, cols, shape, fixed=True))
            continue
        if all(r.state == "clean" for r in inputs):
            region = Region("clean", shape=shape)
        elif any(r.state == "full" for r in inputs) or node.kind == "other":
            region = Region("full", shape=shape)
        elif node.kind == "pointwise":
            region = Region(**{**inputs[0].__dict__, "shape": shape})
        elif node.kind == "window":
            (source,), g = inputs, node.window
            rows, cols = (np.stack(_span(getattr(source, dim)[:, 0], getattr(source, dim)[:, 1], g.kernel[i], g.stride[i],
                                         g.padding[i], g.dilation[i], shape[2 + i]), axis=1)
                          for i, dim in enumerate(("rows", "cols")))
            if field < 1:
                rows, cols = _cap(rows, shape[2], field), _cap(cols, shape[3], field)
            region = _box(rows, cols, shape)
        else:  # join: the union of the changed regions
            changed = [r for r in inputs if r.state == "box"]
            nonempty = [(r.rows[:, 1] > r.rows[:, 0]) & (r.cols[:, 1] > r.cols[:, 0]) for r in changed]
            any_change = np.any(nonempty, axis=0)
            bounds = []
            for dim in ("rows", "cols"):
                lo = np.min([np.where(m, getattr(r, dim)[:, 0], np.iinfo(np.int64).max) for r, m in zip(changed, nonempty)], axis=0)
                hi = np.max([np.where(m, getattr(r, dim)[:, 1], -1) for r, m in zip(changed, nonempty)], axis=0)
                bounds.append(np.stack([np.where(any_change, lo, 0), np.where(any_change, hi, 0)], axis=1))
            region = _box(bounds[0], bounds[1], shape)
        regions.append(region)
    plan = Plan(regions, [_cost(node) for node in graph.nodes], 0.0)
    plan.saving = plan.saving_to(None, graph)
    return plan


def _to_flat(value: Tensor) -> Tensor:
    """(1, C, H, W) -> (H*W, C): positions as rows, for ``index_select``."""
    return value[0].permute(1, 2, 0).reshape(-1, value.shape[1])


class _Replay:
    """Runs the graph for batches of window positions, box by box (see the module docstring)."""

    def __init__(self, graph: Graph, plan: Plan, background: Tensor) -> None:
        self.graph, self.plan = graph, plan
        self.regions = plan.regions
        self.nodes = graph.nodes
        self.background = _to_flat(background[None].to(graph.nodes[0].clean.dtype))
        self.flat: dict[tuple, tuple[Tensor, int, int, int]] = {}
        self.device = background.device
        self.origins = [torch.from_numpy(r.origin).to(self.device) if r.origin is not None else None for r in self.regions]
        self.last_use = {i: i for i in range(len(self.nodes))}
        for i, node in enumerate(self.nodes):
            for j in node.inputs:
                self.last_use[j] = i
        self.last_use[graph.output.node] = len(self.nodes)
        self.pads: dict[int, tuple[int, int, int, int]] = {}
        for i, (node, region) in enumerate(zip(self.nodes, self.regions)):
            if node.kind == "window" and region.state == "box":  # the real padding, and a ceil-mode overhang
                g, size, out = node.window, self.regions[node.inputs[0]].shape[-2:], region.shape[-2:]
                reach = [(o - 1) * s - p + d * (k - 1) + 1 - n
                         for o, s, p, d, k, n in zip(out, g.stride, g.padding, g.dilation, g.kernel, size)]
                self.pads[i] = (g.padding[0], max(0, reach[0]), g.padding[1], max(0, reach[1]))

    def reorder(self, order: np.ndarray) -> None:
        """Process the window positions in this order from now on (batches are slices of it)."""
        index = torch.from_numpy(order).to(self.device)
        self.origins = [None if o is None else o[index] for o in self.origins]

    # ---------------------------------------------------------------- reading activations

    def _clean_source(self, u: int, pads: tuple[int, int, int, int], value: float) -> tuple[Tensor, int]:
        """Node ``u``'s clean activation padded by hand (top, bottom, left, right) with ``value``, as
        (rows, C) for ``index_select``; with its padded width. Built once per call."""
        key = (u, pads, value)
        if key not in self.flat:
            clean = self.nodes[u].clean
            if any(pads):
                top, bottom, left, right = pads
                clean = torch.nn.functional.pad(clean, (left, right, top, bottom), value=value)
            self.flat[key] = (_to_flat(clean), clean.shape[-1])
        return self.flat[key]

    def _crop(self, u: int, values: dict, batch: slice, origin: Tensor, size: tuple[int, int],
              pads: tuple[int, int, int, int] = (0, 0, 0, 0), pad_value: float = 0.0) -> Tensor:
        """Node ``u``'s output as each position of the batch changes it, cropped to ``size`` at
        ``origin`` (B, 2), which may reach past the map by up to ``pads`` (top, bottom, left, right),
        where it holds ``pad_value``. Returns (B, C, h, w), channels-last."""
        (h, w), n = size, origin.shape[0]
        flat, padded_width = self._clean_source(u, pads, pad_value)
        rows = origin[:, :1] + pads[0] + torch.arange(h, device=origin.device)
        cols = origin[:, 1:] + pads[2] + torch.arange(w, device=origin.device)
        crop = flat.index_select(0, (rows[:, :, None] * padded_width + cols[:, None, :]).reshape(-1))
        if self.regions[u].state == "box":
            self._paste(crop, values[u], self.origins[u][batch] - origin, (h, w))
        return crop.view(n, h, w, -1).permute(0, 3, 1, 2)

    @staticmethod
    def _paste(target: Tensor, box: Tensor, offset: Tensor, size: tuple[int, int]) -> None:
        """Write ``box`` (B, C, hb, wb) into ``target`` ((B*h*w, C) rows) at ``offset`` (B, 2), clipped."""
        (h, w), (n, channels, hb, wb) = size, box.shape
        rows = offset[:, :1] + torch.arange(hb, device=offset.device)
        cols = offset[:, 1:] + torch.arange(wb, device=offset.device)
        index = torch.arange(n, device=offset.device)[:, None, None] * (h * w) + rows[:, :, None] * w + cols[:, None, :]
        source = box.permute(0, 2, 3, 1).reshape(-1, channels)
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        if bool(inside.all()):
            target.index_copy_(0, index.reshape(-1), source)
        else:
            target.index_copy_(0, index[inside], source.index_select(0, inside.reshape(-1).nonzero()[:, 0]))

    def _full(self, ref: Ref, values: dict, full: dict, batch: slice) -> Any:
        """The whole output of a node for each position of the batch (B, ...)."""
        region = self.regions[ref.node]
        n = batch.stop - batch.start
        if region.state == "full":
            value = values[ref.node]
        elif region.state == "clean":
            clean = self.nodes[ref.node].clean
            value = tuple(c.expand(n, *c.shape[1:]) for c in clean) if isinstance(clean, tuple) \
                else clean.expand(n, *clean.shape[1:])
        elif ref.node in full:
            value = full[ref.node]
        else:
            clean = self.nodes[ref.node].clean
            _, channels, height, width = clean.shape
            whole = clean.permute(0, 2, 3, 1).expand(n, height, width, channels).contiguous()
            self._paste(whole.view(-1, channels), values[ref.node], self.origins[ref.node][batch], (height, width))
            value = full[ref.node] = whole.permute(0, 3, 1, 2)
        return value if ref.item is None else value[ref.item]

    # ---------------------------------------------------------------- running

    def run(self, batch: slice, stop: int | None = None, probes: dict[int, Callable[[Any], None]] | None = None) -> Any:
        """Replay the graph for the window positions ``batch``.

        Args:
            stop: stop after this node and return its value.
            probes: node -> called with that node's value as it is computed.

        Returns:
            the network's output (B, K), or with ``stop``, that node's value. A node's value is its
            box (B, C, h, w) for a "box" region, else the whole tensor (B, ...).
        """
        values: dict[int, Any] = {}
        full: dict[int, Tensor] = {}
        n = batch.stop - batch.start
        last = len(self.nodes) - 1 if stop is None else stop
        for i, (node, region) in enumerate(zip(self.nodes[: last + 1], self.regions)):
            if node.kind == "input":
                values[i] = self._input_boxes(batch, region)
            elif region.state == "full":
                values[i] = _call(node.func, node.args, node.kwargs, lambda ref: self._full(ref, values, full, batch))
            elif region.state == "box":
                origin = self.origins[i][batch]
                if node.kind == "pointwise":
                    values[i] = _call(node.func, node.args, node.kwargs, lambda ref: values[ref.node])
                elif node.kind == "window":
                    g = node.window
                    h, w = region.size
                    crop_size = ((h - 1) * g.stride[0] + g.dilation[0] * (g.kernel[0] - 1) + 1,
                                 (w - 1) * g.stride[1] + g.dilation[1] * (g.kernel[1] - 1) + 1)
                    start = origin * torch.tensor(g.stride, device=origin.device) - torch.tensor(g.padding, device=origin.device)
                    values[i] = g.run(self._crop(node.inputs[0], values, batch, start, crop_size,
                                                 self.pads[i], g.pad_value))
                else:  # join
                    values[i] = _call(node.func, node.args, node.kwargs,
                                      lambda ref: self._crop(ref.node, values, batch, origin, region.size))
            if probes and i in probes:
                probes[i](values[i] if region.state != "clean" else self._full(Ref(i), values, full, batch))
            if i == stop:
                return values[i] if region.state != "clean" else self._full(Ref(i), values, full, batch)
            for j in [*node.inputs, i]:
                if self.last_use[j] == i:
                    values.pop(j, None)
                    full.pop(j, None)
        output = self._full(self.graph.output, values, full, batch)
        if output.shape[0] != n:
            raise UnsupportedGraph(f"the output has {output.shape[0]} rows for {n} images (a batch size fixed in forward)")
        return output

    def tail_change(self, cut: int, value: Tensor, gradient: Tensor, batch: slice) -> Tensor:
        """First-order change of the score: sum of gradient * (value - clean) over the cut's
        changed box (or whole tensor), (B,) float32."""
        region, clean = self.regions[cut], self.nodes[cut].clean
        if region.state != "box":
            return ((value.float() - clean.float()) * gradient).flatten(1).sum(dim=1)
        origin, (h, w) = self.origins[cut][batch], region.size
        rows = origin[:, :1] + torch.arange(h, device=origin.device)
        cols = origin[:, 1:] + torch.arange(w, device=origin.device)
        index = (rows[:, :, None] * clean.shape[-1] + cols[:, None, :]).reshape(-1)
        shape = (origin.shape[0], h, w, -1)
        before = _to_flat(clean).index_select(0, index).view(shape).float()
        weights = _to_flat(gradient).index_select(0, index).view(shape)
        return ((value.permute(0, 2, 3, 1).float() - before) * weights).flatten(1).sum(dim=1)

    def _input_boxes(self, batch: slice, region: Any) -> Tensor:
        """The occluded windows: the baseline's values there, (B, C, wh, ww)."""
        h, w = region.size
        origin = self.origins[0][batch]
        width = self.nodes[0].clean.shape[-1]
        rows = origin[:, :1] + torch.arange(h, device=origin.device)
        cols = origin[:, 1:] + torch.arange(w, device=origin.device)
        boxes = self.background.index_select(0, (rows[:, :, None] * width + cols[:, None, :]).reshape(-1))
        return boxes.view(origin.shape[0], h, w, -1).permute(0, 3, 1, 2)


def _call(func: Callable, args: tuple, kwargs: dict, value_of: Callable[[Ref], Any]) -> Any:
    """Call a recorded function with its ``Ref`` arguments replaced by ``value_of(ref)``."""

    def fill(value: Any) -> Any:
        if isinstance(value, Ref):
            return value_of(value)
        if isinstance(value, (list, tuple)):
            return type(value)(fill(v) for v in value)
        return value

    return func(*fill(args), **{k: fill(v) for k, v in kwargs.items()})


def _first_global(graph: Graph, plan: Plan) -> str:
    """Names the first operation that turns a changed box into a whole changed map while maps are
    still spatial (e.g. squeeze-and-excitation's global pooling)."""
    for k, (node, region) in enumerate(zip(graph.nodes, plan.regions)):
        if region.state == "full" and node.kind == "other" and any(plan.regions[i].state == "box" for i in node.inputs):
            later = [r for r in plan.regions[k:] if len(r.shape) == 4 and r.shape[2] * r.shape[3] > 1]
            if later:
                name = getattr(node.func, "__name__", "an operation")
                return f"{name} inside the network (as in squeeze-and-excitation) makes every later map change at once"
    return "the changed regions soon cover whole maps"


def tail_gradients(graph: Graph, nodes: list[int], score: Callable[[Tensor], Tensor]) -> dict[int, Tensor]:
    """Gradient of the score with respect to each listed node's activation on the clean image: one
    replay of the recorded operations under autograd and one ``torch.autograd.grad`` with respect
    to those activations only (no parameter gets a gradient). Returns float32 tensors."""
    probes: dict[int, Tensor] = {}
    with torch.enable_grad():
        values: dict[int, Any] = {}

        def value_of(ref: Ref) -> Any:
            value = values[ref.node]
            return value if ref.item is None else value[ref.item]

        for i, node in enumerate(graph.nodes[: graph.output.node + 1]):
            if node.kind == "input":
                value = node.clean.detach().clone().requires_grad_(True)
            else:
                value = _call(node.func, node.args, node.kwargs, value_of)
            if i in nodes:
                probes[i] = value
                value = value * 1  # later in-place operations change this copy, not the probe
            values[i] = value
        gradients = torch.autograd.grad(score(value_of(graph.output).float()).sum(), [probes[i] for i in nodes],
                                        allow_unused=True)
    return {i: torch.zeros_like(probes[i], dtype=torch.float32) if g is None else g.float()
            for i, g in zip(nodes, gradients)}


def _relative_error(estimate: Tensor, exact: Tensor) -> float:
    """RMS error of ``estimate`` relative to the standard deviation of ``exact`` (0 when both agree)."""
    error = float((estimate - exact).pow(2).mean().sqrt())
    spread = float(exact.std()) if exact.numel() > 1 else 0.0
    return 0.0 if error == 0 else error / spread if spread > 0 else math.inf


def incremental_scores(
    network: nn.Module,
    image: Tensor,
    background: Tensor,
    positions: np.ndarray,
    window: tuple[int, int],
    score: Callable[[Tensor], Tensor],
    batch_size: int = 16,
    tolerance: float = 0.0,
    min_saving: float = 0.0,
    progress: Callable[[int], None] | None = None,
    field: float = 1.0,
) -> tuple[Tensor, Tensor, Plan]:
    """The score of the clean image and of every occluded copy, by incremental inference.

    Args:
        network: the classifier (not modified; run in the calling thread only).
        image: (1, C, H, W) in the network's dtype.
        background: (C, H, W) values the occluded pixels take.
        positions: (P, 2) window corners.
        window: (height, width).
        score: network output (B, K) float32 -> score (B,), e.g. one class's logit (with
            ``tolerance=0`` any (B, ...) tensor, e.g. the whole output).
        batch_size: window positions per replay (the sample that places the cut has at most
            ``CALIBRATION_SAMPLE``).
        tolerance: largest error of the first-order tail on the sample, relative to the spread of
            the exact score changes (0: exact, see the module docstring).
        min_saving: raise ``UnsupportedGraph`` when exact incremental inference would skip less
            than this fraction of the work.
        progress: called with the number of positions done after each batch.

    Returns:
        (clean score (1,), occluded scores (P,), the plan with its cut), float32.

    Raises:
        UnsupportedGraph: the forward pass cannot be replayed region-wise, or would save too little.
    """
    graph = channels_last_convolutions(fold_recorded_batch_norms(capture_graph(network, image)))
    plan = plan_regions(graph, positions, window, field)
    if plan.saving < min_saving:
        raise UnsupportedGraph(f"{_first_global(graph, plan)}, so it would skip only {plan.saving:.0%} of the work")
    clean_output = graph.nodes[graph.output.node].clean
    clean = score((clean_output if graph.output.item is None else clean_output[graph.output.item]).float())
    replay = _Replay(graph, plan, background)
    count = len(positions)
    scores = torch.empty(count, *clean.shape[1:], device=clean.device)
    order = np.arange(count)
    done = 0
    with torch.inference_mode():
        if tolerance > 0 and count > batch_size:
            candidates = [c for c in cut_points(graph) if c != graph.output.node
                          and plan.saving_to(c, graph) > plan.saving + 0.05]
            if candidates:
                with torch.inference_mode(False):
                    gradients = tail_gradients(graph, candidates, score)
                sample = np.unique(np.linspace(0, count - 1, min(batch_size, CALIBRATION_SAMPLE)).round().astype(np.int64))
                order = np.concatenate([sample, np.setdiff1d(order, sample)])
                replay.reorder(order)
                first = slice(0, len(sample))
                estimates: dict[int, Tensor] = {}
                probes = {c: (lambda value, c=c: estimates.__setitem__(
                    c, replay.tail_change(c, value, gradients[c], first))) for c in candidates}
                scores[: len(sample)] = score(replay.run(first, probes=probes).float())
                exact_change = scores[: len(sample)] - clean
                plan.cut = next((c for c in candidates if _relative_error(estimates[c], exact_change) <= tolerance), None)
                done = len(sample)
                if progress is not None:
                    progress(done)
        gradient = None if plan.cut is None else gradients[plan.cut]
        plan.cut_saving = (done * plan.saving + (count - done) * plan.saving_to(plan.cut, graph)) / count
        for start in range(done, count, batch_size):
            batch = slice(start, min(start + batch_size, count))
            if gradient is None:
                scores[batch] = score(replay.run(batch).float())
            else:
                scores[batch] = clean + replay.tail_change(plan.cut, replay.run(batch, plan.cut), gradient, batch)
            if progress is not None:
                progress(batch.stop)
    result = torch.empty_like(scores)
    result[torch.from_numpy(order).to(scores.device)] = scores
    return clean, result, plan
