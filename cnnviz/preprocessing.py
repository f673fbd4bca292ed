"""The one image pipeline: from any RGB image to the tensor a model expects, and back.

Its numbers come from the model's weights (``weights.transforms()`` for torchvision models,
the checkpoint's metadata for the small CNN), never from hand-typed constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.transforms import InterpolationMode

from .display import pixels_to_array


@dataclass(frozen=True)
class Preprocessing:
    """Resize, center-crop, channel conversion and normalisation for one model.

    Attributes:
        resize: shorter side after resizing, in pixels.
        crop: side of the square center crop the model sees.
        mean, std: per-channel normalisation, one entry per input channel.
        interpolation: resampling used for the resize.
        invert_light_background: for models trained on light-on-dark data (the digits CNN):
            invert an image whose border is mostly light, such as a pen drawing on paper.
        pad: pixels of black added on every side after the crop, as LeNet-5 padded MNIST's
            28×28 digits to 32×32: a 28×28 digit is padded, never stretched, and any other image
            is first resized and cropped to 28×28, so it fills the frame as a digit would.

        device: where ``__call__`` puts the input tensor: the model's device ("cpu", "cuda",
            "mps"; ``cnnviz.models.load_model(..., device=...)`` sets it).
    """

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: InterpolationMode = InterpolationMode.BILINEAR
    invert_light_background: bool = False
    pad: int = 0
    device: str = "cpu"

    @classmethod
    def from_transforms(cls, transforms: object) -> "Preprocessing":
        """Read the numbers of a torchvision ``ImageClassification`` preset."""
        return cls(
            resize=int(transforms.resize_size[0]),
            crop=int(transforms.crop_size[0]),
            mean=tuple(float(v) for v in transforms.mean),
            std=tuple(float(v) for v in transforms.std),
            interpolation=transforms.interpolation,
        )

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image."""
        side = self.crop + 2 * self.pad
        return (self.channels, side, side)

    def view(self, image: Image.Image) -> Image.Image:
        """The image exactly as the model sees it, before normalisation (resized, cropped, padded).

        Overlays (saliency, Grad-CAM) are drawn on this image, so they line up with the input.
        """
        image = image.convert("RGB")
        image = TF.resize(image, self.resize, interpolation=self.interpolation, antialias=True)
        image = TF.center_crop(image, [self.crop, self.crop])
        if self.channels == 1:
            image = image.convert("L")
            if self.invert_light_background and _border_mean(image) > 127:
                image = Image.eval(image, lambda v: 255 - v)
        if self.pad:
            image = ImageOps.expand(image, border=self.pad, fill=0)
        return image

    @cached_property
    def _affine(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(1/std, -mean/std, std, mean) as (1, C, 1, 1) float32 on the CPU, built once per pipeline
        (``normalize`` and ``denormalize`` move them to the input's device and dtype)."""
        mean = torch.tensor(self.mean, dtype=torch.float64, device="cpu").view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float64, device="cpu").view(1, -1, 1, 1)
        return tuple(t.float() for t in (1 / std, -mean / std, std, mean))  # type: ignore[return-value]

    def normalize(self, x: Tensor) -> Tensor:
        """(N, C, H, W) in [0, 1] -> normalised model input, (x - mean) / std as one op."""
        scale, shift, _, _ = self._affine
        return torch.addcmul(shift.to(x), x, scale.to(x))

    def denormalize(self, x: Tensor) -> Tensor:
        """Normalised (N, C, H, W) -> pixel values in [0, 1] (not clipped)."""
        _, _, std, mean = self._affine
        return torch.addcmul(mean.to(x), x, std.to(x))

    def __call__(self, image: Image.Image) -> Tensor:
        """RGB PIL image -> normalised input batch of one, (1, C, H, W) float32, on ``self.device``."""
        with torch.device("cpu"):  # decoded on the CPU whatever torch's default device, then moved
            pixels = TF.pil_to_tensor(self.view(image)).float().div(255.0).unsqueeze(0)
        if self.device != "cpu":
            pixels = pixels.to(self.device)
        return self.normalize(pixels)

    def to_pil(self, x: Tensor) -> Image.Image:
        """First image of a normalised batch (N, C, H, W) -> PIL image (L or RGB)."""
        return Image.fromarray(pixels_to_array(self.denormalize(x[:1].detach().float().cpu())))


def _border_mean(image: Image.Image) -> float:
    array = np.asarray(image, dtype=np.float64)
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    return float(border.mean())
