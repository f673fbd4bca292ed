"""Converters of the pinned sources (``cnnviz.sources``): one file from a package archive in, a
dict of tensors and a dict of string metadata out, stored once as safetensors.

- ``squeezenet_from_ndf``: ndf's pickled Caffe SqueezeNet 1.1, read by a restricted unpickler (no
  code from the pickle runs), laid out as ``torchvision.models.squeezenet1_1``, with the Caffe
  preprocessing folded into ``conv1`` so the model takes torchvision's standard input.
- ``efficientnet_lite0``: the torch state dict (read with ``weights_only=True``), renamed to
  ``cnnviz.efficientnet_lite.EfficientNetLite``.
- ``vgg16_from_hed``: HED's 13 VGG-16 convolutions from a Keras h5 file, laid out as
  ``torchvision.models.vgg16().features``; the BGR channel order folds into the first convolution,
  the mean and the 0-255 scale stay in the preprocessing.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .sources import SourceError

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
"""Mean pixel (BGR, 0-255) of the ndf SqueezeNet's Caffe-style input."""

HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)
"""Mean pixel (BGR, 0-255) that HED's own ``preprocess_image`` subtracts."""

# --- a pickle that can only hold arrays ---------------------------------------------------------

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names something other than NumPy's array machinery."""


class ArrayUnpickler(pickle.Unpickler):
    """Unpickler that admits only what dicts and lists of NumPy arrays need.

    Every other global (``os.system``, ``builtins.eval``, any class) raises
    ``pickle.UnpicklingError`` before it is looked up, so nothing named in the pickle runs.
    """

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise RefusedGlobal(f"refused {module}.{name}: only NumPy arrays may be in this pickle")
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct

            return _reconstruct
        return getattr(np, name)


def load_array_pickle(data: bytes) -> object:
    """Unpickle ``data`` with ``ArrayUnpickler``.

    Raises:
        SourceError: the pickle names anything but NumPy arrays, or is damaged.
    """
    try:
        return ArrayUnpickler(io.BytesIO(data)).load()
    except RefusedGlobal as error:
        raise SourceError(f"This pickle is refused: {error}.") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise SourceError(f"This pickle is damaged ({type(error).__name__}: {error}).") from None


# --- SqueezeNet 1.1 ----------------------------------------------------------------------------

_FIRE = {f"fire{n}": 3 + i + (i >= 2) + (i >= 4) for i, n in enumerate(range(2, 10))}
"""ndf/Caffe fire module -> index in torchvision's ``squeezenet1_1().features``."""


def read_ndf_squeezenet(path: Path) -> dict[str, list[np.ndarray]]:
    """ndf's pickled weights: layer name -> [kernel (kh, kw, in, out), bias], checked.

    Raises:
        SourceError: refused or damaged pickle, or not the expected layout.
    """
    raw = load_array_pickle(Path(path).read_bytes())
    if not isinstance(raw, dict) or not all(
        isinstance(v, list) and len(v) == 2 and all(isinstance(a, np.ndarray) for a in v) for v in raw.values()
    ):
        raise SourceError("The SqueezeNet pickle is not a dict of [kernel, bias] arrays.")
    expected = {"conv1", "conv10"} | {f"fire{n}/{p}" for n in range(2, 10) for p in ("squeeze1x1", "expand1x1", "expand3x3")}
    if set(raw) != expected:
        raise SourceError(f"The SqueezeNet pickle has other layers than SqueezeNet 1.1 ({sorted(set(raw) ^ expected)[:3]}).")
    return raw


def squeezenet_state_dict(raw: dict[str, list[np.ndarray]], fold: bool = True) -> dict[str, Tensor]:
    """ndf's weights as a ``torchvision.models.squeezenet1_1`` state dict.

    Args:
        raw: from ``read_ndf_squeezenet``.
        fold: fold the Caffe preprocessing (BGR, 0-255, minus ``CAFFE_MEAN_BGR``) into ``conv1`` so
            the model takes torchvision's input ((RGB in [0, 1] - mean) / std). ``conv1`` has no
            padding, so every window lies inside the image and the fold is exact. Without it the
            model takes the Caffe-style input.

    Returns:
        Name -> float32 tensor, kernels as (out, in, kh, kw).
    """
    def conv(name: str) -> tuple[Tensor, Tensor]:
        kernel, bias = raw[name]
        return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).double(), torch.from_numpy(bias).double()

    state: dict[str, Tensor] = {}
    weight, bias = conv("conv1")
    if fold:
        from torchvision.models import SqueezeNet1_1_Weights

        transforms = SqueezeNet1_1_Weights.DEFAULT.transforms()
        mean = torch.tensor(transforms.mean, dtype=torch.float64)
        std = torch.tensor(transforms.std, dtype=torch.float64)
        caffe_mean_rgb = torch.tensor(CAFFE_MEAN_BGR[::-1], dtype=torch.float64)
        rgb = weight.flip(1)  # input channel j of RGB is channel 2 - j of BGR
        # caffe_rgb = 255 * (n * std + mean) - caffe_mean, n the torchvision-normalised input
        bias = bias + (rgb * (255 * mean - caffe_mean_rgb).view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
        weight = rgb * (255 * std).view(1, 3, 1, 1)
    state["features.0.weight"], state["features.0.bias"] = weight, bias
    for fire, index in _FIRE.items():
        for part, target in (("squeeze1x1", "squeeze"), ("expand1x1", "expand1x1"), ("expand3x3", "expand3x3")):
            w, b = conv(f"{fire}/{part}")
            state[f"features.{index}.{target}.weight"], state[f"features.{index}.{target}.bias"] = w, b
    state["classifier.1.weight"], state["classifier.1.bias"] = conv("conv10")
    return {k: v.float().contiguous() for k, v in state.items()}


def squeezenet_from_ndf(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Converter of ``squeezenet1_1-imagenet-ndf``: torchvision layout, preprocessing folded in."""
    state = squeezenet_state_dict(read_ndf_squeezenet(path), fold=True)
    return state, {
        "architecture": "torchvision squeezenet1_1",
        "preprocessing": "torchvision ImageNet (Caffe BGR/0-255/mean folded into features.0)",
        "caffe_mean_bgr": json.dumps(CAFFE_MEAN_BGR),
    }


# --- EfficientNet-Lite0 --------------------------------------------------------------------------


def efficientnet_lite0(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Converter of ``efficientnet_lite0-imagenet``: the state dict renamed to ``EfficientNetLite``."""
    from .efficientnet_lite import EfficientNetLite, convert_state_dict

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as error:
        raise SourceError(f"The EfficientNet-Lite0 file is not a plain state dict ({str(error).splitlines()[0]}).") from None
    converted = convert_state_dict(state)
    own = EfficientNetLite().state_dict()
    wrong = [k for k in own if k not in converted or converted[k].shape != own[k].shape]
    if wrong or len(converted) != len(own):
        raise SourceError(f"The EfficientNet-Lite0 file does not fit the architecture (e.g. {wrong[:3]}).")
    return {k: v.to(own[k].dtype).contiguous() for k, v in converted.items()}, {"architecture": "cnnviz EfficientNetLite (lite0)"}


# --- VGG-16 convolutions of HED ------------------------------------------------------------------

VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
"""Indices of the 13 convolutions in ``torchvision.models.vgg16().features``."""


def _hed_layers() -> list[str]:
    """h5 groups of HED's 13 convolutions, in order (block1 has 2, block2 2, blocks 3-5 three each)."""
    names = []
    for block, count in zip(range(1, 6), (2, 2, 3, 3, 3)):
        names += [f"block{block}/layers/conv2d" + ("" if i == 0 else f"_{i}") for i in range(count)]
    return names


def vgg16_from_hed(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Converter of ``vgg16-hed-bsds500``: the 13 convolutions as ``vgg16().features`` weights.

    Keras kernels (kh, kw, in, out) become (out, in, kh, kw). HED takes BGR: the first kernel's
    input channels are reversed, so the network takes RGB; the preprocessing keeps the 0-255
    scale and HED's mean (metadata ``mean_rgb``), as VGG's first convolution pads and the mean
    therefore does not fold exactly.

    Returns:
        ({"features.{i}.weight", "features.{i}.bias"} for the 13 convolutions, metadata).
    """
    import h5py

    state: dict[str, Tensor] = {}
    try:
        with h5py.File(path, "r") as f:
            for index, group in zip(VGG16_CONVS, _hed_layers()):
                kernel = np.asarray(f[f"{group}/vars/0"], dtype=np.float32)
                bias = np.asarray(f[f"{group}/vars/1"], dtype=np.float32)
                weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
                state[f"features.{index}.weight"], state[f"features.{index}.bias"] = weight, torch.from_numpy(bias)
    except (OSError, KeyError) as error:
        raise SourceError(f"The HED weights file is damaged or not laid out as expected ({error}).") from None
    state["features.0.weight"] = state["features.0.weight"].flip(1).contiguous()
    return state, {
        "architecture": "torchvision vgg16().features (13 convolutions of HED, BSDS500)",
        "mean_rgb": json.dumps(HED_MEAN_BGR[::-1]),
        "scale": "255",
    }
