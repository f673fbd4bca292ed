"""Training neural networks, usable from a notebook: a configurable small CNN, augmentations, a
training generator with early stopping and snapshots, the lecture's recipe (initial loss,
overfitting a sample, LR finder, coarse-to-fine search, curve reading, ensembles, test-time
augmentation), gradient checking and transfer learning. No Streamlit here.

    from cnnviz.training import TrainConfig, NetConfig, mnist_data, train
    data = mnist_data()
    for record in train(TrainConfig(epochs=6), data):
        if record.kind == "epoch":
            print(record.epoch, record.val_accuracy)
    model = record.result.model
"""

from .augment import AugmentConfig, apply, augmentation, color_jitter, compose, crop_scale, cutout, hflip, mixup
from .data import TrainData, dataset_data, digits_data, faces_dataset, mnist_data
from .export import TRAINED, load_trained, save_trained, to_loaded_model
from .gradcheck import GradCheckReport, gradient_check
from .loop import Record, TrainConfig, TrainResult, evaluate, learning_rate, run, train, with_overrides
from .network import ACTIVATIONS, INITS, NetConfig, TrainableCNN, build_network, initialize
from .recipe import (curve_hints, ensemble_report, initial_loss, lr_finder, overfit_small_sample, search,
                     train_ensemble, tta_report)
from .transfer import from_scratch, transfer_learning

__all__ = [
    "ACTIVATIONS", "INITS", "AugmentConfig", "GradCheckReport", "NetConfig", "Record", "TRAINED", "TrainConfig",
    "TrainData", "TrainResult", "TrainableCNN", "apply", "augmentation", "build_network", "color_jitter", "compose",
    "crop_scale", "curve_hints", "cutout", "dataset_data", "digits_data", "ensemble_report", "evaluate",
    "faces_dataset", "from_scratch", "gradient_check", "hflip", "initial_loss", "initialize", "learning_rate",
    "load_trained", "lr_finder", "mixup", "mnist_data", "overfit_small_sample", "run", "save_trained", "search",
    "to_loaded_model", "train", "train_ensemble", "transfer_learning", "tta_report", "with_overrides",
]
