"""cnnviz: see and understand convolutional networks. A plain library; the app is built on it."""

from .images import ImageError, load_image
from .models import MODEL_NAMES, LoadedModel, WeightsUnavailable, load_model, load_state_dict, predict

__all__ = [
    "ImageError",
    "LoadedModel",
    "MODEL_NAMES",
    "WeightsUnavailable",
    "load_image",
    "load_model",
    "load_state_dict",
    "predict",
]
