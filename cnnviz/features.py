"""Look inside a network: feature maps, receptive fields, maximally activating patches, feature
vectors, 2-D embeddings (PCA, t-SNE), nearest neighbours, channel statistics and filter grids.

Everything observes the shared model through ``cnnviz.hooks`` context managers and runs under
``torch.no_grad``/``inference_mode``; nothing is left on the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from . import display
from .data import ImageDataset
from .device import module_device
from .hooks import forward_hooks, forward_until, get_module, record_activations
from .layers import layer_names, layer_table
from .layers import spatial_layers as spatial_layers_of_table
from .models import LoadedModel

__all__ = [
    "ActivationHit",
    "ChannelMaxima",
    "Patch",
    "ReceptiveField",
    "channel_maxima",
    "channel_stats",
    "crop_patch",
    "dead_channels",
    "embed_2d",
    "extract_features",
    "feature_map_grid",
    "feature_maps",
    "filter_grid",
    "layer_names",
    "maximally_activating_patches",
    "nearest_neighbors",
    "penultimate_layer",
    "receptive_field",
    "spatial_layers",
    "top_activations",
]

Progress = Callable[[float, str], None]


# --- feature maps ---------------------------------------------------------------------------------


MAX_TSNE_ITER = 5000
"""Most t-SNE iterations ``embed_2d`` runs (the Embeddings page offers up to 2000)."""


def feature_maps(model: nn.Module, x: Tensor, layers: str | Sequence[str]) -> dict[str, Tensor]:
    """Outputs of named layers for one forward pass (detached copies, as each left its layer).

    Args:
        model: the network (eval mode).
        x: input batch (N, C, H, W).
        layers: one name or several, from ``layer_names(model)``.

    Returns:
        layer name -> output tensor, e.g. (N, C', H', W') for convolutions.
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    for name in names:
        get_module(model, name)  # clear KeyError for a wrong name
    with record_activations(model, names) as acts, torch.inference_mode():
        model(x)
    missing = [n for n in names if n not in acts]
    if missing:
        raise ValueError(f"The layers {', '.join(missing)} were not used in the forward pass.")
    return {n: acts[n] for n in names}


def spatial_layers(model: LoadedModel) -> list[str]:
    """Layers whose output is a stack of feature maps (N, C, H, W), in definition order."""
    return list(spatial_layers_of_table(layer_table(model.module, model.input_size)))


def channel_stats(activation: Tensor) -> dict[str, np.ndarray]:
    """Per-channel statistics of one image's feature maps.

    Args:
        activation: (C, H, W) or (1, C, H, W).

    Returns:
        {"mean", "max", "zero_fraction"}, each (C,): mean, maximum and fraction of exact zeros.
    """
    act = activation[0] if activation.ndim == 4 else activation
    flat = act.detach().float().flatten(1)
    return {
        "mean": flat.mean(1).cpu().numpy(),
        "max": flat.max(1).values.cpu().numpy(),
        "zero_fraction": (flat == 0).float().mean(1).cpu().numpy(),
    }


# --- receptive fields ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceptiveField:
    """Which input pixels one unit of a layer can see.

    Attributes:
        layer: the layer's name.
        size: (height, width) of the field in input pixels.
        jump: (rows, cols) of input pixels between neighbouring units (the total stride).
        start: (top, left) input pixel of unit (0, 0)'s field; negative where it starts in the padding.
        input_size: (H, W) of the input.
        output_size: (h, w) of the layer's feature maps.
        method: "exact" (from conv/pool geometry), "empirical" (from input gradients, for models
            that are not a plain chain; a lower bound) or "whole image" (after flattening).
    """

    layer: str
    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[int, int]
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    method: str

    def box(self, i: int, j: int, clip: bool = True) -> tuple[int, int, int, int]:
        """Input box (top, left, bottom, right), bottom/right exclusive, of unit (i, j).

        Args:
            clip: cut the box to the image (else it may reach into the padding).
        """
        top = self.start[0] + i * self.jump[0]
        left = self.start[1] + j * self.jump[1]
        bottom, right = top + self.size[0], left + self.size[1]
        if clip:
            top, left = max(top, 0), max(left, 0)
            bottom, right = min(bottom, self.input_size[0]), min(right, self.input_size[1])
        return top, left, bottom, right


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _geometry(module: nn.Module, in_hw: tuple[int, int], out_hw: tuple[int, int]):
    """(kernel, stride, padding, dilation) per axis of a spatial module, None for pointwise, or raise."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        dilation = _pair(getattr(module, "dilation", 1))
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        return _pair(module.kernel_size), stride, _pair(module.padding), dilation
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        if in_hw == out_hw:
            return None
        if all(i % o == 0 for i, o in zip(in_hw, out_hw)):
            k = tuple(i // o for i, o in zip(in_hw, out_hw))
            return k, k, (0, 0), (1, 1)
        raise LookupError("adaptive pooling with uneven windows")
    if in_hw != out_hw:
        raise LookupError(f"{type(module).__name__} changes the spatial size")
    return None  # pointwise in space: activations, normalisation, dropout, ...


def receptive_field(model: nn.Module, layer: str, input_size: tuple[int, int, int]) -> ReceptiveField:
    """The receptive field of a layer's units.

    For a plain chain of layers (the small CNN, VGG, AlexNet up to their classifier) it is exact,
    computed from the kernel, stride, padding and dilation of every convolution and pooling on
    the way: size r' = r + (d(k-1)) j, jump j' = s j, start a' = a - p j. Whether the model is a
    chain is checked on one forward pass: every layer must consume the previous layer's output,
    untouched (tensor versions catch ResNet's in-place ``out += identity``). Otherwise the field
    is measured from input gradients of the central unit over random inputs ("empirical"; a lower
    bound, as ReLUs and max pooling can hide pixels).

    Args:
        model: the network, eval mode.
        layer: a name from ``layer_names(model)``.
        input_size: (C, H, W) of the model's input.

    Returns:
        A ``ReceptiveField``; ``.box(i, j)`` maps a unit to its input box.
    """
    get_module(model, layer)  # clear KeyError for a wrong name
    leaves = [n for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    events: list[tuple[nn.Module, Tensor, int, Tensor, int]] = []
    target_out: list[object] = []  # the target's output object itself, for the identity check below

    def leaf_hook(module: nn.Module, inputs: tuple, output: object) -> None:
        if inputs and isinstance(inputs[0], Tensor) and isinstance(output, Tensor):
            events.append((module, inputs[0], inputs[0]._version, output, output._version))
        else:
            events.append((module, None, 0, None, 0))  # type: ignore[arg-type]

    def target_hook(module: nn.Module, inputs: tuple, output: object) -> None:
        if layer in leaves:
            leaf_hook(module, inputs, output)
        target_out.append(output)

    hooks: dict[str, Callable] = {n: leaf_hook for n in leaves}
    hooks[layer] = target_hook
    c, h, w = input_size
    x = torch.zeros(1, c, h, w, device=module_device(model))
    # the leaf hooks fire before forward_until's, which stops the pass once the target has run
    with forward_hooks(model, hooks), torch.no_grad():
        forward_until(model, x, [layer])
    out: Tensor = target_out[0]  # type: ignore[assignment]  # a tensor, or forward_until raised
    if out.ndim != 4:
        return ReceptiveField(layer, (h, w), (h, w), (0, 0), (h, w), (1, 1), "whole image")
    out_hw = (int(out.shape[2]), int(out.shape[3]))

    size, jump, start = [1, 1], [1, 1], [0, 0]
    current, version = x, x._version
    chain = True
    for module, inp, in_version, output, out_version in events:
        in_place = output is inp
        if inp is not current or (in_version - (1 if in_place else 0)) != version or output.ndim != 4:
            chain = False
            break
        try:
            geometry = _geometry(module, tuple(inp.shape[2:]), tuple(output.shape[2:]))
        except LookupError:
            chain = False
            break
        if geometry is not None:
            kernel, stride, padding, dilation = geometry
            for a in (0, 1):
                size[a] += dilation[a] * (kernel[a] - 1) * jump[a]
                start[a] -= padding[a] * jump[a]
                jump[a] *= stride[a]
        current, version = output, out_version
    if chain and out is current:
        return ReceptiveField(layer, tuple(size), tuple(jump), tuple(start), (h, w), out_hw, "exact")  # type: ignore[arg-type]
    return _empirical_receptive_field(model, layer, input_size, out_hw)


def _empirical_receptive_field(
    model: nn.Module, layer: str, input_size: tuple[int, int, int], out_hw: tuple[int, int], trials: int = 4
) -> ReceptiveField:
    """Receptive field from where the central unit's input gradient is non-zero (random inputs)."""
    c, h, w = input_size
    i, j = out_hw[0] // 2, out_hw[1] // 2
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(trials, c, h, w, generator=generator, device="cpu").to(module_device(model)).requires_grad_(True)
    with torch.enable_grad():
        out = forward_until(model, x, [layer], keep_graph=True)[layer]
        (grad,) = torch.autograd.grad(out[:, :, i, j].sum(), x)
    seen = grad.abs().sum((0, 1)) > 0
    rows, cols = torch.nonzero(seen.any(1)).flatten(), torch.nonzero(seen.any(0)).flatten()
    jump = (max(1, round(h / out_hw[0])), max(1, round(w / out_hw[1])))
    if len(rows) == 0:
        return ReceptiveField(layer, (h, w), jump, (0, 0), (h, w), out_hw, "empirical")
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return ReceptiveField(
        layer, (bottom - top, right - left), jump, (top - i * jump[0], left - j * jump[1]), (h, w), out_hw, "empirical"
    )


# --- maximally activating patches ------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelMaxima:
    """For every image of a dataset and every channel of a layer: the strongest activation and where.

    Attributes:
        layer: the layer's name.
        values: (N, C) maximum over positions.
        rows, cols: (N, C) position of that maximum in the feature map.
        map_size: (h, w) of the feature maps.
    """

    layer: str
    values: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    map_size: tuple[int, int]


def _batches(model: LoadedModel, data: ImageDataset | Tensor, batch_size: int) -> tuple[int, Callable[[int, int], Tensor]]:
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    if isinstance(data, Tensor):
        return len(data), lambda a, b: data[a:b].to(model.device)
    return len(data), lambda a, b: data.batch(model.preprocessing, range(a, b)).to(model.device)


def channel_maxima(
    model: LoadedModel, dataset: ImageDataset | Tensor, layer: str, batch_size: int = 64, progress: Progress | None = None
) -> ChannelMaxima:
    """Run a dataset through the model in batches and keep each channel's maximum per image.

    The forward pass stops once ``layer`` has run.

    Args:
        model: the model with its preprocessing.
        dataset: images (preprocessed by the model) or an already preprocessed (N, C, H, W) tensor.
        layer: a layer with (N, C, h, w) output.
        progress: called with (fraction done, message) after each batch.
    """
    n, get = _batches(model, dataset, batch_size)
    if n == 0:
        raise ValueError("The dataset is empty.")
    values = rows = cols = None
    map_size = (0, 0)
    get_module(model.module, layer)
    not_maps = f"Layer {layer!r} does not output feature maps (N, C, H, W); pick a convolutional layer."
    with torch.inference_mode():
        for a in range(0, n, batch_size):
            b = min(a + batch_size, n)
            try:
                out = forward_until(model.module, get(a, b), [layer])[layer]
            except ValueError as error:  # did not run, or not a tensor
                raise ValueError(not_maps) from error
            if out.ndim != 4:
                raise ValueError(not_maps)
                raise ValueError(f"Layer {layer!r} does not output feature maps (N, C, H, W); pick a convolutional layer.")
            if values is None:
                map_size = (int(out.shape[2]), int(out.shape[3]))
                values = np.empty((n, out.shape[1]), np.float32)
                rows = np.empty((n, out.shape[1]), np.int64)
                cols = np.empty((n, out.shape[1]), np.int64)
            best = out.float().flatten(2).max(2)
            values[a:b] = best.values.cpu().numpy()
            rows[a:b] = (best.indices // map_size[1]).cpu().numpy()
            cols[a:b] = (best.indices % map_size[1]).cpu().numpy()
            if progress:
                progress(b / n, f"{b} of {n} images")
    return ChannelMaxima(layer, values, rows, cols, map_size)  # type: ignore[arg-type]


def dead_channels(maxima: ChannelMaxima) -> np.ndarray:
    """Indices of channels that never become positive on any image (dead after a ReLU)."""
    return np.flatnonzero(maxima.values.max(0) <= 0)


@dataclass(frozen=True)
class ActivationHit:
    """One strong activation: image ``index``, its ``value`` at feature-map position (row, col)."""

    index: int
    value: float
    row: int
    col: int


def top_activations(maxima: ChannelMaxima, channel: int, k: int = 9) -> list[ActivationHit]:
    """The k images whose strongest activation of ``channel`` is largest (one hit per image)."""
    if not 0 <= channel < maxima.values.shape[1]:
        raise ValueError(f"Channel {channel} does not exist; layer {maxima.layer} has {maxima.values.shape[1]} channels.")
    column = maxima.values[:, channel]
    order = np.argsort(-column, kind="stable")[:k]
    return [ActivationHit(int(i), float(column[i]), int(maxima.rows[i, channel]), int(maxima.cols[i, channel])) for i in order]


def crop_patch(view: Image.Image, field: ReceptiveField, row: int, col: int) -> Image.Image:
    """The receptive field of unit (row, col) cut from the image as the model sees it.

    The full field is cut; where it reaches past the image border (into the padding) it is black.
    """
    top, left, bottom, right = field.box(row, col, clip=False)
    return view.crop((left, top, right, bottom))


@dataclass(frozen=True)
class Patch:
    """A maximally activating patch: the hit, its clipped input box and the cropped image."""

    hit: ActivationHit
    box: tuple[int, int, int, int]
    image: Image.Image


def maximally_activating_patches(
    model: LoadedModel, dataset: ImageDataset, layer: str, channel: int, k: int = 9,
    maxima: ChannelMaxima | None = None, batch_size: int = 64, progress: Progress | None = None,
) -> list[Patch]:
    """The k image patches that excite ``channel`` of ``layer`` most over a dataset.

    Args:
        maxima: reuse a ``channel_maxima`` result for this layer (all channels at once) if given.

    Returns:
        Patches, strongest first, each with its receptive-field box in the image as the model sees it.
    """
    if maxima is None:
        maxima = channel_maxima(model, dataset, layer, batch_size, progress)
    field = receptive_field(model.module, layer, model.input_size)
    patches = []
    for hit in top_activations(maxima, channel, k):
        view = model.preprocessing.view(dataset.images[hit.index])
        patches.append(Patch(hit, field.box(hit.row, hit.col), crop_patch(view, field, hit.row, hit.col)))
    return patches


# --- feature vectors, embeddings, neighbours -------------------------------------------------------


def penultimate_layer(model: nn.Module) -> str:
    """Name of the model's last ``nn.Linear`` (its input is the penultimate representation)."""
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError("The model has no linear layer; pick a layer for the features.")
    return linear[-1]


def extract_features(
    model: LoadedModel, dataset: ImageDataset | Tensor, layer: str | None = None, batch_size: int = 64,
    progress: Progress | None = None,
) -> np.ndarray:
    """One feature vector per image, computed in batches.

    Args:
        model: the model with its preprocessing.
        dataset: images (preprocessed per batch) or a preprocessed (N, C, H, W) tensor.
        layer: whose output to take; None takes the penultimate representation (the input of the
            last linear layer). Feature maps (N, C, h, w) are global-average pooled to (N, C);
            other shapes are flattened.
        progress: called with (fraction done, message) after each batch.

    Returns:
        (N, D) float32 array.
    """
    name = layer or penultimate_layer(model.module)
    take_input = layer is None
    get_module(model.module, name)
    n, get = _batches(model, dataset, batch_size)
    if n == 0:
        raise ValueError("The dataset is empty.")
    features = None
    with torch.inference_mode():
        for a in range(0, n, batch_size):
            b = min(a + batch_size, n)
            try:
                out = forward_until(model.module, get(a, b), [name], inputs=take_input)[name]
            except ValueError as error:  # did not run, or not a tensor
                raise ValueError(f"Layer {name!r} did not produce a tensor in the forward pass.") from error
            out = out.float().mean((2, 3)) if out.ndim == 4 else out.float().flatten(1)
            if features is None:
                features = np.empty((n, out.shape[1]), np.float32)
            features[a:b] = out.cpu().numpy()
            if progress:
                progress(b / n, f"{b} of {n} images")
    return features  # type: ignore[return-value]


def embed_2d(
    features: np.ndarray, method: str = "pca", perplexity: float = 30.0, max_iter: int = 500, seed: int = 0,
    pca_dims: int = 50,
) -> np.ndarray:
    """Map feature vectors to 2-D points.

    Args:
        features: (N, D).
        method: "pca" (Pearson 1901; linear, deterministic) or "tsne" (van der Maaten & Hinton 2008;
            scikit-learn's Barnes-Hut, after PCA to ``pca_dims`` dimensions when D is larger).
        perplexity: t-SNE's effective number of neighbours (must be below N).
        max_iter: t-SNE optimisation steps (at least 250).
        seed: random seed for t-SNE.

    Returns:
        (N, 2) float32 coordinates.
    """
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) < 3:
        raise ValueError("Need at least 3 feature vectors (N, D) to embed.")
    if method == "pca":
        if x.shape[1] < 2:
            return np.column_stack([x[:, 0], np.zeros(len(x))]).astype(np.float32)
        return PCA(2, random_state=seed).fit_transform(x).astype(np.float32)
    if method != "tsne":
        raise ValueError(f"Unknown method {method!r}; use 'pca' or 'tsne'.")
    if not 1 <= perplexity < len(x):
        raise ValueError(f"Perplexity must be between 1 and the number of points ({len(x)}); got {perplexity}.")
    if not 250 <= max_iter <= MAX_TSNE_ITER:
        raise ValueError(f"t-SNE takes 250 to {MAX_TSNE_ITER} iterations, not {max_iter}.")
    from sklearn.manifold import TSNE

    if x.shape[1] > pca_dims and len(x) > pca_dims:
        x = PCA(pca_dims, random_state=seed).fit_transform(x).astype(np.float32)
    # as many threads as torch uses (set once per process, see cnnviz.admission), never all the cores
    tsne = TSNE(2, perplexity=perplexity, max_iter=int(max_iter), init="pca", random_state=seed,
                n_jobs=torch.get_num_threads())
    return tsne.fit_transform(x).astype(np.float32)


def nearest_neighbors(
    bank: np.ndarray, query: np.ndarray, k: int = 5, metric: str = "l2", exclude: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of ``bank`` to each query.

    Args:
        bank: (N, D) vectors to search.
        query: (D,) or (Q, D).
        metric: "l2" (Euclidean distance) or "cosine" (1 - cosine similarity; zero vectors are at 1).
        exclude: bank indices never returned, one per query (e.g. the query's own index), or None.

    Returns:
        (indices, distances), each (Q, k) (or (k,) for a single query), nearest first; ties
        keep the lower index first.
    """
    bank = np.asarray(bank, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64)
    single = q.ndim == 1
    q = q[None] if single else q
    if bank.ndim != 2 or q.shape[1] != bank.shape[1]:
        raise ValueError(f"Query dimension {q.shape[-1]} does not match the bank's {bank.shape[-1]}.")
    if metric == "l2":
        d2 = (q**2).sum(1)[:, None] + (bank**2).sum(1)[None] - 2 * q @ bank.T
        dist = np.sqrt(np.clip(d2, 0, None))
    elif metric == "cosine":
        unit = lambda v: v / np.where((n := np.linalg.norm(v, axis=1, keepdims=True)) > 0, n, 1)  # noqa: E731
        dist = 1 - unit(q) @ unit(bank).T
    else:
        raise ValueError(f"Unknown metric {metric!r}; use 'l2' or 'cosine'.")
    if exclude is not None:
        dist[np.arange(len(q)), np.asarray(exclude)] = np.inf
    available = len(bank) - (1 if exclude is not None else 0)
    if not 1 <= k <= available:
        raise ValueError(f"k must be between 1 and {available}.")
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    distances = np.take_along_axis(dist, order, axis=1)
    return (order[0], distances[0]) if single else (order, distances)


def pixel_vectors(model: LoadedModel, dataset: ImageDataset) -> np.ndarray:
    """Images as the model sees them (before normalisation), flattened: (N, C*H*W) in [0, 1]."""
    return np.stack([
        np.asarray(model.preprocessing.view(im), dtype=np.float32).ravel() / 255.0 for im in dataset.images
    ])


# --- filters -------------------------------------------------------------------------------------


def conv_weight(model: nn.Module, layer: str) -> Tensor:
    """The (out, in, kh, kw) weight of a Conv2d layer."""
    module = get_module(model, layer)
    if not isinstance(module, nn.Conv2d):
        raise ValueError(f"{layer!r} is a {type(module).__name__}, not a convolution.")
    return module.weight.detach()


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the model's Conv2d layers in definition order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def filter_order(weight: Tensor, sort_by_norm: bool = False) -> np.ndarray:
    """Filter indices: as defined, or by decreasing L2 norm of the whole filter."""
    if not sort_by_norm:
        return np.arange(weight.shape[0])
    norms = weight.detach().float().flatten(1).norm(dim=1).cpu().numpy()
    return np.argsort(-norms, kind="stable")


def filter_grid(
    weight: Tensor, in_channel: int | None = None, sort_by_norm: bool = False, tile_px: int = 48,
    columns: int | None = None, max_filters: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Convolution filters as a grid of tiles, each normalised to its own range, nearest upscaled.

    Args:
        weight: (out, in, kh, kw) conv weight.
        in_channel: draw the filters' slice for this input channel in gray; None draws RGB tiles
            (only for 3 input channels) or the only slice (1 input channel).
        sort_by_norm: order by decreasing L2 norm of the whole filter.
        tile_px: approximate side of each tile in pixels.
        max_filters: draw at most this many.

    Returns:
        (grid uint8 (H, W) or (H, W, 3), filter indices in drawing order).
    """
    w = weight.detach().float().cpu()
    if w.ndim != 4:
        raise ValueError("Expected a convolution weight (out, in, kh, kw).")
    if in_channel is None and w.shape[1] not in (1, 3):
        raise ValueError(f"Filters with {w.shape[1]} input channels have no colour picture; choose an input channel.")
    if in_channel is not None and not 0 <= in_channel < w.shape[1]:
        raise ValueError(f"Input channel {in_channel} does not exist (0..{w.shape[1] - 1}).")
    order = filter_order(w, sort_by_norm)[:max_filters]
    tiles = []
    for o in order:
        if in_channel is None and w.shape[1] == 3:
            array = display.normalize(w[o].permute(1, 2, 0))  # normalised over the filter's three channels
        else:
            array = display.normalize(w[o, in_channel or 0])
        tiles.append(display.upscale((array * 255).round().astype(np.uint8), tile_px))
    columns = columns or int(np.ceil(np.sqrt(len(tiles))))
    return display.tile(tiles, columns), order


def feature_map_grid(activation: Tensor, columns: int | None = None, tile_px: int = 64, shared_scale: bool = False,
                     colorscale: str = "Viridis") -> np.ndarray:
    """Every feature map of one image as a grid of coloured tiles.

    Args:
        activation: (C, h, w) or (1, C, h, w).
        shared_scale: one colour scale for all maps (shows which are weak); else each map its own.

    Returns:
        uint8 (H, W, 3) grid.
    """
    act = activation[0] if activation.ndim == 4 else activation
    maps = display.to_numpy(act)
    return display.map_grid(maps, columns or int(np.ceil(np.sqrt(len(maps)))), tile_px, shared_scale, colorscale)
