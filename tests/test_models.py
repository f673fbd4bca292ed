"""The model zoo, weights loading (safe and offline), the image pipeline and the bundled small CNN."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save as save_safetensors

from cnnviz.layers import layer_table
from cnnviz.models import (
    MODEL_NAMES,
    ZOO,
    WeightsUnavailable,
    apply_state_dict,
    cached_weights_path,
    load_model,
    load_state_dict,
    predict,
)
from cnnviz.samples import load_sample
from cnnviz.data import mnist_dataset
from cnnviz.small_cnn import SmallCNN, load_digits_images
from conftest import ROOT


@pytest.fixture()
def empty_hub(tmp_path, monkeypatch):
    """An empty torchvision cache, so no real pretrained file can be found."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_builds_offline_with_random_weights(name):
    model = load_model(name, pretrained=False)
    assert not model.module.training and not model.pretrained
    assert "random weights" in model.label
    rows = layer_table(model.module, model.input_size)
    assert sum(r.parameters for r in rows if r.depth == 0) == sum(p.numel() for p in model.module.parameters())
    x = model.preprocessing(load_sample("cat (scikit-image)"))
    if not model.classifies:  # vgg16_features: convolutions only, and predict says so
        assert name == "vgg16_features" and rows[-1].output_shape == (1, 512, 7, 7)
        with pytest.raises(ValueError, match="no classifier"):
            predict(model, x)
        return
    assert rows and int(np.prod(rows[-1].output_shape)) == len(model.class_names)  # squeezenet ends (1, 1000, 1, 1)
    top = predict(model, x, k=5)[0]
    probs = [p for _, p in top]
    assert len(top) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    if name in ZOO:
        weights = torchvision.models.get_model_weights(name).DEFAULT
        assert list(model.class_names) == weights.meta["categories"] and len(model.class_names) == 1000


def test_random_weights_are_seeded_and_leave_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = load_model("resnet18", pretrained=False).module.conv1.weight
    after = torch.rand(3)
    b = load_model("resnet18", pretrained=False).module.conv1.weight
    assert torch.equal(a, b) and torch.equal(expected, after)


def _architecture(name: str) -> torch.nn.Module:
    """A freshly initialised architecture, drawing from the global generator."""
    if name == "small_cnn":
        return SmallCNN()
    if name == "efficientnet_lite0":
        from cnnviz.efficientnet_lite import EfficientNetLite

        return EfficientNetLite()
    if name == "vgg16_features":
        from cnnviz.models import _vgg16_features

        return _vgg16_features()
    return torchvision.models.get_model(name, weights=None, **ZOO[name])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_random_weights_are_those_of_manual_seed_0_without_touching_the_global_generator(name):
    with torch.random.fork_rng(devices=[]):  # what models._build did before it drew from a private generator
        torch.manual_seed(0)
        expected = _architecture(name)
    state = torch.random.get_rng_state()
    module = load_model(name, pretrained=False).module
    assert torch.equal(torch.random.get_rng_state(), state)
    got = module.state_dict()
    assert list(got) == list(expected.state_dict())
    assert all(torch.equal(got[key], value) for key, value in expected.state_dict().items())


def test_training_starts_from_the_bundled_initialisation_without_seeding_the_global_generator():
    from cnnviz.small_cnn import load_history, train_small_cnn

    state = torch.random.get_rng_state()
    result = train_small_cnn(epochs=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    _, initial = next(iter(load_history()))
    assert all(torch.equal(result.snapshots[0][key], value) for key, value in initial.items())


def test_preprocessing_matches_torchvision_transforms():
    model = load_model("resnet18", pretrained=False)
    image = load_sample("astronaut (scikit-image)")
    oracle = torchvision.models.ResNet18_Weights.DEFAULT.transforms()(image).unsqueeze(0)
    assert torch.allclose(model.preprocessing(image), oracle, atol=1e-5)
    assert model.preprocessing.view(image).size == (224, 224)
    roundtrip = np.asarray(model.preprocessing.to_pil(oracle), dtype=np.int16)
    assert np.abs(roundtrip - np.asarray(model.preprocessing.view(image), dtype=np.int16)).max() <= 1


def test_small_cnn_input_pipeline_inverts_pen_on_paper():
    model = load_model("small_cnn")
    digit = load_sample("digit 7")
    inverted = digit.point(lambda v: 255 - v)  # dark ink on white paper
    assert torch.allclose(model.preprocessing(digit), model.preprocessing(inverted), atol=1e-6)
    assert predict(model, model.preprocessing(inverted), 1)[0][0][0] == "7"


def test_bundled_small_cnn_held_out_accuracy():
    """98.1 % on the 1,000 held-out MNIST digits (measured); 79.0 % on scikit-learn's 1,797 8×8 digits,
    framed as MNIST frames its digits (another, blurrier domain)."""
    model = load_model("small_cnn")
    held_out = mnist_dataset("test")
    assert len(held_out) == 1000 and np.bincount(held_out.labels).tolist() == [100] * 10
    x = held_out.batch(model.preprocessing, range(len(held_out)))
    assert x.shape == (1000, 1, 32, 32)
    with torch.inference_mode():
        accuracy = (model.module(x).argmax(1).numpy() == held_out.labels).mean()
    assert accuracy >= 0.98, accuracy
    images, labels = load_digits_images()
    with torch.inference_mode():
        sklearn_accuracy = (model.module(torch.cat([model.preprocessing(im) for im in images])).argmax(1).numpy() == labels).mean()
    assert sklearn_accuracy >= 0.75, sklearn_accuracy
    assert model.pretrained and model.label == "small_cnn · trained on MNIST"


def test_small_cnn_pads_a_28x28_digit_by_2_pixels_as_lenet5():
    model = load_model("small_cnn")
    digit = mnist_dataset("test", limit=1).images[0]
    view = np.asarray(model.preprocessing.view(digit))
    assert view.shape == (32, 32)
    assert np.array_equal(view[2:30, 2:30], np.asarray(digit.convert("L"))) and view[:2].max() == view[:, :2].max() == 0
    photo = model.preprocessing.view(load_sample("astronaut (scikit-image)"))
    assert photo.size == (32, 32) and np.asarray(photo)[:2].max() == 0  # resized to 28, then padded


def test_missing_pretrained_weights_fail_fast_with_a_clear_message(empty_hub):
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as info:
        load_model("resnet18", pretrained=True)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and "python -m cnnviz fetch resnet18" in message
    assert str(empty_hub) in message


def test_cached_pretrained_file_is_loaded_without_network(empty_hub):
    reference = torchvision.models.resnet18(weights=None)
    path = cached_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = load_model("resnet18", pretrained=True)
    assert model.pretrained and model.weights == "ImageNet weights (torchvision)"
    assert torch.equal(model.module.fc.weight, reference.fc.weight)


def test_fetch_command_fails_fast_offline(tmp_path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "cnnviz", "fetch", "vgg16"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no network" in result.stderr and "Traceback" not in result.stderr


# --- weights files -------------------------------------------------------------------------

def _pt_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_state_dict_roundtrips_from_pt_safetensors_path_and_file(tmp_path):
    state = SmallCNN().state_dict()
    path = tmp_path / "w.safetensors"
    path.write_bytes(save_safetensors(state))
    for source in (_pt_bytes(state), path, open(path, "rb"), _pt_bytes({"state_dict": state}),
                   _pt_bytes({"module." + k: v for k, v in state.items()})):
        loaded = load_state_dict(source)
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    model = load_model("small_cnn", state_dict=load_state_dict(path), weights_label="uploaded weights (w.safetensors)")
    assert torch.equal(model.module.features[0].weight, state["features.0.weight"])
    assert model.label == "small_cnn · uploaded weights (w.safetensors)"


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    data = _pt_bytes({"features.0.weight": torch.zeros(1), "evil": _Exploit(str(marker))})
    with pytest.raises(ValueError, match="refuses to open"):
        load_state_dict(data)
    assert not marker.exists()


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (_pt_bytes(SmallCNN().state_dict())[:300], "not a readable PyTorch weights file"),
        (save_safetensors(SmallCNN().state_dict())[:200], "damaged or truncated"),
        (b"PK\x03\x04 garbage" * 10, "not a readable"),
        (_pt_bytes([1, 2, 3]), "no state dict"),
    ],
    ids=["empty", "truncated-pt", "truncated-safetensors", "bad-zip", "not-a-dict"],
)
def test_bad_weights_files_give_plain_value_errors(data, words):
    with pytest.raises(ValueError, match=words):
        load_state_dict(data)


def test_weights_of_another_architecture_are_refused():
    state = load_state_dict(_pt_bytes(SmallCNN().state_dict()))
    with pytest.raises(ValueError, match="do not fit ResNet") as info:
        load_model("resnet18", state_dict=state)
    assert "missing" in str(info.value) and "unexpected" in str(info.value)
    wide = SmallCNN(width=8).state_dict()
    with pytest.raises(ValueError, match="wrong shape"):
        apply_state_dict(SmallCNN(), wide)
