"""Batch norms folded without torch.fx (cnnviz.folding) against torch.fx's own ``fuse`` (the oracle;
tests may trace): the same pairs on every architecture of the zoo and on small networks built to
break the rule "the layer's output feeds that batch norm alone", and in float32 the same outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.experimental.optimization import fuse

from cnnviz.folding import bf16_inference_copy, conv_bn_pairs, fold_batch_norms, private_copy
from cnnviz.hooks import leftover_state, record_activations
from cnnviz.models import MODEL_NAMES, load_model


def _norms(model: nn.Module) -> set[str]:
    return {name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


@torch.no_grad()
def _random_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm random running statistics and affine parameters (a fresh one is close to
    the identity), so that folding a batch norm into the wrong layer changes the output."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            shape = m.running_mean.shape
            m.running_mean.copy_(torch.randn(shape, generator=generator) * 0.2)
            m.running_var.copy_(torch.rand(shape, generator=generator) * 1.5 + 0.5)
            if m.affine:
                m.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(shape, generator=generator) * 0.2)
    return model


def _check_against_fx(model: nn.Module, x: Tensor) -> list[tuple[str, str]]:
    """Fold ``model`` both ways; assert the same batch norms go, and the same output within 1e-4 of its max."""
    before = list(model.modules())
    folded, pairs = fold_batch_norms(model, x[:1])
    try:
        oracle = fuse(model)
    except torch.fx.proxy.TraceError:  # torch.fx cannot trace it (efficientnet_lite0): the outputs still agree
        assert _norms(folded) == _norms(model) - {norm for _, norm in pairs}
        oracle = None
    if oracle is not None:
        assert {norm for _, norm in pairs} == _norms(model) - _norms(oracle)
        assert _norms(folded) == _norms(oracle)
    with torch.no_grad():
        want, got = model(x), folded(x)
    scale = float(want.abs().max())
    assert scale > 0 and float((got - want).abs().max()) <= 1e-4 * scale
    assert leftover_state(model, before) == []
    return pairs


def _check_every_norm_folds(model: nn.Module, x: Tensor) -> list[tuple[str, str]]:
    """For a network where every batch norm directly follows a convolution that feeds it alone
    (EfficientNet-Lite's conv → BN → ReLU6): all batch norms go, and the output stays within 1e-4."""
    before = list(model.modules())
    folded, pairs = fold_batch_norms(model, x[:1])
    assert {norm for _, norm in pairs} == _norms(model) and _norms(folded) == set()
    assert all(norm.rsplit(".", 1)[0] == conv.rsplit(".", 1)[0] for conv, norm in pairs)
    with torch.no_grad():
        want, got = model(x), folded(x)
    scale = float(want.abs().max())
    assert scale > 0 and float((got - want).abs().max()) <= 1e-4 * scale
    assert leftover_state(model, before) == []
    return pairs


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_zoo_folds_as_torch_fx_fuse_does_and_computes_the_same(name):
    loaded = load_model(name, pretrained=False)
    model = _random_statistics(private_copy(loaded.module))
    c, h, _ = loaded.input_size
    size = h if name == "small_cnn" else 64
    x = torch.randn(2, c, size, size, generator=torch.Generator().manual_seed(1))
    if name == "efficientnet_lite0":  # TensorFlow "SAME" padding reads the input's size: fx cannot trace it
        pairs = _check_every_norm_folds(model, x)
    else:
        pairs = _check_against_fx(model, x)
    if name == "resnet18":
        assert ("layer1.0.conv2", "layer1.0.bn2") in pairs and ("layer2.0.downsample.0", "layer2.0.downsample.1") in pairs
    if name == "densenet121":  # a batch norm before its convolution stays; one after a convolution goes
        kept = _norms(model) - {norm for _, norm in pairs}
        assert "features.denseblock1.denselayer1.norm1" in kept and "features.transition1.norm" in kept
        assert ("features.denseblock1.denselayer1.conv1", "features.denseblock1.denselayer1.norm2") in pairs


class _Residual(nn.Module):
    """The convolution's output also feeds the sum: its batch norm must stay."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return self.bn(out) + out


class _Functional(nn.Module):
    """The output goes through a functional ReLU before the batch norm: no pair."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.conv2, self.bn2 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn2(self.conv2(self.bn(F.relu(self.conv(x)))))


class _Returned(nn.Module):
    """The convolution's output is returned too: its batch norm must stay."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return torch.cat([self.bn(out), out], dim=1)


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc, self.bn = nn.Conv2d(3, 4, 3), nn.Linear(4, 5), nn.BatchNorm1d(5)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.fc(self.conv(x).mean((2, 3))))


SMALL = {
    "sequential": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)), 1),
    "batch norm first": (lambda: nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 3)), 0),
    "no running statistics": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)), 0),
    "residual": (_Residual, 0),
    "functional relu between": (_Functional, 1),
    "returned too": (_Returned, 0),
    "linear then batch norm": (_Linear, 1),
}


@pytest.mark.parametrize("name", SMALL)
def test_a_layer_is_folded_only_where_its_output_feeds_that_batch_norm_alone(name):
    build, expected = SMALL[name]
    model = _random_statistics(build().eval())
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert len(_check_against_fx(model, x)) == expected


def test_pairs_are_found_without_running_the_shared_model_and_with_other_threads_hooks_present():
    model = load_model("resnet18", pretrained=False).module
    calls = []
    with record_activations(model, ["layer1"]), torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: calls.append(module) if module is model else None
    ):
        folded, pairs = fold_batch_norms(model)  # default example: a zero 224×224 image
    assert calls == [] and len(pairs) == 20
    assert conv_bn_pairs(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), torch.zeros(1, 3, 8, 8)) == []  # bad input
    assert leftover_state(model) == [] and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_the_bf16_copy_uses_the_folded_layers():
    model = load_model("mobilenet_v3_small", pretrained=False).module
    fast = bf16_inference_copy(model, example=torch.zeros(1, 3, 64, 64))
    assert bf16_inference_copy(model) is fast
    assert not _norms(fast) and all(p.dtype == torch.bfloat16 and not p.requires_grad for p in fast.parameters())
    assert leftover_state(model) == [] and next(model.parameters()).dtype == torch.float32
