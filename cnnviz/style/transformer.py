"""Johnson et al.'s (2016) feed-forward style network, with instance norm or batch norm (Ulyanov et al. 2016).

Downsampling convolutions, residual blocks, upsampling (×2 nearest, then a convolution, which avoids
the checkerboard of transposed convolutions) and a 9×9 convolution to RGB through a sigmoid. Every
convolution is reflect-padded. ``width`` sets the channels of the first layer (Johnson: 32; the
shipped networks use 16, a quarter of the parameters, to train in minutes on a CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .multistyle import pad_to_multiple

NORMS = ("instance", "batch")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"The normalisation must be one of {', '.join(NORMS)}, not {kind!r}.")


class ConvBlock(nn.Module):
    """[×2 nearest upsampling], reflect padding, convolution, normalisation, [ReLU]."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, norm: str = "instance", relu: bool = True, upsample: bool = False):
        super().__init__()
        self.upsample, self.relu, self.pad = upsample, relu, kernel // 2
        self.conv = nn.Conv2d(cin, cout, kernel, stride)
        self.norm = _norm(norm, cout)

    def forward(self, x: Tensor) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.norm(self.conv(F.pad(x, (self.pad,) * 4, mode="reflect")))
        return F.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
    """x + norm(conv(relu(norm(conv(x))))), both convolutions 3×3."""

    def __init__(self, channels: int, norm: str = "instance"):
        super().__init__()
        self.first = ConvBlock(channels, channels, 3, norm=norm)
        self.second = ConvBlock(channels, channels, 3, norm=norm, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.second(self.first(x))


class TransformerNet(nn.Module):
    """Johnson et al.'s image transformation network.

    Layout: 9×9 conv (width), 3×3 stride-2 convs (2·width, 4·width), ``blocks`` residual blocks,
    two ×2 upsampling 3×3 convs (2·width, width), 9×9 conv to 3 channels, sigmoid.

    Args:
        norm: "instance" (Ulyanov et al.) or "batch".
        width: channels of the first layer (Johnson: 32).
        blocks: residual blocks (Johnson: 5).
    """

    def __init__(self, norm: str = "instance", width: int = 32, blocks: int = 5):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"The normalisation must be one of {', '.join(NORMS)}, not {norm!r}.")
        if not 1 <= width <= 128 or not 0 <= blocks <= 16:
            raise ValueError("The width must be from 1 to 128 and the number of residual blocks from 0 to 16.")
        self.norm_kind, self.width, self.blocks = norm, width, blocks
        w = width
        self.down = nn.Sequential(
            ConvBlock(3, w, 9, norm=norm), ConvBlock(w, 2 * w, 3, 2, norm=norm), ConvBlock(2 * w, 4 * w, 3, 2, norm=norm)
        )
        self.residual = nn.Sequential(*[ResidualBlock(4 * w, norm) for _ in range(blocks)])
        self.up = nn.Sequential(ConvBlock(4 * w, 2 * w, 3, norm=norm, upsample=True), ConvBlock(2 * w, w, 3, norm=norm, upsample=True))
        self.out = nn.Conv2d(w, 3, 9)

    def forward(self, pixels: Tensor) -> Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, 3, H, W) in (0, 1), any H and W (reflect-padded to multiples
        of 4 inside, cropped back)."""
        h, w = pixels.shape[2:]
        x = self.up(self.residual(self.down(pad_to_multiple(pixels, 4))))
        return torch.sigmoid(self.out(F.pad(x, (4,) * 4, mode="reflect")))[:, :, :h, :w]


def save_checkpoint(net: TransformerNet, path: str | Path | None = None, metadata: dict | None = None, half: bool = True) -> bytes:
    """The network's weights as safetensors (float16 by default: half the size), with its layout
    and ``metadata`` (values JSON-encoded). Written to ``path`` too when given.

    Returns:
        The file's bytes.
    """
    from safetensors.torch import save

    state = {k: (v.half() if half and v.is_floating_point() else v).cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {"architecture": "TransformerNet", "norm": net.norm_kind, "width": str(net.width), "blocks": str(net.blocks)}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
    blob = save(state, metadata=meta)
    if path is not None:
        Path(path).write_bytes(blob)
    return blob


def _metadata(data: bytes) -> dict[str, str]:
    """The metadata of safetensors bytes (its JSON header's ``__metadata__``)."""
    size = int.from_bytes(data[:8], "little")
    if not 0 < size < len(data):
        raise ValueError("truncated header")
    return json.loads(data[8 : 8 + size]).get("__metadata__") or {}


def load_checkpoint(source: str | Path | bytes) -> tuple[TransformerNet, dict[str, str]]:
    """A ``TransformerNet`` in eval mode from a checkpoint of ``save_checkpoint`` (path or bytes).

    Returns:
        (network, metadata).

    Raises:
        ValueError: not a readable checkpoint of this network.
    """
    from safetensors.torch import load

    from ..models import apply_state_dict

    data = Path(source).read_bytes() if isinstance(source, (str, Path)) else bytes(source)
    try:
        state, metadata = load(data), _metadata(data)
    except Exception as error:  # damaged or not safetensors
        raise ValueError(f"This is not a readable style-network checkpoint ({error}).") from None
    if metadata.get("architecture") != "TransformerNet":
        raise ValueError("This checkpoint is not a TransformerNet (a fast style network of cnnviz).")
    net = TransformerNet(metadata["norm"], int(metadata["width"]), int(metadata["blocks"]))
    apply_state_dict(net, state)
    return net.eval(), metadata


def stylize_with(net: TransformerNet, pixels: Tensor) -> Tensor:
    """Run a trained fast style network (eval mode) on pixels (N, 3, H, W) in [0, 1], no graph;
    the result is on the network's device."""
    from ..device import module_device

    with torch.inference_mode():
        return net(pixels.float().to(module_device(net))).clone()
