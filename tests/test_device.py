"""The compute device: ``choose_device`` and ``$CNNVIZ_DEVICE`` (CPU tests with the availability checks
patched), every library path the pages use kept on the device of its inputs (a CPU check that needs no
GPU: tensors created without a device land on torch's "meta" device and fail loudly when they meet the
model's CPU tensors), and on a CUDA machine the same computations on the GPU against the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnviz import device as D
from cnnviz.models import load_model

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


# --- choose_device and CNNVIZ_DEVICE ----------------------------------------------------------


@pytest.fixture
def machine(monkeypatch):
    """Pretend which accelerators exist: ``machine(cuda=..., mps=...)``."""

    def set_up(cuda: bool = False, mps: bool = False, gpus: int = 1) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus if cuda else 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    monkeypatch.delenv(D.ENV_VAR, raising=False)
    return set_up


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, monkeypatch, cuda, mps, expected):
    machine(cuda=cuda, mps=mps)
    assert D.choose_device().type == expected
    for value in ("auto", " AUTO ", ""):  # the variable set to auto (any case, spaces) or empty is automatic
        monkeypatch.setenv(D.ENV_VAR, value)
        assert D.choose_device().type == expected


@pytest.mark.parametrize("value, expected", [("cpu", "cpu"), ("CPU", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1"),
                                             ("mps", "mps")])
def test_the_environment_variable_picks_an_available_device(machine, monkeypatch, value, expected):
    machine(cuda=True, mps=True, gpus=2)
    monkeypatch.setenv(D.ENV_VAR, value)
    device, reason = D.device_choice()
    assert device == torch.device(expected)
    assert reason.startswith(f"{D.ENV_VAR}={value.lower()}") and "but" not in reason


def test_cpu_forced_on_a_gpu_machine(machine, monkeypatch):
    machine(cuda=True, mps=False)
    monkeypatch.setenv(D.ENV_VAR, "cpu")
    assert D.device_choice() == (torch.device("cpu"), "CNNVIZ_DEVICE=cpu: computing on the CPU")
    assert D.choose_device("cuda").type == "cuda"  # an explicit preference wins over the variable


@pytest.mark.parametrize("value, why", [
    ("cuda", "torch sees no CUDA GPU"),
    ("cuda:3", "torch sees no CUDA GPU"),
    ("mps", "MPS backend is not available"),
    ("tpu", "not one of"),
    ("cuda:x", "not one of"),
    ("cpu:0", "not one of"),
])
def test_an_unavailable_or_unknown_choice_falls_back_on_the_cpu_with_the_reason(machine, monkeypatch, value, why):
    machine(cuda=False, mps=False)
    monkeypatch.setenv(D.ENV_VAR, value)
    device, reason = D.device_choice()
    assert device.type == "cpu"
    assert why in reason and value in reason and reason.endswith("computing on the CPU")


def test_a_missing_gpu_index_falls_back(machine):
    machine(cuda=True, gpus=1)
    device, reason = D.device_choice("cuda:1")
    assert device.type == "cpu" and "sees 1 CUDA GPU" in reason
    assert D.choose_device("cuda:0") == torch.device("cuda:0")


def test_fast_dtype_per_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert D.fast_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert D.fast_dtype("cuda:0") == torch.float16
    assert D.fast_dtype("mps") == torch.float16
    from cnnviz.folding import bf16_supported

    assert D.fast_dtype("cpu") == (torch.bfloat16 if bf16_supported() else None)  # the CPU path as before


def test_the_sidebar_line_states_the_device_and_why(machine, monkeypatch):
    from ui import device as ui_device

    cases = [({}, False, "Computing on the CPU (no CUDA GPU or Apple MPS found)."),
             ({D.ENV_VAR: "cpu"}, True, "Computing on the CPU (CNNVIZ_DEVICE=cpu)."),
             ({D.ENV_VAR: "cuda"}, False, "Computing on the CPU (CNNVIZ_DEVICE=cuda, but torch sees no CUDA GPU).")]
    for env, cuda, expected in cases:
        machine(cuda=cuda)
        monkeypatch.delenv(D.ENV_VAR, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(ui_device, "app_device", D.device_choice)  # not the process-wide cache
        assert ui_device.device_caption() == expected
    machine(cuda=True)
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA Test GPU")
    assert ui_device.device_caption() == "Computing on CUDA (NVIDIA Test GPU); `CNNVIZ_DEVICE=cpu` forces the CPU."


def test_load_model_stays_on_the_cpu_by_default_and_follows_a_device():
    default = load_model("small_cnn")
    assert default.device.type == "cpu" and default.preprocessing.device == "cpu"
    meta = load_model("small_cnn", device="meta")  # any device: the module and its inputs go there
    assert meta.device.type == "meta" and all(p.device.type == "meta" for p in meta.module.parameters())
    from cnnviz.samples import DEFAULT_DIGIT, load_sample

    assert meta.preprocessing(load_sample(DEFAULT_DIGIT)).device.type == "meta"
    assert default.preprocessing(load_sample(DEFAULT_DIGIT)).device.type == "cpu"


# --- every page's computation follows its inputs' device (a CPU check) -----------------------------
#
# Under ``torch.device("meta")`` every tensor made without a device (torch.zeros, torch.tensor,
# torch.arange, torch.rand without device=...) lands on "meta", and combining it with the model's
# CPU tensors raises. Code that follows ``x.device`` (or draws on the CPU on purpose, device="cpu")
# runs as on the CPU, so a pass here means the same code keeps its tensors on a GPU.


@pytest.fixture(scope="module")
def nets():
    """A BN network with a global pool (resnet18, random weights) and VGG-16's convolutions (style),
    loaded before the meta default device is set."""
    from cnnviz.style import loss_network

    return {"resnet": load_model("resnet18", pretrained=False), "vgg": loss_network(pretrained=False)}


def _image(side: int, channels: int = 3) -> torch.Tensor:
    return torch.rand(1, channels, side, side, generator=torch.Generator().manual_seed(0))


def _strict(fn):
    """Run ``fn`` with tensors made without a device put on "meta" (see above)."""
    with torch.device("meta"):
        return fn()


def test_attribution_follows_the_input_device(nets):
    from cnnviz import attribution as A

    model = nets["resnet"].module
    x = nets["resnet"].preprocessing.normalize(_image(32))
    for method, params in [("vanilla gradient", {}), ("guided backprop", {}), ("Grad-CAM", {"layer": "layer3"}),
                           ("SmoothGrad", {"samples": 1}), ("integrated gradients", {"steps": 1}),
                           ("occlusion", {"window": 16, "stride": 16, "engine": "batched"}),
                           ("occlusion", {"window": 16, "stride": 16, "engine": "incremental", "tolerance": 0.0}),
                           ("occlusion", {"window": 8, "stride": 4})]:  # the default: calibrated first-order tail
        result = _strict(lambda: A.attribute(method, model, x, 3, params))
        assert result.heat.device.type == "cpu" and torch.isfinite(result.heat).all(), method
    fast = _strict(lambda: A.occlusion_map(model, x, 3, 16, 16, precision="bfloat16"))
    assert fast.precision == "bfloat16" and fast.heat.device.type == "cpu"
    stages = _strict(lambda: A.randomization_sanity_check(model, x, 3, "vanilla gradient", stages=1))
    assert len(stages) == 2


def test_synthesis_and_style_follow_the_model_device(nets):
    from cnnviz import synthesis as S
    from cnnviz.style import style_transfer, texture_synthesis

    resnet, vgg = nets["resnet"], nets["vgg"]
    image, style = _image(48), _image(32)  # made outside: only the library's own tensors go to "meta"
    dream = _strict(lambda: S.run(S.dream(resnet, image, "layer2", steps=2, octaves=2)))
    assert dream.pixels.device.type == "cpu" and dream.pixels.shape == (1, 3, 48, 48)
    visual = _strict(lambda: S.run(S.class_visualization(resnet, 1, steps=2, size=32)))
    assert torch.isfinite(visual.pixels).all()
    gatys = _strict(lambda: S.run(style_transfer(vgg, image, style, steps=2, size=32)))
    assert gatys.pixels.shape == (1, 3, 32, 32)
    noise_start = _strict(lambda: S.run(style_transfer(vgg, image, style, steps=1, size=32, init="noise",
                                                       optimizer="lbfgs")))
    assert torch.isfinite(noise_start.pixels).all()
    texture = _strict(lambda: S.run(texture_synthesis(vgg, style, size=32, steps=1)))
    assert texture.pixels.shape == (1, 3, 32, 32)


def test_features_and_live_follow_the_model_device(nets):
    from cnnviz import features as F
    from cnnviz.live import process_frame

    resnet = nets["resnet"]
    images = resnet.preprocessing.normalize(torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    maxima = _strict(lambda: F.channel_maxima(resnet, images, "layer1", batch_size=2))
    assert maxima.values.shape == (3, 64)
    assert _strict(lambda: F.extract_features(resnet, images, batch_size=2)).shape == (3, 512)
    from cnnviz.attribution import guided_backprop_units

    where = torch.tensor([[1, 2], [0, 0], [3, 3]])
    units = _strict(lambda: guided_backprop_units(resnet.module, images, "layer1", 2, where))
    assert units.shape == images.shape and bool(units.abs().sum() > 0)
    field = _strict(lambda: F.receptive_field(resnet.module, "layer1", (3, 64, 64)))
    assert field.size[0] > 1
    frame = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8)
    for overlay in ("grad_cam", "vanilla_gradient", "none"):
        result = _strict(lambda: process_frame(resnet, frame, "layer1", 0, overlay, cam_layer="layer4"))
        assert len(result.predictions) == 5 and result.composite is not None


# --- on a CUDA GPU: the same computations as on the CPU --------------------------------------------


@pytest.fixture(scope="module")
def gpu_pair():
    """resnet18 (random weights, seeded: identical on both devices) on the CPU and on the GPU."""
    return load_model("resnet18", pretrained=False), load_model("resnet18", pretrained=False, device="cuda")


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> None:
    """``b`` (GPU) equals ``a`` (CPU) within ``rtol`` of ``a``'s range (TF32 and kernel choices differ)."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    assert a.shape == b.shape
    scale = float(a.abs().max()) or 1.0
    assert float((a - b).abs().max()) <= rtol * scale, float((a - b).abs().max()) / scale


@needs_cuda
def test_gpu_forward_gradient_and_grad_cam_match_the_cpu(gpu_pair):
    from cnnviz import attribution as A

    cpu, gpu = gpu_pair
    assert gpu.device.type == "cuda" and gpu.preprocessing.device.startswith("cuda")
    from cnnviz.samples import DEFAULT_PHOTO, load_sample

    x_cpu = cpu.preprocessing(load_sample(DEFAULT_PHOTO))
    x_gpu = gpu.preprocessing(load_sample(DEFAULT_PHOTO))
    assert x_gpu.device.type == "cuda"
    with torch.inference_mode():
        _close(cpu.module(x_cpu), gpu.module(x_gpu), 1e-2)
    _close(A.vanilla_gradient(cpu.module, x_cpu, 3), A.vanilla_gradient(gpu.module, x_gpu, 3), 2e-2)
    _close(A.grad_cam(cpu.module, x_cpu, 3, "layer4"), A.grad_cam(gpu.module, x_gpu, 3, "layer4"), 2e-2)
    assert all(p.grad is None for p in gpu.module.parameters())


@needs_cuda
def test_gpu_occlusion_matches_the_cpu_exact_map(gpu_pair):
    from cnnviz import attribution as A
    from cnnviz.display import rank_correlation

    cpu, gpu = gpu_pair
    x = cpu.preprocessing.normalize(_image(96))
    exact = A.occlusion_map(cpu.module, x, 3, 16, 8, precision="float32")
    on_gpu = A.occlusion_map(gpu.module, x.cuda(), 3, 16, 8, precision="float32")
    assert on_gpu.engine == "batched" and on_gpu.heat.device.type == "cuda"
    _close(exact.heat, on_gpu.heat, 2e-2)
    fast = A.occlusion_map(gpu.module, x.cuda(), 3, 16, 8)  # the fast copy: bfloat16 or float16
    assert fast.precision == str(D.fast_dtype("cuda")).removeprefix("torch.")
    assert rank_correlation(exact.heat[0], fast.heat[0]) > 0.95
    incremental = A.occlusion_map(gpu.module, x.cuda(), 3, 16, 8, precision="float32", engine="incremental")
    _close(exact.heat, incremental.heat, 2e-2)


@needs_cuda
def test_gpu_deepdream_and_gatys_steps_match_the_cpu(gpu_pair):
    from cnnviz import synthesis as S
    from cnnviz.style import loss_network, style_transfer

    cpu, gpu = gpu_pair
    start = _image(64)
    a = S.run(S.dream(cpu, start, "layer3", steps=1, octaves=1))
    b = S.run(S.dream(gpu, start, "layer3", steps=1, octaves=1))
    assert b.pixels.device.type == "cuda"
    _close(a.pixels - start, b.pixels.cpu() - start, 5e-2)  # the step itself, not the image it is added to
    vgg_cpu, vgg_gpu = loss_network(pretrained=False), loss_network(pretrained=False, device="cuda")
    content, style = _image(64), torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    a = S.run(style_transfer(vgg_cpu, content, style, steps=1, size=64))
    b = S.run(style_transfer(vgg_gpu, content, style, steps=1, size=64))
    _close(a.pixels - content, b.pixels.cpu() - content, 5e-2)
    for name in a.losses:
        assert b.losses[name] == pytest.approx(a.losses[name], rel=2e-2), name
