"""Incremental occlusion against the full recomputation of every occluded copy (the batched engine,
itself checked against Captum in test_attribution.py), the recorded regions against brute force, and
a shared model left clean, also with two threads."""

from __future__ import annotations

import functools
import threading

import numpy as np
import pytest
import torch
from torch import nn

from cnnviz import attribution as A
from cnnviz.hooks import get_module, leftover_state
from cnnviz.models import load_model


@functools.lru_cache(maxsize=None)
def random_model(name: str) -> nn.Module:
    """The zoo's random-weights model; GoogLeNet with He-normal weights (its own init gives logits
    independent of the input, see test_attribution.py)."""
    module = load_model(name, pretrained=False).module
    if name == "googlenet":
        module = A.private_copy(module)
        generator = torch.Generator().manual_seed(0)
        for layer in A._weighted_layers(module):
            A._randomize(get_module(module, layer), generator)
    return module


def image(size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))


def close(ours: torch.Tensor, theirs: torch.Tensor, rtol: float = 1e-4) -> None:
    """Equal within ``rtol`` of the reference map's largest value (the issue's bar for fp32)."""
    scale = float(theirs.abs().max())
    assert scale > 0, "the reference map is all zeros: the comparison would prove nothing"
    assert ours.shape == theirs.shape
    assert float((ours - theirs).abs().max()) <= rtol * scale


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])


@pytest.mark.parametrize(
    "name, size, window, stride",
    [
        ("resnet18", (64, 64), 16, 8),
        ("resnet18", (48, 80), (12, 20), (6, 9)),
        ("vgg16", (64, 64), 16, 12),
        ("vgg16", (48, 80), 10, (9, 14)),
        ("squeezenet1_1", (64, 64), 16, 8),
        ("squeezenet1_1", (48, 80), 12, 5),
        ("googlenet", (64, 64), 16, 16),
    ],
)
def test_incremental_fp32_equals_full_recomputation(name, size, window, stride):
    model, x = random_model(name), image(size)
    before = list(model.modules())
    with torch.inference_mode():
        target = int(model(x).argmax())
    full = A.occlusion(model, x, target, window, stride, precision="float32", engine="batched")
    result = A.occlusion_map(model, x, target, window, stride, precision="float32", engine="incremental",
                             batch_size=5)  # several batches, the last one shorter
    assert result.engine == "incremental" and result.saving > 0.05, result.note
    close(result.heat, full)
    assert leftover_state(model, before) == []


@pytest.mark.parametrize("window, stride", [(8, 4), ((5, 9), (3, 7)), (3, 1)])
def test_incremental_fp32_equals_full_recomputation_small_cnn(small_cnn, digit_batch, window, stride):
    model, x = small_cnn.module, digit_batch[0][:2]
    targets = digit_batch[1][:2]
    full = A.occlusion(model, x, targets, window, stride, precision="float32", engine="batched")
    result = A.occlusion_map(model, x, targets, window, stride, precision="float32", engine="incremental")
    assert result.engine == "incremental"
    for k in range(2):
        close(result.heat[k], full[k])
    prob = A.occlusion(model, x[:1], 0, window, stride, score="prob", baseline=-1.0, precision="float32")
    close(prob, A.occlusion(model, x[:1], 0, window, stride, score="prob", baseline=-1.0, precision="float32",
                            engine="batched"))


LAYERS = {
    "conv 3x3": nn.Conv2d(2, 3, 3, padding=1),
    "conv 7x7 stride 2": nn.Conv2d(2, 3, 7, stride=2, padding=3),
    "conv 1x1 stride 2": nn.Conv2d(2, 3, 1, stride=2),
    "conv dilated": nn.Conv2d(2, 3, 3, stride=(1, 2), padding=2, dilation=2),
    "conv rectangular, grouped": nn.Conv2d(2, 4, (3, 5), padding=(0, 2), groups=2),
    "max pool": nn.MaxPool2d(3, 2, padding=1),
    "max pool, ceil mode": nn.MaxPool2d(3, 2, ceil_mode=True),
    "avg pool": nn.AvgPool2d(2),
}


@pytest.mark.parametrize("name", LAYERS)
def test_changed_region_of_one_layer_matches_brute_force(name):
    """The box planned for each window position covers exactly the outputs that change (a superset
    with dilation, which skips rows inside its span), and the replayed outputs are exact."""
    layer = LAYERS[name].eval()
    x = torch.randn(1, 2, 23, 19, generator=torch.Generator().manual_seed(1))
    window = (4, 3)
    positions = np.array(A.occlusion_positions((23, 19), window, (3, 2)))
    graph = A.capture_graph(layer, x)
    region = A.plan_regions(graph, positions, window).regions[-1]
    background = torch.full((2, 23, 19), 50.0)  # a large change, so every max pooling it reaches changes
    clean, outputs, _ = A.incremental_scores(layer, x, background, positions, window, lambda out: out, batch_size=7)
    with torch.no_grad():
        assert torch.equal(clean, layer(x))
        for p, (i, j) in enumerate(positions):
            occluded = x.clone()
            occluded[:, :, i : i + window[0], j : j + window[1]] = 50.0
            out = layer(occluded)
            assert torch.allclose(outputs[p], out[0], atol=1e-5)
            changed = (out != layer(x)).any(dim=1)[0].nonzero()
            rows, cols = region.rows[p], region.cols[p]
            predicted = torch.zeros_like(out[0, 0], dtype=torch.bool)
            predicted[rows[0] : rows[1], cols[0] : cols[1]] = True
            actual = torch.zeros_like(predicted)
            actual[changed[:, 0], changed[:, 1]] = True
            assert bool((actual <= predicted).all())  # never misses a change
            if "dilated" not in name:
                assert torch.equal(actual, predicted)


def test_auto_falls_back_to_batched_on_squeeze_and_excitation_and_says_so():
    model, x = random_model("mobilenet_v3_small"), image((64, 64))
    result = A.occlusion_map(model, x, 0, 16, 8, precision="float32")
    assert result.engine == "batched" and result.saving is None
    assert "adaptive_avg_pool2d" in result.note and "batched engine" in result.note, result.note
    forced = A.occlusion_map(model, x, 0, 16, 8, precision="float32", engine="incremental")  # still exact
    assert forced.engine == "incremental" and forced.saving < A.MIN_SAVING
    close(forced.heat, result.heat)


def test_tolerance_trades_fidelity_for_speed():
    model, x = random_model("resnet18"), image((96, 96))
    with torch.inference_mode():
        target = int(model(x).argmax())
    exact = A.occlusion_map(model, x, target, 16, 8, precision="float32")
    assert exact.tolerance == 0 and "first-order" not in exact.note
    results = [A.occlusion_map(model, x, target, 16, 8, precision="float32", tolerance=t) for t in (0.1, 0.5, 10.0)]
    savings = [exact.saving] + [r.saving for r in results]
    assert savings == sorted(savings) and savings[-1] > savings[0] + 0.2, savings
    assert "first-order" in results[-1].note
    correlations = [pearson(r.heat, exact.heat) for r in results]
    assert correlations[0] > 0.99 and correlations[0] >= correlations[-1], correlations
    assert not torch.allclose(results[-1].heat, exact.heat)


def test_projective_field_threshold_skips_work_and_stays_close():
    """Krypton's threshold: following a window's changes over less of each map skips more work,
    the map stays close to the exact one, and the note says what was ignored."""
    model, x = random_model("resnet18"), image((128, 128))
    with torch.inference_mode():
        target = int(model(x).argmax())
    exact = A.occlusion_map(model, x, target, 32, 16, precision="float32")
    capped = [A.occlusion_map(model, x, target, 32, 16, precision="float32", tolerance=0.0, field=f) for f in (0.7, 0.5)]
    assert exact.saving < capped[0].saving < capped[1].saving, [exact.saving] + [c.saving for c in capped]
    assert "70% of a map's side ignored" in capped[0].note and "ignored" not in exact.note
    assert pearson(capped[0].heat, exact.heat) > 0.98
    assert not torch.allclose(capped[1].heat, exact.heat)
    with pytest.raises(ValueError, match="field"):
        A.occlusion_map(model, x, target, 32, 16, field=0.0)


def test_first_order_tail_from_the_input_is_gradient_times_difference(small_cnn, digit_batch):
    """With an unbounded tolerance the cut falls on the input: each window's score change is the
    gradient times the change of its pixels (an oracle), except on the sample, which stays exact."""
    model, x, target = small_cnn.module, digit_batch[0][:1], int(digit_batch[1][0])
    window, background = (4, 4), torch.full((1, 32, 32), -0.5)
    positions = np.array(A.occlusion_positions((32, 32), window, (4, 4)))

    def logit(output: torch.Tensor) -> torch.Tensor:
        return output[:, target]

    clean, scores, plan = A.incremental_scores(model, x, background, positions, window, logit, batch_size=8,
                                               tolerance=float("inf"))
    assert plan.cut == 0 and plan.cut_saving > plan.saving
    gradient = A.vanilla_gradient(model, x, target)[0, 0]
    change = (gradient * (background[0] - x[0, 0])).unfold(0, 4, 4).unfold(1, 4, 4).sum(dim=(2, 3)).flatten()
    full = A.occlusion(model, x, target, window, 4, baseline=-0.5, precision="float32", engine="batched")
    sample = np.unique(np.linspace(0, len(positions) - 1, 8).round().astype(int))
    first_order = np.setdiff1d(np.arange(len(positions)), sample)
    assert torch.allclose(scores[first_order], clean + change[first_order], atol=1e-4)
    exact_changes = torch.stack([full[0, i, j] for i, j in positions[sample]])  # one window per pixel here
    assert torch.allclose(clean - scores[sample], exact_changes, atol=1e-4)


def test_bf16_incremental_is_close_to_fp32(small_cnn, digit_batch):
    model, x, target = small_cnn.module, digit_batch[0][:1], int(digit_batch[1][0])
    exact = A.occlusion(model, x, target, 8, 4, precision="float32", engine="batched")
    fast = A.occlusion_map(model, x, target, 8, 4, precision="bfloat16", engine="incremental")
    assert fast.engine == "incremental" and fast.precision == "bfloat16"
    assert pearson(fast.heat, exact) > 0.99


def test_capture_leaves_nothing_and_two_threads_get_their_own_maps():
    model = random_model("resnet18")
    before = list(model.modules())
    inputs = [image((64, 64), seed) for seed in (1, 2)]
    expected = [A.occlusion(model, x, 5, 16, 8, precision="float32", engine="batched") for x in inputs]
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    errors = []
    barrier = threading.Barrier(3)

    def worker(k: int) -> None:
        try:
            barrier.wait()
            for _ in range(2):
                results[k].append(A.occlusion(model, inputs[k], 5, 16, 8, precision="float32", engine="incremental"))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    def plain_forwards() -> None:  # a third thread runs the model meanwhile: the recorder must not see it
        barrier.wait()
        with torch.inference_mode():
            for _ in range(20):
                model(inputs[0])

    threads = [threading.Thread(target=worker, args=(k,)) for k in (0, 1)] + [threading.Thread(target=plain_forwards)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for k in (0, 1):
        for heat in results[k]:
            close(heat, expected[k])
    assert not torch.allclose(expected[0], expected[1])
    assert leftover_state(model, before) == []
    assert torch._C._len_torch_function_stack() == 0


def test_capture_records_the_graph_and_restores_inplace_values():
    model = random_model("resnet18")
    x = image((32, 32))
    graph = A.capture_graph(model, x)
    kinds = [node.kind for node in graph.nodes]
    assert kinds[0] == "input" and kinds.count("window") == 21  # 20 convolutions and the max pooling
    assert kinds.count("join") == 8  # the residual additions
    from torchvision.models.feature_extraction import create_feature_extractor  # an oracle, in tests only

    with torch.inference_mode():
        layer1 = create_feature_extractor(model, ["layer1.0.bn2"])(x)["layer1.0.bn2"]
    # layer1.0's second batch norm output is changed in place by "out += identity": its recorded value is the old one
    bn = [node for node in graph.nodes if node.func is torch.nn.functional.batch_norm][2]
    assert torch.allclose(bn.clean, layer1, atol=1e-6)
    with torch.inference_mode():
        assert torch.allclose(graph.nodes[graph.output.node].clean, model(x), atol=1e-5)
