"""The loss network of every style method: VGG-16's convolutional part, and Gatys' layer names.

Style and content are read from ReLU outputs, as in Gatys et al. (2016) and most implementations:
"conv1_1" means the output of the ReLU after VGG-16's first convolution (``relu1_1``). In the
``nn.Sequential`` laid out like ``torchvision.models.vgg16().features`` that ReLU is module "1"; the
hooks record a layer's output as it left the layer, so module "1" gives the rectified features.
"""

from __future__ import annotations

from ..models import LoadedModel

VGG_MODEL = "vgg16_features"
"""The zoo name of VGG-16's convolutions (trained weights from the HED edge detector)."""

VGG_LAYERS: dict[str, str] = {
    "conv1_1": "1", "conv1_2": "3",
    "conv2_1": "6", "conv2_2": "8",
    "conv3_1": "11", "conv3_2": "13", "conv3_3": "15",
    "conv4_1": "18", "conv4_2": "20", "conv4_3": "22",
    "conv5_1": "25", "conv5_2": "27", "conv5_3": "29",
}
"""Gatys' layer name -> the module (the ReLU after that convolution) whose output is recorded."""

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
"""Gatys et al.'s style layers."""
CONTENT_LAYER = "conv4_2"
"""Gatys et al.'s content layer."""


def module_name(layer: str) -> str:
    """A Gatys layer name ("conv4_2") as the module name of the VGG ``Sequential`` ("20"); any
    other name is returned as it is (so the style functions work on any model's layer names)."""
    return VGG_LAYERS.get(layer, layer)


def loss_network(pretrained: bool = True, device: str | None = None) -> LoadedModel:
    """VGG-16's convolutions (``load_model("vgg16_features")``), the loss network of every style method.

    Args:
        pretrained: the trained weights (needs the pinned source fetched once); else seeded random weights.
        device: where it runs ("cuda", "mps"; None: the CPU, see ``cnnviz.device.choose_device``).
    """
    from ..models import load_model

    return load_model(VGG_MODEL, pretrained=pretrained, device=device)
