"""A trained network as a ``LoadedModel`` (what every page uses) and as a safetensors file."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from ..models import LoadedModel
from ..preprocessing import Preprocessing
from .loop import TrainConfig, TrainResult
from .network import build_network

TRAINED = "trained_cnn"
"""``LoadedModel.name`` of networks trained in the app."""


def preprocessing_of(result: TrainResult) -> Preprocessing:
    """The image pipeline the trained network expects."""
    inner = result.size - 2 * result.pad
    return Preprocessing(resize=inner, crop=inner, mean=result.mean, std=result.std,
                         invert_light_background=result.invert_light_background, pad=result.pad)


def to_loaded_model(result: TrainResult, weights_label: str | None = None) -> LoadedModel:
    """Wrap a finished run as a ``LoadedModel`` in eval mode.

    Args:
        weights_label: how captions describe the weights; default "trained here on <data> (<acc> val.)".
    """
    result.model.eval()
    label = weights_label or f"trained here on {result.data_name.split(' (')[0]} ({result.val_accuracy:.1%} validation)"
    return LoadedModel(TRAINED, result.model, preprocessing_of(result), tuple(result.class_names), label, True)


def save_trained(result: TrainResult) -> bytes:
    """The network's weights as safetensors bytes, with everything needed to rebuild and use it
    (config, class names, normalisation, size, history) in the metadata."""
    history = [{"epoch": r.epoch, "loss": r.loss, "train_accuracy": r.train_accuracy, "val_accuracy": r.val_accuracy}
               for r in result.history]
    meta = {
        "architecture": "cnnviz.training.TrainableCNN",
        "config": result.config.to_json(),
        "dataset": result.data_name,
        "class_names": json.dumps(list(result.class_names)),
        "mean": json.dumps(list(result.mean)),
        "std": json.dumps(list(result.std)),
        "size": str(result.size),
        "channels": str(result.channels),
        "invert_light_background": json.dumps(result.invert_light_background),
        "pad": str(result.pad),
        "best_epoch": str(result.best_epoch),
        "val_accuracy": f"{result.val_accuracy:.4f}",
        "history": json.dumps(history),
    }
    state = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
    return save_safetensors_bytes(state, metadata=meta)


def load_trained(data: bytes) -> LoadedModel:
    """Rebuild a network saved by ``save_trained`` (only tensors and JSON are read).

    Raises:
        ValueError: when the file is not a network saved by cnnviz's training.
    """
    try:
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + header_len]).get("__metadata__", {})
        state = load_safetensors_bytes(data)
    except Exception:  # noqa: BLE001  (any damage: a plain message, never a traceback)
        raise ValueError("This is not a readable safetensors file saved by cnnviz's Train page.") from None
    if not isinstance(meta, dict) or meta.get("architecture") != "cnnviz.training.TrainableCNN":
        raise ValueError("This safetensors file holds no network saved by cnnviz's Train page.")
    config = TrainConfig.from_json(meta["config"])
    classes = tuple(json.loads(meta["class_names"]))
    model = build_network(config.net, int(meta["channels"]), len(classes), int(meta["size"]), torch.Generator())
    model.load_state_dict(state)
    model.eval()
    pad = int(meta.get("pad", "0"))
    inner = int(meta["size"]) - 2 * pad
    pre = Preprocessing(resize=inner, crop=inner, mean=tuple(json.loads(meta["mean"])), std=tuple(json.loads(meta["std"])),
                        invert_light_background=json.loads(meta["invert_light_background"]), pad=pad)
    label = f"trained on {meta['dataset'].split(' (')[0]} ({float(meta['val_accuracy']):.1%} validation), from a file"
    return LoadedModel(TRAINED, model, pre, classes, label, True)
