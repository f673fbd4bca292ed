"""Teaching defaults: which layer and channel a page opens on, for any model.

A page's first view must show something a student can read. Batch norms, shortcut branches and bare
convolutions show half-finished computations; a block's output (a ResNet block, a Fire module, an
MBConv, or the ReLU after a convolution in a plain chain) is what the next stage of the network sees.
Channel 0 is arbitrary; the channel that responds most to the current image shows a pattern.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .hooks import forward_until
from .layers import LayerRow

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Tanh, nn.Sigmoid)
CONTAINERS = (nn.Sequential, nn.ModuleList)

# Fractions of the depth (0: first block, 1: last block) each page opens on.
DREAM_DEPTH = 0.6  # DeepDream: mid-to-deep blocks amplify parts (eyes, fur), not only strokes
FEATURE_DEPTH = 0.5  # one channel of an inner layer (Saliency, Class viz, Activations, Patches): parts and textures
INVERSION_DEPTH = 0.5  # one inversion: deep enough to lose colour and position, shallow enough to recognise
INVERSION_ROW = (0.0, 0.35, 0.7, 1.0)  # the row: first block to last, so the loss of information with depth shows
# With a classifier the row ends on the class scores instead of the last block: a small network's feature maps
# are overcomplete (the small CNN's last block keeps 8 values per pixel and inverts perfectly); its 10 scores do not.
INVERSION_ROW_WITH_SCORES = (0.0, 0.5, 1.0)


def block_outputs(model: nn.Module, rows: Sequence[LayerRow]) -> list[str]:
    """The layers whose output is a finished stage of the network, shallow to deep.

    A block is an outermost module that is neither a container (``Sequential``) nor inside another
    block: a composite module (BasicBlock, Fire, MBConv, Inception, a dense block), or an activation
    in a plain chain (VGG's ReLUs). Batch norms, convolutions before their activation, pools (a
    smaller copy of the layer before them), shortcut branches (inside a block) and 1×1 outputs are left
    out. Falls back to every spatial layer when no block qualifies.

    Args:
        model: the network.
        rows: its ``layer_table`` (output shapes come from there).

    Returns:
        Layer names in definition order, each with an (N, C, H, W) output with H·W > 1.
    """
    modules = dict(model.named_modules())
    spatial = [r.name for r in rows if r.output_shape and len(r.output_shape) == 4]
    big = [n for n in spatial if _area(rows, n) > 1]
    chosen = []
    for name in big:
        module = modules[name]
        if isinstance(module, CONTAINERS) or not _outermost(modules, name):
            continue
        has_children = any(True for _ in module.children())
        if has_children or isinstance(module, ACTIVATIONS):
            chosen.append(name)
    return chosen or big or spatial


def _area(rows: Sequence[LayerRow], name: str) -> int:
    shape = next(r.output_shape for r in rows if r.name == name)
    return int(shape[2] * shape[3])


def _outermost(modules: dict[str, nn.Module], name: str) -> bool:
    """True when every ancestor of ``name`` is a container (or the root)."""
    parts = name.split(".")
    return all(isinstance(modules[".".join(parts[:i])], CONTAINERS) for i in range(1, len(parts)))


def at_depth(names: Sequence[str], fraction: float) -> str:
    """The name at ``fraction`` of the way through ``names`` (0: first, 1: last)."""
    if not names:
        raise ValueError("No layer to choose from.")
    return names[round(min(max(fraction, 0.0), 1.0) * (len(names) - 1))]


def spread(names: Sequence[str], fractions: Sequence[float]) -> list[str]:
    """Distinct names at the given fractions of the depth, shallow to deep."""
    return list(dict.fromkeys(at_depth(names, f) for f in fractions))


def teaching_layers(model: nn.Module, rows: Sequence[LayerRow]) -> dict[str, object]:
    """Every page's default layers for ``model``: one place to read and test them.

    Returns:
        ``dream``, ``feature``, ``inversion`` (layer names) and ``inversion_row`` (a list of names,
        ending on the class scores when the network has them), ``last_block``.
    """
    blocks = block_outputs(model, rows)
    scores = class_scores_layer(rows)
    row = spread(blocks, INVERSION_ROW_WITH_SCORES) + [scores] if scores else spread(blocks, INVERSION_ROW)
    return {
        "dream": at_depth(blocks, DREAM_DEPTH),
        "feature": at_depth(blocks, FEATURE_DEPTH),
        "inversion": at_depth(blocks, INVERSION_DEPTH),
        "inversion_row": row,
        "last_block": blocks[-1],
    }


def class_scores_layer(rows: Sequence[LayerRow]) -> str | None:
    """The layer that outputs the class scores: the last one whose output is one vector per image
    ((N, K) or (N, K, 1, 1), K > 1) and that is not a flatten, or None (a features-only network)."""
    for row in reversed(rows):
        shape = row.output_shape
        if shape is None or row.type in ("Flatten", "Dropout", "Identity"):
            continue
        if len(shape) == 2 and shape[1] > 1 or len(shape) == 4 and shape[2:] == (1, 1) and shape[1] > 1:
            return row.name
        if len(shape) == 4:
            return None  # the network ends on feature maps
    return None


def strongest_channel(model: nn.Module, x: Tensor, layer: str, reduce: str = "max") -> int:
    """The channel of ``layer`` that responds most to ``x`` (1, C, H, W).

    Args:
        reduce: ``"max"`` (its strongest unit) or ``"mean"`` (its average over positions).

    Returns:
        The channel index.
    """
    with torch.inference_mode():
        act = forward_until(model, x, layer)[layer][0].flatten(1).float()  # (C, H*W)
    values = act.amax(dim=1) if reduce == "max" else act.mean(dim=1)
    return int(np.argmax(values.cpu().numpy()))


MAX_TRIED = 50  # central candidates whose neighbours are checked (a random network may have none that agree)


def typical_sample(features: np.ndarray, labels: Sequence[int], predicted: Sequence[int] | None = None, k: int = 5) -> int:
    """A typical, correctly classified sample to open the neighbours view on.

    Among the samples whose ``k`` nearest neighbours in feature space (L2) all share their label
    (and, when ``predicted`` is given, that the model classifies correctly), the one closest to its
    class's mean feature vector. The conditions are relaxed in turn when nothing meets them.

    Args:
        features: (N, D) feature vectors.
        labels: (N,) true labels.
        predicted: (N,) the model's predicted labels, or None.
        k: neighbours that must agree.

    Returns:
        The sample's index.
    """
    x = np.asarray(features, dtype=np.float32)
    y = np.asarray(labels)
    n = len(y)
    if n == 0:
        raise ValueError("No samples.")
    k = max(1, min(k, n - 1))
    correct = np.ones(n, bool) if predicted is None else np.asarray(predicted) == y
    centrality = np.empty(n)
    for label in np.unique(y):
        members = y == label
        distance = np.linalg.norm(x[members] - x[members].mean(0), axis=1)
        centrality[members] = distance / (distance.mean() or 1.0)

    def neighbours_agree(i: int) -> bool:
        distance = ((x - x[i]) ** 2).sum(1)
        distance[i] = np.inf
        return bool((y[np.argpartition(distance, k - 1)[:k]] == y[i]).all()) if n > 1 else True

    by_centrality = np.argsort(centrality, kind="stable")  # most central first; O(N·D) per candidate tried
    for i in by_centrality[:MAX_TRIED]:
        if correct[i] and neighbours_agree(int(i)):
            return int(i)
    for mask in (correct, np.ones(n, bool)):  # relaxed: no central sample's neighbours all agree
        if mask.any():
            return int(by_centrality[mask[by_centrality]][0])
    return 0  # unreachable
