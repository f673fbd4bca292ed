"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant for mobile accelerators), written here.

The Lite variant drops squeeze-and-excitation, uses ReLU6 instead of swish and keeps the stem and
head at fixed widths. Its convolutions pad like TensorFlow's "SAME" (stride 2 pads more at the
bottom and right), because the weights were trained in TensorFlow; ``Conv2dSame`` computes that
padding for every input size, so the network also runs at sizes other than 224 (DeepDream).

The layout follows torchvision's ``efficientnet_b0`` (``features.0`` stem, ``features.1`` ...
``features.7`` stages, ``features.8`` head, ``avgpool``, ``classifier``), so the same tools address
both. ``convert_state_dict`` renames the weights of ``efficientnet-lite-pytorch`` (lukemelas'
layout: ``_conv_stem``, ``_blocks.N._expand_conv`` ...) to this layout.
"""

from __future__ import annotations

import math
import re

import torch.nn.functional as F
from torch import Tensor, nn

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the seven stages of Lite0
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "SAME" padding: output size ceil(input / stride)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [Conv2dSame(in_channels, out_channels, kernel, stride, groups),
                               nn.BatchNorm2d(out_channels, eps=BN_EPS)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expansion, depthwise k×k, 1×1 projection (no activation).

    Input (N, in, H, W) -> (N, out, ceil(H / stride), ceil(W / stride)); the input is added back
    when the shapes agree.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_channels * expand
        layers = [_conv_bn(in_channels, mid, 1)] if expand != 1 else []
        layers += [_conv_bn(mid, mid, kernel, stride, groups=mid), _conv_bn(mid, out_channels, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0: (N, 3, H, W) ImageNet-normalised -> (N, num_classes) logits."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        stages: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
            blocks = [MBConv(c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else 1, expand) for i in range(repeats)]
            stages.append(nn.Sequential(*blocks))
        stages.append(_conv_bn(320, 1280, 1))
        self.features = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _block_positions() -> list[tuple[int, int]]:
    """(stage, index within the stage) of lukemelas' flat ``_blocks.N``, in order."""
    return [(stage + 1, i) for stage, spec in enumerate(LITE0_STAGES) for i in range(spec[0])]


def convert_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an ``efficientnet-lite-pytorch`` state dict to ``EfficientNetLite``'s names.

    Raises:
        KeyError: a key that belongs to neither layout (another architecture's file).
    """
    positions = _block_positions()
    out: dict[str, Tensor] = {}
    top = {"_conv_stem": "features.0.0", "_bn0": "features.0.1", "_conv_head": "features.8.0", "_bn1": "features.8.1",
           "_fc": "classifier.1"}
    for key, value in state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if block:
            n, part, tensor = int(block[1]), block[2], block[3]
            stage, index = positions[n]
            expands = LITE0_STAGES[stage - 1][3] != 1
            step = {"_expand_conv": (0, 0), "_bn0": (0, 1), "_depthwise_conv": (1, 0), "_bn1": (1, 1),
                    "_project_conv": (2, 0), "_bn2": (2, 1)}[part]
            layer = step[0] if expands else step[0] - 1
            out[f"features.{stage}.{index}.block.{layer}.{step[1]}.{tensor}"] = value
            continue
        module, _, tensor = key.rpartition(".")
        out[f"{top[module]}.{tensor}"] = value
    return out
