"""The model zoo: torchvision classifiers through their weights API, networks whose trained weights
come from pinned package archives (``cnnviz.sources``), and the bundled small CNN.

``load_model(name)`` returns a ``LoadedModel``: the module in eval mode with its preprocessing,
class names and a plain statement of which weights it carries and where they came from.
Preprocessing and class names come from torchvision's weights metadata (also for random weights,
whose architecture is the same) or from the source's converter.

Pretrained torchvision weights come from torchvision's usual download and cache
(``torch.hub.get_dir()``). Without a network, a missing file fails at once with
``WeightsUnavailable``, whose message names the file and how to get it (``python -m cnnviz fetch
NAME`` on a connected machine). ``squeezenet1_1`` falls back on the ImageNet weights of the ``ndf``
package when torchvision's file is missing; ``efficientnet_lite0`` and ``vgg16_features`` exist
only with package weights (or random ones).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import socket
import urllib.parse
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Mapping, Union

import torch
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from torch import Tensor, nn

from .device import module_device
from .preprocessing import Preprocessing
from .randomness import seeded
from .small_cnn import CHECKPOINT, CLASS_NAMES, SmallCNN, digits_preprocessing
from .sources import SOURCES, SourceError, converted_path, load_source, source_available

SMALL_CNN = "small_cnn"
SMALL_CNN_LABEL = "trained on MNIST"
"""How captions name the bundled small CNN's weights."""

ZOO: dict[str, dict] = {
    "resnet18": {},
    "resnet50": {},
    "vgg16": {},
    "vgg19": {},
    "alexnet": {},
    "squeezenet1_1": {},
    "googlenet": {"init_weights": False, "aux_logits": False},  # its own init (std 0.01) makes logits ignore the input
    "mobilenet_v3_small": {},
    "densenet121": {},
    "efficientnet_b0": {},
}
"""torchvision architectures offered, with keyword arguments for building them with random weights."""

PACKAGE_MODELS = ("efficientnet_lite0", "vgg16_features")
"""Architectures written here (not torchvision's), whose trained weights come from a pinned source."""

PACKAGE_WEIGHTS = {
    "squeezenet1_1": "squeezenet1_1-imagenet-ndf",
    "efficientnet_lite0": "efficientnet_lite0-imagenet",
    "vgg16_features": "vgg16-hed-bsds500",
}
"""Zoo name -> the pinned source of its trained weights (see ``cnnviz.sources``)."""

MODEL_NAMES = [SMALL_CNN, *ZOO, *PACKAGE_MODELS]

EFFICIENTNET_LITE_MEAN_STD = (0.5, 0.5)
"""EfficientNet-Lite0's input normalisation (TensorFlow's (x - 127) / 128, rounded): on the sample
photos it gives better top-5s than ImageNet's mean and std (espresso 0.96 instead of 0.84)."""

MAX_WEIGHTS_BYTES = 1024 * 1024 * 1024


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are neither cached nor downloadable; the message says what to do."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for cnnviz: the module in eval mode and everything needed around it.

    Attributes:
        name: registry name, e.g. ``"resnet18"`` or ``"small_cnn"``.
        module: the ``nn.Module``, in eval mode. Shared: never modify it.
        preprocessing: image -> input tensor and back.
        class_names: one name per output logit.
        weights: plain words for what weights it carries, e.g. "ImageNet weights", "random weights".
        pretrained: True when real trained weights are loaded (not random).
    """

    name: str
    module: nn.Module
    preprocessing: Preprocessing
    class_names: tuple[str, ...]
    weights: str
    pretrained: bool

    @property
    def device(self) -> torch.device:
        """Where the module's weights are (and ``preprocessing`` puts its input): CPU, CUDA or MPS."""
        return module_device(self.module)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) the model expects."""
        return self.preprocessing.input_size

    @property
    def label(self) -> str:
        """Name and weights, for every caption where this model's output appears."""
        return f"{self.name} · {self.weights}"

    @property
    def classifies(self) -> bool:
        """False for networks of convolutions only (``vgg16_features``): no class scores."""
        return bool(self.class_names)


CLASSIFIERS_HINT = "squeezenet1_1 or efficientnet_lite0 (trained on ImageNet) or the small CNN"


def no_classes_message(model: LoadedModel, need: str = "class scores") -> str:
    """The plain sentence every page shows when ``model`` has no classifier."""
    return (
        f"{model.name} is a network of convolutions only: it has no classifier, so there are no {need}. "
        f"Pick {CLASSIFIERS_HINT} in the sidebar; {model.name} serves the pages that look at features "
        "(filters, activations, patches, DeepDream, neuron visualization, inversion, style)."
    )


def _weights_enum(name: str):
    return torchvision.models.get_model_weights(name).DEFAULT


def cached_weights_path(name: str) -> Path:
    """Where the pretrained file for ``name`` is (or would be) kept: torchvision's cache for its
    models, cnnviz's cache of converted sources for ``PACKAGE_MODELS``."""
    if name in PACKAGE_MODELS:
        return converted_path(PACKAGE_WEIGHTS[name])
    url = _weights_enum(name).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(url).path)


def torchvision_weights_cached(name: str) -> bool:
    """True if torchvision's own pretrained file for ``name`` is in its cache."""
    return name in ZOO and cached_weights_path(name).is_file()


def pretrained_available(name: str) -> bool:
    """True if pretrained weights for ``name`` are ready to load without a network (torchvision's
    file, or the converted package weights)."""
    if name == SMALL_CNN:
        return True
    if name in PACKAGE_WEIGHTS and source_available(PACKAGE_WEIGHTS[name]):
        return True
    return name in ZOO and cached_weights_path(name).is_file()


def package_weights_label(name: str) -> str:
    """How captions name the package weights of ``name``, e.g. "ImageNet weights (ndf package)"."""
    source = SOURCES[PACKAGE_WEIGHTS[name]]
    what = "HED's VGG-16 convolutions" if name == "vgg16_features" else "ImageNet weights"
    return f"{what} ({source.package} package)"


def pretrained_choice_label(name: str) -> str:
    """What "pretrained" means for ``name`` on this machine, for the sidebar's Weights choice."""
    if name == SMALL_CNN:
        return "Trained on MNIST (bundled)"
    if name in PACKAGE_MODELS or (name in PACKAGE_WEIGHTS and not torchvision_weights_cached(name)
                                  and source_available(PACKAGE_WEIGHTS[name])):
        return package_weights_label(name).replace("ImageNet weights", "ImageNet")
    return "ImageNet (torchvision)"


def missing_weights_hint(name: str) -> str:
    """One line saying how to get the trained weights of ``name`` (empty when they are here)."""
    if pretrained_available(name):
        return ""
    if name in PACKAGE_WEIGHTS:
        also = f" or torchvision's file with `python -m cnnviz fetch {name}`" if name in ZOO else ""
        return (f"The trained weights of {name} are not on this machine: run `python -m cnnviz fetch "
                f"{PACKAGE_WEIGHTS[name]}` (needs the package index once){also}.")
    return f"ImageNet weights for {name} are not downloaded. Run `python -m cnnviz fetch {name}` on a connected machine."


def default_model() -> str:
    """The model the app opens on: SqueezeNet 1.1 when trained ImageNet weights for it are here
    (torchvision's or the ndf package's), else the bundled small CNN. ``$CNNVIZ_DEFAULT_MODEL``
    (a zoo name) overrides it, e.g. for a lab on digits."""
    chosen = os.environ.get("CNNVIZ_DEFAULT_MODEL", "")
    if chosen in MODEL_NAMES:
        return chosen
    return "squeezenet1_1" if pretrained_available("squeezenet1_1") else SMALL_CNN


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet class names, from torchvision's weights metadata."""
    return list(torchvision.models.SqueezeNet1_1_Weights.DEFAULT.meta["categories"])


def _package_model_io(name: str) -> tuple[Preprocessing, list[str]]:
    """Preprocessing and class names of a ``PACKAGE_MODELS`` entry."""
    if name == "efficientnet_lite0":
        mean, std = EFFICIENTNET_LITE_MEAN_STD
        return Preprocessing(resize=256, crop=224, mean=(mean,) * 3, std=(std,) * 3), imagenet_classes()
    from .converters import HED_MEAN_BGR

    # HED's input is 255 * RGB - mean (the BGR order is folded into the first convolution):
    # (x - mean / 255) / (1 / 255) with the existing pipeline, exactly
    return Preprocessing(resize=224, crop=224, mean=tuple(m / 255 for m in HED_MEAN_BGR[::-1]), std=(1 / 255,) * 3), []


def _source_state(name: str) -> dict[str, Tensor]:
    """The converted package weights of ``name`` as a state dict of its module."""
    try:
        tensors, _ = load_source(PACKAGE_WEIGHTS[name])
    except SourceError as error:
        raise WeightsUnavailable(str(error)) from None
    if name == "vgg16_features":  # the module is vgg16().features itself
        tensors = {k[len("features."):]: v for k, v in tensors.items() if k.startswith("features.")}
    return tensors


def can_reach(url: str, timeout: float = 3.0) -> bool:
    """True if a TCP connection to the URL's host and port opens within ``timeout`` seconds."""
    parsed = urllib.parse.urlparse(url)
    host, port = parsed.hostname or "", parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _missing_weights_message(name: str) -> str:
    path = cached_weights_path(name)
    return (
        f"The pretrained {name} weights are not on this machine and cannot be downloaded (no network).\n"
        f"File needed: {path.name}, expected at {path}.\n"
        f"On a connected machine run `python -m cnnviz fetch {name}` and copy that file to the same place, "
        "or pick the bundled small CNN, random weights, or upload a weights file."
        + (f"\nOr take them from a package index: `python -m cnnviz fetch {PACKAGE_WEIGHTS[name]}`."
           if name in PACKAGE_WEIGHTS else "")
    )


def _build(name: str) -> nn.Module:
    """The architecture with random weights seeded 0, drawn from a private generator: the global
    RNG is neither read nor seeded, so models built at once in several threads do not race."""
    if name != SMALL_CNN and name not in ZOO and name not in PACKAGE_MODELS:
        raise KeyError(f"Unknown model {name!r}. Available: {', '.join(MODEL_NAMES)}.")
    with seeded(0):
        if name == SMALL_CNN:
            return SmallCNN()
        if name == "efficientnet_lite0":
            from .efficientnet_lite import EfficientNetLite

            return EfficientNetLite()
        if name == "vgg16_features":
            return _vgg16_features()
        return torchvision.models.get_model(name, weights=None, **ZOO[name])


def _vgg16_features() -> nn.Sequential:
    """``torchvision.models.vgg16().features`` (indices 0..30), initialised as torchvision's VGG does,
    without building the 120 M-parameter classifier."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["D"])
    for module in features.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return features


def _finish(name: str, module: nn.Module, pre: Preprocessing, classes, weights: str, pretrained: bool,
            device: torch.device | str | None = None) -> LoadedModel:
    module.eval()
    for param in module.parameters():
        param.grad = None
    if device is not None and torch.device(device).type != "cpu":
        module.to(device)
        pre = replace(pre, device=str(module_device(module)))
    return LoadedModel(name, module, pre, tuple(classes), weights, pretrained)


def _small_cnn_metadata() -> tuple[dict[str, str], dict[str, Tensor]]:
    from safetensors import safe_open

    with safe_open(str(CHECKPOINT), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    return meta, state


def load_model(
    name: str,
    pretrained: bool = True,
    state_dict: Mapping[str, Tensor] | None = None,
    weights_label: str = "uploaded weights",
    device: torch.device | str | None = None,
) -> LoadedModel:
    """Build a model of the zoo.

    Args:
        name: one of ``MODEL_NAMES``.
        pretrained: load real trained weights (ImageNet for torchvision models, the bundled digits
            checkpoint for ``small_cnn``); else seeded random weights.
        state_dict: weights to load instead (e.g. from ``load_state_dict``); checked against the
            architecture.
        weights_label: how to describe ``state_dict`` weights in captions.
        device: where the module goes ("cuda", "mps", a ``torch.device``); None: the CPU. Its
            ``preprocessing`` then puts inputs there too (see ``cnnviz.device.choose_device``).

    Returns:
        A ``LoadedModel`` in eval mode, on ``device``.

    Raises:
        WeightsUnavailable: pretrained weights are neither cached nor downloadable.
        ValueError: ``state_dict`` does not fit the architecture.
    """
    if name == SMALL_CNN:
        meta, bundled = _small_cnn_metadata()
        pre = digits_preprocessing(json.loads(meta["mean"])[0], json.loads(meta["std"])[0])
        classes = json.loads(meta.get("class_names", json.dumps(CLASS_NAMES)))
        module = _build(name)
        if state_dict is not None:
            apply_state_dict(module, state_dict)
            return _finish(name, module, pre, classes, weights_label, True, device=device)
        if pretrained:
            module.load_state_dict(bundled)
            return _finish(name, module, pre, classes, SMALL_CNN_LABEL, True, device=device)
        return _finish(name, module, pre, classes, "random weights", False, device=device)

    if name in PACKAGE_MODELS:
        pre, classes = _package_model_io(name)
        module = _build(name)
        if state_dict is not None:
            apply_state_dict(module, state_dict)
            return _finish(name, module, pre, classes, weights_label, True, device=device)
        if not pretrained:
            return _finish(name, module, pre, classes, "random weights", False, device=device)
        apply_state_dict(module, _source_state(name))
        return _finish(name, module, pre, classes, package_weights_label(name), True, device=device)

    if name not in ZOO:
        raise KeyError(f"Unknown model {name!r}. Available: {', '.join(MODEL_NAMES)}.")
    weights = _weights_enum(name)
    pre = Preprocessing.from_transforms(weights.transforms())
    classes = weights.meta["categories"]
    if state_dict is not None:
        module = _build(name)
        apply_state_dict(module, state_dict)
        return _finish(name, module, pre, classes, weights_label, True, device=device)
    if not pretrained:
        return _finish(name, _build(name), pre, classes, "random weights", False, device=device)
    if not torchvision_weights_cached(name) and name in PACKAGE_WEIGHTS and source_available(PACKAGE_WEIGHTS[name]):
        module = _build(name)
        apply_state_dict(module, _source_state(name))
        return _finish(name, module, pre, classes, package_weights_label(name), True, device=device)
    if not torchvision_weights_cached(name) and not can_reach(weights.url):
        raise WeightsUnavailable(_missing_weights_message(name))
    try:
        with seeded(0):  # the random init before the weights load draws from a private generator
            module = torchvision.models.get_model(name, weights=weights)
    except Exception as error:  # a failed download or a damaged cached file
        path = cached_weights_path(name)
        raise WeightsUnavailable(
            f"Loading the pretrained {name} weights failed ({type(error).__name__}: {error}). "
            f"If {path} exists it may be damaged: delete it and run `python -m cnnviz fetch {name}`."
        ) from None
    return _finish(name, module, pre, classes, TORCHVISION_LABEL, True, device=device)


TORCHVISION_LABEL = "ImageNet weights (torchvision)"


def fetch(names: list[str], progress: bool = True) -> list[Path]:
    """Download pretrained weights into torchvision's cache, with a progress bar.

    Run before a lecture on a connected machine: ``python -m cnnviz fetch resnet18 vgg19``.
    ``PACKAGE_MODELS`` fetch their pinned source instead (``cnnviz.sources.fetch_source``).

    Raises:
        WeightsUnavailable: when there is no network.
    """
    from .sources import fetch_source

    paths = []
    for name in names:
        if name == SMALL_CNN:
            continue
        if name in PACKAGE_MODELS:
            try:
                paths.append(fetch_source(PACKAGE_WEIGHTS[name], say=print if progress else lambda _: None))
            except SourceError as error:
                raise WeightsUnavailable(str(error)) from None
            continue
        weights = _weights_enum(name)
        if not torchvision_weights_cached(name) and not can_reach(weights.url):
            raise WeightsUnavailable(
                f"Cannot reach {urllib.parse.urlparse(weights.url).hostname} to download {name}: no network. "
                f"Run this on a connected machine, then copy {cached_weights_path(name).name} "
                f"to {cached_weights_path(name).parent}."
            )
        weights.get_state_dict(progress=progress, check_hash=True)
        paths.append(cached_weights_path(name))
    return paths


# --- weights files -------------------------------------------------------------------------

WeightsSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO]


def _read_source(source: WeightsSource) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), ""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"No weights file at {path}.")
        return path.read_bytes(), path.name
    if hasattr(source, "read"):
        data = source.read(MAX_WEIGHTS_BYTES + 1)
        return bytes(data), str(getattr(source, "name", ""))
    raise ValueError(f"Cannot read weights from a {type(source).__name__}; give a path, bytes or a file object.")


def _unwrap(obj: object) -> dict[str, Tensor]:
    """Accept {"state_dict": ...} / {"model": ...} wrappers and DataParallel's "module." prefix."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            "This file holds no state dict (a mapping from layer names to tensors). Save weights with "
            "`torch.save(model.state_dict(), 'weights.pt')` or as .safetensors."
        )
    if all(str(k).startswith("module.") for k in obj):
        obj = {str(k)[len("module."):]: v for k, v in obj.items()}
    return {str(k): v for k, v in obj.items()}


def load_state_dict(source: WeightsSource) -> dict[str, Tensor]:
    """Read a weights file safely: ``.pt``/``.pth`` with ``weights_only=True``, or ``.safetensors``.

    No code in the file ever runs: pickles that would build arbitrary objects are refused.

    Args:
        source: path, bytes, or binary file object.

    Returns:
        A state dict, layer name -> tensor.

    Raises:
        ValueError: for an empty, truncated, unsafe or non-weights file, with a plain message.
    """
    data, filename = _read_source(source)
    if not data:
        raise ValueError("The weights file is empty.")
    if len(data) > MAX_WEIGHTS_BYTES:
        raise ValueError(f"The weights file is larger than {MAX_WEIGHTS_BYTES // 2**30} GB.")
    looks_safetensors = filename.endswith(".safetensors") or (
        len(data) > 8 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") < 100 * 2**20
    )
    if looks_safetensors:
        try:
            return _unwrap(load_safetensors_bytes(data))
        except (SafetensorError, ValueError, KeyError, OSError) as error:
            if isinstance(error, ValueError) and "state dict" in str(error):
                raise
            raise ValueError(f"This .safetensors file is damaged or truncated ({error}).") from None
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            "This file contains Python objects or code, not just weights, so cnnviz refuses to open it "
            "(only plain tensors are loaded, with weights_only=True). Save the model with "
            f"`torch.save(model.state_dict(), path)` or as .safetensors. Detail: {str(error).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError, AttributeError) as error:
        raise ValueError(
            f"This is not a readable PyTorch weights file; it may be truncated or of another format ({error})."
        ) from None
    return _unwrap(obj)


def apply_state_dict(module: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load ``state_dict`` into ``module`` after checking that names and shapes match.

    Raises:
        ValueError: naming the missing, unexpected or mis-shaped entries when the weights are for
            another architecture.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mis_shaped = [
        f"{k} (file {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)})"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mis_shaped:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
            if items:
                parts.append(f"{len(items)} {title} (e.g. {', '.join(items[:3])})")
        raise ValueError(
            f"These weights do not fit {type(module).__name__}: " + "; ".join(parts)
            + ". Pick the architecture the weights were trained for."
        )
    module.load_state_dict({k: state_dict[k].to(own[k].dtype) for k in own})


def predict(model: LoadedModel, x: Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k classes with softmax probabilities for each image of a batch.

    Args:
        x: preprocessed batch (N, C, H, W).

    Returns:
        For each image, k pairs (class name, probability), most likely first.

    Raises:
        ValueError: the model has no classifier (``vgg16_features``).
    """
    if not model.classifies:
        raise ValueError(no_classes_message(model, "predictions"))
    with torch.inference_mode():
        probs = torch.softmax(model.module(x).float(), dim=1)
    top = probs.topk(min(k, probs.shape[1]), dim=1)
    return [
        [(model.class_names[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]
        for values, indices in zip(top.values, top.indices)
    ]

