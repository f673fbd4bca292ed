"""Teaching defaults (cnnviz.defaults): on the trained networks every default is a real block output,
the strongest channel agrees with torchvision's feature extractor, and the typical sample is typical."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from cnnviz import defaults
from cnnviz.data import digits_dataset
from cnnviz.hooks import leftover_state
from cnnviz.layers import layer_table
from cnnviz.models import load_model, pretrained_available

TRAINED = ["squeezenet1_1", "efficientnet_lite0", "vgg16_features", "small_cnn"]
NOT_A_BLOCK = (nn.BatchNorm2d, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.Dropout, nn.Identity)


def _cases():
    cases = [pytest.param(name, True, id=name) for name in TRAINED]
    return cases + [pytest.param("resnet18", False, id="resnet18-random")]


@pytest.mark.parametrize(("name", "pretrained"), _cases())
def test_every_default_is_an_existing_block_output_of_the_network(name, pretrained):
    if pretrained and not pretrained_available(name):
        pytest.skip(f"{name}'s weights are not fetched here")
    model = load_model(name, pretrained=pretrained)
    rows = layer_table(model.module, model.input_size)
    shapes = {row.name: row.output_shape for row in rows}
    modules = dict(model.module.named_modules())
    chosen = defaults.teaching_layers(model.module, rows)
    scores = defaults.class_scores_layer(rows)
    assert (scores is None) == (name == "vgg16_features")  # the features-only network has no class scores
    row = chosen["inversion_row"]
    if scores:
        assert row[-1] == scores and scores in modules
        assert int(np.prod(shapes[scores][1:])) == len(model.class_names)
    names = [chosen["dream"], chosen["feature"], chosen["inversion"], chosen["last_block"], *[n for n in row if n != scores]]
    for layer in names:
        assert layer in modules, layer
        shape = shapes[layer]
        assert shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1, (layer, shape)
        assert not isinstance(modules[layer], (*NOT_A_BLOCK, nn.Sequential)), (layer, type(modules[layer]))
        assert "downsample" not in layer and ".bn" not in layer, layer
    order = [r.name for r in rows]
    assert len(row) >= min(3, len(defaults.block_outputs(model.module, rows)))
    assert [order.index(n) for n in row] == sorted(order.index(n) for n in row)  # shallow to deep
    assert shapes[row[0]][2] > (shapes[row[-1]] + (1, 1))[2]  # the row ends coarser than it starts: depth loses "where"


def test_resnet_blocks_are_the_basic_blocks_not_their_batch_norms_or_shortcuts():
    model = load_model("resnet18", pretrained=False)
    blocks = defaults.block_outputs(model.module, layer_table(model.module, model.input_size))
    assert blocks == ["relu"] + [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]


def test_the_strongest_channel_is_the_argmax_of_torchvisions_feature_extractor(small_cnn, digit_batch):
    layer = "features.6"
    x = digit_batch[0][:1]
    oracle = create_feature_extractor(small_cnn.module, [layer])(x)[layer][0]
    assert defaults.strongest_channel(small_cnn.module, x, layer) == int(oracle.flatten(1).amax(1).argmax())
    assert defaults.strongest_channel(small_cnn.module, x, layer, reduce="mean") == int(oracle.flatten(1).mean(1).argmax())
    assert not leftover_state(small_cnn.module)


def test_a_typical_sample_sits_in_its_cluster_and_is_classified_right():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = np.repeat(np.arange(3), 30)
    features = centres[labels] + rng.normal(0, 1.0, (90, 2))
    features[0] = [10.0, 0.0]  # labelled 0 but sits in cluster 1: never typical
    chosen = defaults.typical_sample(features, labels)
    centroid = features[labels == labels[chosen]].mean(0)
    distances = np.linalg.norm(features[labels == labels[chosen]] - centroid, axis=1)
    assert np.linalg.norm(features[chosen] - centroid) <= np.quantile(distances, 0.1)
    predicted = labels.copy()
    predicted[chosen] = (labels[chosen] + 1) % 3  # the model gets it wrong: another sample is chosen
    other = defaults.typical_sample(features, labels, predicted)
    assert other != chosen and predicted[other] == labels[other]


def test_the_typical_digit_is_one_the_small_cnn_gets_right_and_whose_neighbours_agree(small_cnn):
    from cnnviz.features import extract_features, penultimate_layer

    dataset = digits_dataset(limit=300)
    features = extract_features(small_cnn, dataset)
    logits = extract_features(small_cnn, dataset, penultimate_layer(small_cnn.module))
    index = defaults.typical_sample(features, dataset.labels, logits.argmax(1))
    assert logits[index].argmax() == dataset.labels[index]
    distances = np.linalg.norm(features - features[index], axis=1)
    distances[index] = np.inf
    assert (dataset.labels[np.argsort(distances)[:5]] == dataset.labels[index]).all()


def test_a_larger_subset_keeps_every_image_at_its_number():
    small, large = digits_dataset(limit=50), digits_dataset(limit=200)
    for i in (0, 17, 37, 49):
        assert np.array_equal(np.asarray(small.images[i]), np.asarray(large.images[i]))
        assert small.labels[i] == large.labels[i]


def test_at_depth_and_spread_cover_the_ends():
    names = [f"b{i}" for i in range(10)]
    assert defaults.at_depth(names, 0.0) == "b0" and defaults.at_depth(names, 1.0) == "b9"
    assert defaults.spread(names, defaults.INVERSION_ROW)[0] == "b0"
    assert defaults.spread(["a", "b"], (0.0, 0.3, 0.7, 1.0)) == ["a", "b"]
    with pytest.raises(ValueError):
        defaults.at_depth([], 0.5)
