"""cnnviz.features against independent oracles: torchvision's create_feature_extractor, hand-computed
receptive fields and input gradients, brute-force search, numpy PCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from torchvision.models.feature_extraction import create_feature_extractor

from cnnviz.data import digits_dataset
from cnnviz.features import (
    channel_maxima,
    channel_stats,
    crop_patch,
    dead_channels,
    embed_2d,
    extract_features,
    feature_map_grid,
    feature_maps,
    filter_grid,
    maximally_activating_patches,
    nearest_neighbors,
    penultimate_layer,
    receptive_field,
    spatial_layers,
    top_activations,
)
from cnnviz.hooks import leftover_state
from cnnviz.models import LoadedModel, load_model
from cnnviz.small_cnn import SmallCNN


@pytest.fixture(scope="module")
def resnet18():
    return load_model("resnet18", pretrained=False)


@pytest.fixture(scope="module")
def vgg16():
    return load_model("vgg16", pretrained=False)


@pytest.fixture(scope="module")
def digits():
    return digits_dataset(limit=120)


def _x64(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


# --- feature_maps vs create_feature_extractor ---------------------------------------------------------


def test_feature_maps_match_create_feature_extractor_small_cnn(small_cnn, digit_batch):
    x, _ = digit_batch
    names = [f"features.{i}" for i in range(10)] + ["classifier.0", "classifier.1"]
    ours = feature_maps(small_cnn.module, x, names)
    with torch.no_grad():
        oracle = create_feature_extractor(small_cnn.module, names)(x)
    for name in names:  # SmallCNN's ReLUs are not in-place, so every layer's value coincides
        torch.testing.assert_close(ours[name], oracle[name], msg=name)
    assert leftover_state(small_cnn.module) == []


def test_feature_maps_match_create_feature_extractor_resnet18(resnet18):
    model = resnet18.module
    x = _x64()
    same = ["conv1", "relu", "maxpool", "layer1", "layer2.0.conv1", "layer3", "layer4", "avgpool", "fc"]
    ours = feature_maps(model, x, [*same, "bn1"])
    with torch.no_grad():
        oracle = create_feature_extractor(model, [*same, "bn1"])(x)
    for name in same:
        torch.testing.assert_close(ours[name], oracle[name], msg=name)
    # bn1 is followed by an in-place ReLU: the FX graph's bn1 value is overwritten by it afterwards,
    # while feature_maps keeps bn1's output as it left the layer (negative values included).
    torch.testing.assert_close(oracle["bn1"], ours["bn1"].clamp(min=0))
    assert (ours["bn1"] < 0).any()
    assert leftover_state(model) == []


def test_feature_maps_match_create_feature_extractor_vgg16(vgg16):
    model = vgg16.module
    x = _x64(1)
    # ReLUs and pools (a conv's own value would be the in-place ReLU's, as for resnet's bn1 above)
    names = ["features.1", "features.4", "features.16", "features.29", "features.30", "avgpool", "classifier.6"]
    ours = feature_maps(model, x, names)
    with torch.no_grad():
        oracle = create_feature_extractor(model, names)(x)
    for name in names:
        torch.testing.assert_close(ours[name], oracle[name], msg=name)
    assert leftover_state(model) == []


def test_feature_maps_bad_layer_name_is_clear_and_clean(small_cnn, digit_batch):
    with pytest.raises(KeyError, match="no layer called"):
        feature_maps(small_cnn.module, digit_batch[0], ["features.99"])
    assert leftover_state(small_cnn.module) == []


# --- receptive fields -----------------------------------------------------------------------------


def test_receptive_field_vgg16_by_hand(vgg16):
    # r' = r + (k-1)*j, j' = j*s, start' = start - p*j; 3x3 convs pad 1, 2x2 max pools stride 2.
    # features.0 conv: r=3, j=1, start=-1;  features.2 conv: r=5, start=-2
    # features.4 pool1: r=5+1*1=6, j=2, start=-2
    # features.5, .7 convs: r=6+2*2=10, 14 (start -4, -6); features.9 pool2: r=14+1*2=16, j=4, start -6
    # features.10, .12, .14 convs: r=16+8=24, 32, 40 (start -10,-14,-18); features.16 pool3: r=40+4=44, j=8
    # block 4: 3 convs +16 each: 92, pool4 (features.23): 92+8=100, j=16, start -18-3*8=-42
    # block 5: 3 convs +32 each: 196, pool5 (features.30): 196+16=212, j=32, start -42-3*16=-90
    expected = {
        "features.0": (3, 1, -1),
        "features.4": (6, 2, -2),
        "features.9": (16, 4, -6),
        "features.16": (44, 8, -18),
        "features.23": (100, 16, -42),
        "features.30": (212, 32, -90),
    }
    for layer, (size, jump, start) in expected.items():
        field = receptive_field(vgg16.module, layer, (3, 224, 224))
        assert field.method == "exact", layer
        assert (field.size, field.jump, field.start) == ((size, size), (jump, jump), (start, start)), layer
    # avgpool is AdaptiveAvgPool2d(7) on 7x7 maps at 224: the identity
    assert receptive_field(vgg16.module, "avgpool", (3, 224, 224)).size == (212, 212)
    assert receptive_field(vgg16.module, "classifier.0", (3, 224, 224)).method == "whole image"
    assert leftover_state(vgg16.module) == []


def test_receptive_field_small_cnn_by_hand(small_cnn):
    # conv3 p1: 3 (start -1); conv3 p1: 5 (start -2); pool2: 6, j 2; conv: 6+2*2=10, conv: 14 (start -2-2-2=-6);
    # pool2: 14+2=16, j 4.
    expected = {"features.0": (3, 1, -1), "features.2": (5, 1, -2), "features.4": (6, 2, -2),
                "features.5": (10, 2, -4), "features.7": (14, 2, -6), "features.9": (16, 4, -6)}
    for layer, (size, jump, start) in expected.items():
        field = receptive_field(small_cnn.module, layer, small_cnn.input_size)
        assert (field.size[0], field.jump[0], field.start[0], field.method) == (size, jump, start, "exact"), layer
    field = receptive_field(small_cnn.module, "features.9", small_cnn.input_size)
    assert field.box(0, 0) == (0, 0, 10, 10)  # -6..10 clipped
    assert field.box(3, 5) == (6, 14, 22, 30)
    assert field.box(7, 7) == (22, 22, 32, 32)  # 22..38 clipped to 32
    assert field.box(7, 7, clip=False) == (22, 22, 38, 38)


def _gradient_support(model: torch.nn.Module, layer: str, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """(H, W) bool: input pixels with a non-zero gradient of unit (i, j) of ``layer`` (all channels)."""
    from cnnviz.hooks import record_activations

    x = x.clone().requires_grad_(True)
    with record_activations(model, [layer], keep_graph=True) as acts, torch.enable_grad():
        model(x)
        (grad,) = torch.autograd.grad(acts[layer][:, :, i, j].sum(), x)
    return grad.abs().sum((0, 1)) > 0


@pytest.mark.parametrize("layer,unit", [("features.4", (5, 9)), ("features.9", (3, 5)), ("features.9", (0, 7))])
def test_receptive_field_small_cnn_matches_gradient(layer, unit):
    model = load_model("small_cnn", pretrained=False).module  # random weights: few dead units
    x = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    support = _gradient_support(model, layer, x, *unit)
    top, left, bottom, right = receptive_field(model, layer, (1, 32, 32)).box(*unit)
    inside = torch.zeros_like(support)
    inside[top:bottom, left:right] = True
    assert not (support & ~inside).any(), "gradient outside the computed receptive field"
    rows, cols = torch.nonzero(support.any(1)).flatten(), torch.nonzero(support.any(0)).flatten()
    # and the field is not too large: the gradient reaches its edges
    assert (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1) == (top, left, bottom, right)
    assert leftover_state(model) == []


def test_receptive_field_vgg16_contains_gradient(vgg16):
    x = _x64(2)
    support = _gradient_support(vgg16.module, "features.9", x, 6, 9)
    top, left, bottom, right = receptive_field(vgg16.module, "features.9", (3, 64, 64)).box(6, 9)
    outside = support.clone()
    outside[top:bottom, left:right] = False
    assert support.any() and not outside.any()


def test_receptive_field_resnet_is_empirical_and_right(resnet18):
    # not a chain (residual additions): measured from gradients; theory for layer1: conv1 7 (j 2),
    # maxpool +2*2 = 11 (j 4), four 3x3 convs +2*4 each = 43.
    field = receptive_field(resnet18.module, "layer1", (3, 128, 128))
    assert field.method == "empirical"
    assert field.size == (43, 43) and field.jump == (4, 4)
    assert receptive_field(resnet18.module, "maxpool", (3, 128, 128)).method == "exact"
    assert leftover_state(resnet18.module) == []


# --- channel maxima, patches, dead channels, stats ------------------------------------------------


def test_top_activations_match_brute_force(small_cnn, digits):
    layer, channel = "features.7", 5
    maxima = channel_maxima(small_cnn, digits, layer, batch_size=32)
    x = digits.batch(small_cnn.preprocessing, range(len(digits)))
    maps = feature_maps(small_cnn.module, x, [layer])[layer][:, channel]  # (N, 16, 16)
    best = maps.flatten(1).max(1)
    order = torch.argsort(best.values, descending=True, stable=True)[:6]
    hits = top_activations(maxima, channel, k=6)
    assert [h.index for h in hits] == order.tolist()
    for hit in hits:
        assert hit.value == pytest.approx(float(maps[hit.index, hit.row, hit.col]), rel=1e-5)
        assert hit.value == pytest.approx(float(best.values[hit.index]), rel=1e-5)
    patches = maximally_activating_patches(small_cnn, digits, layer, channel, k=6, maxima=maxima)
    field = receptive_field(small_cnn.module, layer, small_cnn.input_size)
    assert field.size == (14, 14)
    for patch in patches:
        view = small_cnn.preprocessing.view(digits.images[patch.hit.index])
        assert patch.image.size == (14, 14)
        assert patch.image.tobytes() == crop_patch(view, field, patch.hit.row, patch.hit.col).tobytes()
        top, left, bottom, right = patch.box
        # the cropped patch's in-image part equals the view's box
        t0, l0 = top - (field.start[0] + patch.hit.row * 2), left - (field.start[1] + patch.hit.col * 2)
        inner = np.asarray(patch.image)[t0 : t0 + bottom - top, l0 : l0 + right - left]
        assert np.array_equal(inner, np.asarray(view)[top:bottom, left:right])
    assert leftover_state(small_cnn.module) == []


def test_dead_channel_is_flagged(digits):
    model = SmallCNN()
    model.load_state_dict(load_model("small_cnn").module.state_dict())
    with torch.no_grad():
        model.features[0].bias[3] = -1e4  # channel 3 can never be positive after the ReLU
    model.eval()
    loaded = load_model("small_cnn")
    own = LoadedModel("small_cnn", model, loaded.preprocessing, loaded.class_names, "test", True)
    maxima = channel_maxima(own, digits, "features.1")
    assert 3 in dead_channels(maxima).tolist()
    live = [c for c in range(16) if c != 3]
    assert (maxima.values[:, live].max(0) > 0).all() or len(dead_channels(maxima)) < 16
    stats = channel_stats(feature_maps(model, digits.batch(loaded.preprocessing, [0]), ["features.1"])["features.1"])
    assert stats["zero_fraction"][3] == 1.0 and stats["max"][3] == 0.0
    assert stats["zero_fraction"].shape == (16,)


def test_channel_stats_formula():
    act = torch.tensor([[[0.0, 1.0], [2.0, 0.0]], [[-1.0, -3.0], [0.0, 0.0]]])
    stats = channel_stats(act)
    np.testing.assert_allclose(stats["mean"], [0.75, -1.0])
    np.testing.assert_allclose(stats["max"], [2.0, 0.0])
    np.testing.assert_allclose(stats["zero_fraction"], [0.5, 0.5])


def test_spatial_layers(small_cnn):
    assert spatial_layers(small_cnn) == ["features", *[f"features.{i}" for i in range(10)]]


# --- features, embeddings, neighbours -------------------------------------------------------------


def test_extract_features_penultimate_matches_plain_forward(small_cnn, digits, resnet18):
    assert penultimate_layer(small_cnn.module) == "classifier.1"
    features = extract_features(small_cnn, digits, batch_size=50)
    x = digits.batch(small_cnn.preprocessing, range(len(digits)))
    with torch.no_grad():
        plain = small_cnn.module.features(x).flatten(1).numpy()
    assert features.shape == (120, 2048)
    np.testing.assert_allclose(features, plain, rtol=1e-5, atol=1e-5)
    # a spatial layer is global-average pooled
    pooled = extract_features(small_cnn, x, layer="features.6", batch_size=64)
    np.testing.assert_allclose(pooled, feature_maps(small_cnn.module, x, ["features.6"])["features.6"].mean((2, 3)).numpy(),
                               rtol=1e-5, atol=1e-6)
    x64 = _x64(3)
    res = extract_features(resnet18, x64, batch_size=1)
    torch.testing.assert_close(torch.from_numpy(res), feature_maps(resnet18.module, x64, ["avgpool"])["avgpool"].flatten(1))
    assert leftover_state(small_cnn.module) == [] and leftover_state(resnet18.module) == []


def test_extract_features_bad_layer_leaves_model_clean(small_cnn, digits):
    with pytest.raises(ValueError):
        extract_features(small_cnn, digits.subset(range(4)), layer="features.3", batch_size=0)
    with pytest.raises(KeyError):
        extract_features(small_cnn, digits.subset(range(4)), layer="nope")
    assert leftover_state(small_cnn.module) == []


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)) @ np.diag([5, 3, 1, 0.5, 0.1])
    ours = embed_2d(x, "pca")
    centered = x - x.mean(0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    reference = centered @ vt[:2].T
    for a in range(2):  # components are defined up to sign
        assert min(np.abs(ours[:, a] - reference[:, a]).max(), np.abs(ours[:, a] + reference[:, a]).max()) < 1e-4


def test_tsne_keeps_classes_together(small_cnn, digits):
    features = extract_features(small_cnn, digits)
    points = embed_2d(features, "tsne", perplexity=15, max_iter=500, seed=0)
    assert points.shape == (120, 2)
    idx, _ = nearest_neighbors(points, points, k=1, exclude=range(len(points)))
    agreement = float((digits.labels[idx[:, 0]] == digits.labels).mean())
    assert agreement > 0.85, agreement
    with pytest.raises(ValueError, match="Perplexity"):
        embed_2d(features, "tsne", perplexity=500)
    with pytest.raises(ValueError, match="Unknown method"):
        embed_2d(features, "umap")


@pytest.mark.parametrize("metric,scipy_metric", [("l2", "euclidean"), ("cosine", "cosine")])
def test_nearest_neighbors_match_brute_force(metric, scipy_metric):
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(200, 16))
    query = rng.normal(size=(7, 16))
    idx, dist = nearest_neighbors(bank, query, k=5, metric=metric)
    full = cdist(query, bank, scipy_metric)
    for q in range(len(query)):
        brute = sorted(range(len(bank)), key=lambda i: full[q, i])[:5]  # plain loop oracle
        assert idx[q].tolist() == brute
        np.testing.assert_allclose(dist[q], full[q, brute], atol=1e-9)
    one_idx, one_dist = nearest_neighbors(bank, bank[17], k=3, metric=metric, exclude=[17])
    assert 17 not in one_idx.tolist() and one_idx.shape == (3,)
    assert one_idx.tolist() == [i for i in np.argsort(cdist(bank[17:18], bank, scipy_metric)[0], kind="stable") if i != 17][:3]


def test_nearest_neighbors_bad_input():
    with pytest.raises(ValueError, match="dimension"):
        nearest_neighbors(np.zeros((4, 3)), np.zeros(2), k=1)
    with pytest.raises(ValueError, match="k must"):
        nearest_neighbors(np.zeros((4, 3)), np.zeros(3), k=5)


# --- filters and grids ----------------------------------------------------------------------------


def test_filter_grid_rgb_gray_and_sorting(small_cnn, resnet18):
    weight = resnet18.module.conv1.weight  # (64, 3, 7, 7)
    grid, order = filter_grid(weight, sort_by_norm=True, tile_px=14, columns=8)
    norms = weight.detach().flatten(1).norm(dim=1).numpy()
    assert np.all(np.diff(norms[order]) <= 0)
    assert grid.shape == (8 * 16 - 2, 8 * 16 - 2, 3)
    first = grid[:14, :14]  # the largest-norm filter, each normalised to its own range, upscaled x2
    assert first.min() == 0 and first.max() == 255
    assert np.array_equal(first[::2, ::2], first[1::2, 1::2])  # nearest upscale, no smoothing
    gray, order = filter_grid(small_cnn.module.features[2].weight, in_channel=4, tile_px=3)
    assert gray.ndim == 2 and order.tolist() == list(range(16))
    with pytest.raises(ValueError, match="input channel"):
        filter_grid(small_cnn.module.features[2].weight)


def test_feature_map_grid_shape(small_cnn, digit_batch):
    act = feature_maps(small_cnn.module, digit_batch[0][:1], ["features.4"])["features.4"]
    grid = feature_map_grid(act, columns=4, tile_px=32)
    assert grid.shape == (4 * 34 - 2, 4 * 34 - 2, 3) and grid.dtype == np.uint8
