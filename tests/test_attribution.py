"""cnnviz.attribution against Captum (an independent implementation), the completeness axiom,
the randomisation sanity check, and a shared model left clean (also after errors and with threads)."""

from __future__ import annotations

import functools
import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnviz import attribution as A
from cnnviz.hooks import HOOK_DICTS, forward_hooks, get_module, leftover_state, record_activations
from cnnviz.models import load_model

captum_attr = pytest.importorskip("captum.attr")
warnings.filterwarnings("ignore", module="captum")

MODELS = ["resnet18", "vgg16", "alexnet", "squeezenet1_1", "mobilenet_v3_small", "googlenet"]
FUNCTIONAL_RELU = {"googlenet"}  # torchvision applies F.relu in forward: Captum leaves those unguided


@functools.lru_cache(maxsize=None)
def random_model(name: str) -> nn.Module:
    """The zoo's random-weights model. GoogLeNet's own init (truncated normal, std 0.01) makes its
    logits numerically independent of the input (every map is 0), so its test copy gets He-normal
    convs and linears instead: still random weights, but a signal gets through."""
    module = load_model(name, pretrained=False).module
    if name == "googlenet":
        module = A.private_copy(module)
        generator = torch.Generator().manual_seed(0)
        for layer in A._weighted_layers(module):
            A._randomize(get_module(module, layer), generator)
    return module


def close(ours: torch.Tensor, theirs: torch.Tensor, rtol: float = 1e-4) -> None:
    """Equal within float tolerance, relative to the map's largest value."""
    assert ours.shape == theirs.shape
    ours, theirs = ours.detach(), theirs.detach()
    scale = float(theirs.abs().max())
    assert scale > 0, "the reference map is all zeros: the comparison would prove nothing"
    assert float((ours - theirs).abs().max()) <= rtol * scale + 1e-7


def no_mode_left() -> bool:
    return torch._C._len_torch_function_stack() == 0


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, 64, 64, generator=generator)


@pytest.mark.parametrize("name", MODELS)
def test_methods_equal_captum(name, inputs):
    model, x = random_model(name), inputs
    modules = list(model.modules())
    with torch.inference_mode():
        target = int(model(x).argmax())

    close(A.vanilla_gradient(model, x, target), captum_attr.Saliency(model).attribute(x, target=target, abs=False))

    guided = A.guided_backprop(model, x, target)
    total, by_modules = A.count_relus(model, x)
    if name in FUNCTIONAL_RELU:
        assert total > by_modules  # functional ReLUs exist, and we guide them (see test below)
        theirs = captum_attr.GuidedBackprop(model).attribute(x, target=target).detach()
        assert (guided - theirs).abs().max() > 1e-3 * theirs.abs().max()  # so the two really differ
    else:
        assert total == by_modules
        close(guided, captum_attr.GuidedBackprop(model).attribute(x, target=target))

    layer = A.default_cam_layer(model, x)
    captum_cam = captum_attr.LayerGradCam(model, get_module(model, layer)).attribute(x, target=target, relu_attributions=True)
    captum_cam = captum_attr.LayerAttribution.interpolate(captum_cam, x.shape[-2:], "bilinear")[:, 0]
    close(A.grad_cam(model, x, target, layer), captum_cam)

    c = x.shape[1]
    captum_occ = captum_attr.Occlusion(model).attribute(
        x, target=target, sliding_window_shapes=(c, 32, 32), strides=(c, 16, 16), baselines=0, perturbations_per_eval=9
    )
    assert torch.equal(captum_occ[:, 0], captum_occ[:, -1])  # Captum broadcasts one value over channels
    close(A.occlusion(model, x, target, 32, 16, precision="float32"), captum_occ[:, 0])

    assert leftover_state(model, modules) == []
    assert no_mode_left()


def test_grad_cam_inner_layer_and_default_layer(inputs):
    model = random_model("resnet18")
    assert A.default_cam_layer(model, inputs) == "layer4"
    ours = A.grad_cam(model, inputs, 3, "layer3")
    theirs = captum_attr.LayerGradCam(model, model.layer3).attribute(inputs, target=3, relu_attributions=True)
    close(ours, captum_attr.LayerAttribution.interpolate(theirs, (64, 64), "bilinear")[:, 0])
    assert ours.min() >= 0

    # the layers before "layer3" run without autograd: their outputs keep no graph (hooks.graph_from)
    recorded = []
    with forward_hooks(model, {"layer2": lambda module, inputs, output: recorded.append(output.requires_grad)}):
        A.grad_cam(model, inputs, 3, "layer3")
    assert recorded == [False]
    assert torch.is_grad_enabled()


class _Net(nn.Module):
    """conv-ReLU-conv-ReLU-linear; ``functional`` applies the ReLUs as F.relu / Tensor.relu_."""

    def __init__(self, functional: bool):
        super().__init__()
        torch.manual_seed(1)
        self.functional = functional
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU(inplace=True)
        self.fc = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x):
        if self.functional:
            x = self.conv2(F.relu(self.conv1(x))).relu_()
        else:
            x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(x.flatten(1))


def test_guided_backprop_guides_functional_relus():
    """Oracle: Captum on the same weights written with nn.ReLU modules."""
    functional, modular = _Net(True).eval(), _Net(False).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([1, 4])
    theirs = captum_attr.GuidedBackprop(modular).attribute(x, target=target)
    close(A.guided_backprop(functional, x, target), theirs)
    close(A.guided_backprop(modular, x, target), theirs)
    # guided differs from the plain gradient, so the comparison is not vacuous
    assert not torch.allclose(theirs, A.vanilla_gradient(modular, x, target))
    assert A.count_relus(functional, x) == (2, 0)


def test_guided_backprop_channel_matches_captum_on_truncated_model(small_cnn, digit_batch):
    model = small_cnn.module
    x = digit_batch[0][:2]

    class ChannelMax(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = model.features[:4]  # conv, ReLU, conv, ReLU (shared modules, read only)

        def forward(self, inp):
            return self.trunk(inp)[:, 5].flatten(1).amax(dim=1, keepdim=True)

    theirs = captum_attr.GuidedBackprop(ChannelMax().eval()).attribute(x, target=0)
    close(A.guided_backprop_channel(model, x, "features.3", 5, reduce="max"), theirs)
    assert leftover_state(model) == []


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
def test_integrated_gradients_completeness(name, small_cnn, digit_batch, inputs):
    if name == "small_cnn":
        model, x, target = small_cnn.module, digit_batch[0][:2], digit_batch[1][:2]
    else:
        model, x, target = random_model(name), inputs, 7
    attributions = A.integrated_gradients(model, x, target, steps=64)
    sums, difference = A.completeness_gap(model, x, target, attributions)
    assert (difference.abs() > 1e-3).all()
    assert torch.allclose(sums, difference, rtol=0.01, atol=0)
    assert leftover_state(model) == []


def test_smoothgrad_seeded_and_reduces_to_gradient(small_cnn, digit_batch):
    model, x, target = small_cnn.module, digit_batch[0][:2], digit_batch[1][:2]
    a = A.smoothgrad(model, x, target, samples=6, noise=0.2, seed=3, batch_size=4)
    b = A.smoothgrad(model, x, target, samples=6, noise=0.2, seed=3, batch_size=2)
    c = A.smoothgrad(model, x, target, samples=6, noise=0.2, seed=4)
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, c)
    close(A.smoothgrad(model, x, target, samples=3, noise=0.0), A.vanilla_gradient(model, x, target))
    # by hand: the mean gradient over the very same noisy copies
    generator = torch.Generator().manual_seed(3)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(1, -1, 1, 1, 1)
    grads = []
    for m in (4, 2):
        noisy = x.unsqueeze(0) + 0.2 * span * torch.randn((m, *x.shape), generator=generator)
        grads += [A.vanilla_gradient(model, copy, target) for copy in noisy]
    close(a, torch.stack(grads).mean(0))


def test_occlusion_fast_mode_prob_score_and_progress(small_cnn, digit_batch):
    model, x = small_cnn.module, digit_batch[0][:2]
    target = digit_batch[1][:2]
    exact = A.occlusion(model, x, target, 8, 4, precision="float32")
    fractions = []
    fast = A.occlusion(model, x, target, 8, 4, precision="bfloat16", batch_size=10, progress=fractions.append)
    assert np.corrcoef(fast.flatten().numpy(), exact.flatten().numpy())[0, 1] >= 0.99
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) > 2

    probs = A.occlusion(model, x, target, 8, 4, score="prob", precision="float32")
    theirs = captum_attr.Occlusion(lambda inp: model(inp).softmax(1)).attribute(
        x, target=target, sliding_window_shapes=(1, 8, 8), strides=(1, 4, 4), baselines=-1.0
    )
    close(A.occlusion(model, x, target, 8, 4, baseline=-1.0, score="prob", precision="float32"), theirs[:, 0])
    assert not torch.allclose(probs, exact)
    with pytest.raises(ValueError, match="larger than the image"):
        A.occlusion(model, x, 0, 40, 4)


def test_state_clean_after_errors(small_cnn, digit_batch):
    model, x = small_cnn.module, digit_batch[0][:1]
    modules = list(model.modules())
    with torch.inference_mode():
        before = model(x)
    with pytest.raises(ValueError, match="no layer called"):
        A.grad_cam(model, x, 0, "features.99")
    with pytest.raises(ValueError, match="spatial output"):
        A.grad_cam(model, x, 0, "classifier.1")  # hooks were on when this raised
    with pytest.raises(ValueError, match="between 0 and 9"):
        A.guided_backprop(model, x, 12)  # raised by the objective, after the guided forward
    with pytest.raises(ValueError, match="channels"):
        A.guided_backprop_channel(model, x, "features.3", 99)
    with pytest.raises(ValueError, match="Unknown method"):
        A.attribute("deconvnet", model, x, 0)

    def boom(_):
        raise RuntimeError("progress callback failed")

    with pytest.raises(RuntimeError):
        A.occlusion(model, x, 0, 8, 8, progress=boom)
    assert leftover_state(model, modules) == []
    assert no_mode_left()
    with torch.inference_mode():
        assert torch.equal(model(x), before)


def test_two_threads_on_one_model_match_sequential(inputs):
    model = random_model("resnet18")
    x = inputs
    jobs = {
        "guided": lambda: A.guided_backprop(model, x, 1),
        "cam": lambda: A.grad_cam(model, x, 2, "layer3"),
        "channel": lambda: A.guided_backprop_channel(model, x, "layer2", 3),
        "vanilla": lambda: A.vanilla_gradient(model, x, 1),
    }
    sequential = {name: job() for name, job in jobs.items()}
    results: dict[str, list[torch.Tensor]] = {name: [] for name in jobs}
    errors = []
    barrier = threading.Barrier(2)

    def worker(names):
        try:
            barrier.wait()
            for _ in range(3):
                for name in names:
                    results[name].append(jobs[name]())
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(["guided", "cam"],)),
               threading.Thread(target=worker, args=(["vanilla", "channel"],))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for name, outs in results.items():
        assert len(outs) == 3
        for out in outs:
            assert torch.allclose(out, sequential[name], atol=1e-6, rtol=1e-5), name
    assert not torch.allclose(sequential["guided"], sequential["vanilla"])
    assert leftover_state(model) == []


@pytest.mark.parametrize("method", ["vanilla gradient", "Grad-CAM"])
def test_sanity_check_maps_change_when_weights_are_randomised(small_cnn, digit_batch, method):
    model = small_cnn.module
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    x, target = digit_batch[0][:1], int(digit_batch[1][0])
    stages = A.randomization_sanity_check(model, x, target, method, stages=3)
    assert stages[0].label == "original" and stages[0].correlation == 1.0
    assert stages[1].layers == ["classifier.1"]
    assert stages[-1].layers[-1] == "features.0"
    assert stages[-1].correlation < 0.5
    assert all(s.heat.shape == (1, 32, 32) for s in stages)
    # the shared model is untouched
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert leftover_state(model) == []


@pytest.mark.parametrize("method", A.METHODS)
def test_attribute_dispatch_shapes(small_cnn, digit_batch, method):
    model, x = small_cnn.module, digit_batch[0][:1]
    params = {"samples": 4, "steps": 8, "window": 8, "stride": 8}
    result = A.attribute(method, model, x, int(digit_batch[1][0]), params)
    assert result.heat.shape == (1, 32, 32) and result.seconds > 0
    assert float(result.heat.abs().max()) > 0
    assert leftover_state(model) == []


def _strongest_units(model: nn.Module, x: torch.Tensor, layer: str, channel: int) -> torch.Tensor:
    """(N, 2) (row, col) of each image's strongest unit of ``channel`` (torchvision's extractor, as an oracle)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    with torch.inference_mode():
        maps = create_feature_extractor(model, [layer])(x)[layer][:, channel]
    flat = maps.flatten(1).argmax(dim=1)
    return torch.stack([flat // maps.shape[2], flat % maps.shape[2]], dim=1)


def test_guided_backprop_of_one_unit_per_image_matches_captum(small_cnn, digit_batch):
    model, x, channel = small_cnn.module, digit_batch[0][:4], 7
    positions = _strongest_units(model, x, "features.8", channel)
    positions[1] = torch.tensor([3, 12])  # not every image at its maximum
    assert len({tuple(p) for p in positions.tolist()}) > 1, "the positions should differ between images"

    class Unit(nn.Module):
        """Features up to features.8, then the one unit [channel, row_i, col_i] of each image i."""

        def __init__(self):
            super().__init__()
            self.trunk = model.features[:9]  # shared modules, read only

        def forward(self, inp):
            maps = self.trunk(inp)
            return maps[torch.arange(len(inp)), channel, positions[:, 0], positions[:, 1]][:, None]

    theirs = captum_attr.GuidedBackprop(Unit().eval()).attribute(x, target=0)
    ours = A.guided_backprop_channel(model, x, "features.8", channel, position=positions)
    close(ours, theirs)
    # the same unit for all images from a (row, col) tuple; batched units equal per-image calls
    close(A.guided_backprop_channel(model, x[2:3], "features.8", channel, position=tuple(positions[2].tolist())), theirs[2:3])
    seen = []
    close(A.guided_backprop_units(model, x, "features.8", channel, positions, batch_size=3, progress=seen.append), theirs)
    assert seen == [0.75, 1.0]
    # one unit is not the channel's maximum over the map
    assert not torch.allclose(ours[1], A.guided_backprop_channel(model, x[1:2], "features.8", channel)[0])
    assert leftover_state(model) == []
    assert no_mode_left()


@pytest.mark.parametrize("layer", ["features.6", "features.9"])
def test_guided_backprop_of_one_unit_is_zero_outside_its_receptive_field(small_cnn, digit_batch, layer):
    from cnnviz.features import receptive_field

    model, x, channel = small_cnn.module, digit_batch[0], 3
    positions = _strongest_units(model, x, layer, channel)
    grads = A.guided_backprop_channel(model, x, layer, channel, position=positions)
    field = receptive_field(model, layer, small_cnn.input_size)
    inside_any = False
    for grad, (row, col) in zip(grads, positions.tolist()):
        top, left, bottom, right = field.box(row, col)
        outside = grad.abs().clone()
        outside[:, top:bottom, left:right] = 0
        assert float(outside.max()) == 0.0, f"gradient outside the box of unit ({row}, {col})"
        inside_any |= float(grad[:, top:bottom, left:right].abs().max()) > 0
        assert (bottom - top, right - left) != (32, 32)  # the box is a real restriction
    assert inside_any
    assert leftover_state(model) == []


def test_unit_position_errors_leave_the_model_clean(small_cnn, digit_batch):
    model, x = small_cnn.module, digit_batch[0][:2]
    modules = list(model.modules())
    with pytest.raises(ValueError, match="16×16 feature map"):
        A.guided_backprop_channel(model, x, "features.8", 0, position=(16, 0))
    with pytest.raises(ValueError, match="one per image"):
        A.guided_backprop_channel(model, x, "features.8", 0, position=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="no feature map"):
        A.guided_backprop_channel(model, x, "classifier.1", 0, position=(0, 0))
    with pytest.raises(ValueError, match="one \\(row, col\\) per image"):
        A.guided_backprop_units(model, x, "features.8", 0, torch.zeros(1, 2))
    assert leftover_state(model, modules) == []
    assert no_mode_left()


def test_signed_image_puts_zero_at_mid_gray():
    from cnnviz.display import signed_image

    grad = torch.zeros(1, 4, 4)
    grad[0, 0, 0], grad[0, 1, 1] = 2.0, -1.0
    pixels = np.asarray(signed_image(grad, percentile=100))
    assert pixels.shape == (4, 4)
    assert (pixels[0, 0], pixels[1, 1], pixels[3, 3]) == (255, 64, 128)
    assert np.asarray(signed_image(torch.randn(3, 5, 6))).shape == (5, 6, 3)


def test_fast_occlusion_copy_is_private_cached_and_close_to_float32():
    from cnnviz.attribution import bf16_inference_copy

    model = load_model("resnet18", pretrained=False).module
    before = list(model.modules())
    with record_activations(model, ["layer1"]):  # a hook present while the copy is made is not copied
        fast = bf16_inference_copy(model)
    assert bf16_inference_copy(model) is fast
    assert not any(getattr(m, attr) for m in fast.modules() for attr in HOOK_DICTS)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())  # folded into the convs
    assert leftover_state(model, before) == [] and model.conv1.weight.dtype == torch.float32
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        exact, approx = model(x), fast(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)).float()
    assert np.corrcoef(exact.flatten().numpy(), approx.flatten().numpy())[0, 1] > 0.999
