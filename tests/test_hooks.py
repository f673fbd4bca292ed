"""The shared model stays clean: hooks removed (also after exceptions), thread-owned hooks,
no parameter gradients, train/eval flags restored, and leftover_state can see every leak."""

from __future__ import annotations

import threading

import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor

from cnnviz.hooks import (
    forward_hooks,
    forward_until,
    graph_from,
    input_gradient,
    leftover_state,
    preserve_mode,
    record_activations,
)
from cnnviz.models import load_model


@pytest.fixture(scope="module")
def vgg():
    return load_model("vgg16", pretrained=False).module


def test_recorded_activations_match_create_feature_extractor(small_cnn, digit_batch):
    x, _ = digit_batch
    layers = ["features.1", "features.4", "features.8", "classifier.1"]
    oracle = create_feature_extractor(small_cnn.module, return_nodes=layers)
    with torch.inference_mode():
        expected = oracle(x)
    with record_activations(small_cnn.module, layers) as acts, torch.inference_mode():
        small_cnn.module(x)
    for name in layers:
        assert torch.allclose(acts[name], expected[name], atol=1e-6), name
    assert leftover_state(small_cnn.module) == []


def test_recording_happens_before_later_in_place_ops(vgg):
    """VGG's conv output is overwritten by the in-place ReLU after it; the record must not be."""
    x = torch.randn(1, 3, 64, 64)
    with record_activations(vgg, ["features.0"]) as acts, torch.inference_mode():
        out = vgg(x)
    conv_out = torch.nn.functional.conv2d(x, vgg.features[0].weight, vgg.features[0].bias, padding=1)
    assert (acts["features.0"] < 0).any()
    assert torch.allclose(acts["features.0"], conv_out, atol=1e-5)
    with torch.inference_mode():
        assert torch.allclose(out, vgg(x), atol=1e-5)  # the copy changed nothing downstream


def test_keep_graph_gives_gradients_with_respect_to_the_layer(small_cnn, digit_batch):
    x, _ = digit_batch
    with record_activations(small_cnn.module, ["features.4"], keep_graph=True) as acts:
        logits = small_cnn.module(x)
    (grad,) = torch.autograd.grad(logits[:, 3].sum(), acts["features.4"])
    head = torch.nn.Sequential(*list(small_cnn.module.features)[5:], small_cnn.module.classifier)
    a = acts["features.4"].detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(head(a)[:, 3].sum(), a)
    assert torch.allclose(grad, expected, atol=1e-6)
    assert leftover_state(small_cnn.module) == []


def test_graph_from_gives_the_full_graph_gradient_and_records_only_what_follows(vgg):
    """Grad-CAM's gradient through a graph started at the layer equals the one through the whole
    network; the layers before it record nothing (the input never enters a graph), and VGG's in-place
    ReLU after ``features.28`` changes a clone, not the leaf."""
    x = torch.randn(2, 3, 64, 64)
    with record_activations(vgg, ["features.28"], keep_graph=True) as full:
        logits = vgg(x)
    (expected,) = torch.autograd.grad(logits[:, 5].sum(), full["features.28"])
    for grad_mode in (True, False):
        with torch.set_grad_enabled(grad_mode):
            with graph_from(vgg, "features.28") as leaf:
                assert not torch.is_grad_enabled()
                out = vgg(x)
                assert torch.is_grad_enabled()
                (grad,) = torch.autograd.grad(out[:, 5].sum(), leaf["features.28"])
            assert torch.is_grad_enabled() == grad_mode
    assert leaf["features.28"].is_leaf and (leaf["features.28"] < 0).any()  # recorded before the ReLU
    assert torch.allclose(grad, expected, atol=1e-6) and grad.abs().sum() > 0
    torch.testing.assert_close(out, logits.detach())
    assert leftover_state(vgg) == []


def test_graph_from_restores_grad_mode_and_hooks_after_an_exception(small_cnn, digit_batch):
    x, _ = digit_batch
    with pytest.raises(RuntimeError, match="boom"), graph_from(small_cnn.module, "features.4"):
        small_cnn.module(x)
        raise RuntimeError("boom")
    assert torch.is_grad_enabled()
    assert leftover_state(small_cnn.module) == []


def test_hooks_are_removed_after_an_exception(small_cnn, digit_batch):
    x, _ = digit_batch
    before = list(small_cnn.module.modules())
    with pytest.raises(RuntimeError, match="boom"):
        with record_activations(small_cnn.module, ["features.0", "features.6"]):
            small_cnn.module(x)
            raise RuntimeError("boom")

    def failing_hook(module, inputs, output):
        raise ValueError("inside hook")

    with pytest.raises(ValueError, match="inside hook"):
        with forward_hooks(small_cnn.module, {"features.2": failing_hook}):
            small_cnn.module(x)
    with pytest.raises(KeyError, match="no layer called 'nope'"):
        with forward_hooks(small_cnn.module, {"features.0": lambda *a: None, "nope": lambda *a: None}):
            pass
    assert leftover_state(small_cnn.module, before) == []


def test_input_gradient_matches_finite_differences_and_leaves_no_grad(small_cnn, digit_batch):
    model = small_cnn.module.double()
    try:
        x = torch.randn(2, 1, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))  # no max-pool ties
        scores, grad = input_gradient(model, x, lambda out: out[:, 5])
        direction = torch.randn_like(x)
        eps = 1e-6
        with torch.no_grad():
            numeric = (model(x + eps * direction)[:, 5] - model(x - eps * direction)[:, 5]) / (2 * eps)
        analytic = (grad * direction).flatten(1).sum(1)
        assert torch.allclose(analytic, numeric, rtol=1e-5, atol=1e-7)
        assert torch.allclose(scores, model(x)[:, 5].detach())
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.float()
    assert leftover_state(small_cnn.module) == []


def test_two_threads_on_one_model_each_get_their_own_result(small_cnn, digit_batch):
    x, _ = digit_batch
    inputs = [x[:4], x[4:]]
    with torch.inference_mode():
        expected = [small_cnn.module.features[:5](a) for a in inputs]
    expected_grads = [input_gradient(small_cnn.module, a, lambda out: out[:, 1])[1] for a in inputs]
    results: dict[int, list] = {0: [], 1: []}
    barrier = threading.Barrier(2)
    errors = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            for _ in range(20):
                with record_activations(small_cnn.module, ["features.4"]) as acts, torch.inference_mode():
                    small_cnn.module(inputs[i])
                results[i].append(acts["features.4"])
                results[i].append(input_gradient(small_cnn.module, inputs[i], lambda out: out[:, 1])[1])
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in (0, 1):
        assert all(torch.allclose(r, expected[i], atol=1e-6) for r in results[i][0::2])
        assert all(torch.allclose(r, expected_grads[i], atol=1e-6) for r in results[i][1::2])
    assert leftover_state(small_cnn.module) == []


def test_a_hook_does_not_fire_for_other_threads(small_cnn, digit_batch):
    calls = []
    entered, done = threading.Event(), threading.Event()

    def holder():
        with forward_hooks(small_cnn.module, {"features.0": lambda *a: calls.append(threading.get_ident())}):
            entered.set()
            done.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    entered.wait(10)
    with torch.inference_mode():
        small_cnn.module(digit_batch[0][:1])  # another thread runs the model while the hook is attached
    done.set()
    thread.join()
    assert calls == []
    assert leftover_state(small_cnn.module) == []


def test_preserve_mode_restores_flags_after_an_exception(small_cnn):
    with pytest.raises(RuntimeError):
        with preserve_mode(small_cnn.module):
            small_cnn.module.train()
            raise RuntimeError
    assert leftover_state(small_cnn.module) == []


def test_leftover_state_sees_every_kind_of_leak():
    model = load_model("small_cnn").module
    before = list(model.modules())
    handle = model.features[0].register_forward_hook(lambda *a: None)
    assert any("_forward_hooks" in p for p in leftover_state(model))
    handle.remove()
    model(torch.zeros(1, 1, 32, 32)).sum().backward()
    assert any(".grad is set" in p for p in leftover_state(model))
    for p in model.parameters():
        p.grad = None
    model.features[1] = torch.nn.ReLU()
    model.classifier.train()
    problems = leftover_state(model, before)
    assert "modules were swapped" in problems and any("train mode" in p for p in problems)


# --- forward_until: run the model only as far as a layer ------------------------------------


class _MustNotRun(torch.nn.Module):
    def forward(self, x):
        raise AssertionError("a layer after the stop ran")


def test_forward_until_equals_a_full_forward(small_cnn, digit_batch):
    x, _ = digit_batch
    layers = ["features.7", "features.1", "features.4"]  # not in execution order
    with record_activations(small_cnn.module, layers) as full, torch.inference_mode():
        small_cnn.module(x)
    with torch.inference_mode():
        early = forward_until(small_cnn.module, x, layers)
        penultimate = forward_until(small_cnn.module, x, "classifier.1", inputs=True)["classifier.1"]
    assert list(early) == layers
    for name in layers:
        assert torch.equal(early[name], full[name]), name
    with torch.inference_mode():
        assert torch.equal(penultimate, small_cnn.module.features(x).flatten(1))
    assert leftover_state(small_cnn.module) == []


def test_forward_until_skips_the_layers_after_the_stop(small_cnn, digit_batch):
    x, _ = digit_batch
    calls = []
    with forward_hooks(small_cnn.module, {"features.8": lambda *a: calls.append(1)}), torch.inference_mode():
        forward_until(small_cnn.module, x, ["features.2", "features.4"])
        assert calls == []
        forward_until(small_cnn.module, x, "features.9")
        assert calls == [1]
    # a model that raises after the layer, and a fixed-size linear head that would fail at 48×48
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), _MustNotRun()).eval()
    out = forward_until(model, torch.randn(1, 1, 8, 8), "1")["1"]
    assert out.shape == (1, 2, 6, 6) and (out >= 0).all()
    big = forward_until(small_cnn.module, torch.zeros(1, 1, 48, 48), "features.9")["features.9"]
    assert big.shape == (1, 32, 12, 12)
    assert leftover_state(model) == [] and leftover_state(small_cnn.module) == []


def test_forward_until_a_module_called_twice_stops_at_its_first_call():
    relu = torch.nn.ReLU()

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.relu, self.after = relu, torch.nn.Identity()

        def forward(self, x):
            return self.after(self.relu(self.relu(x) - 1))

    model = Twice().eval()
    x = torch.tensor([[0.5, 2.0, 3.0]])
    assert torch.equal(forward_until(model, x, "relu")["relu"], torch.relu(x))  # first call
    both = forward_until(model, x, ["relu", "after"])
    assert torch.equal(both["relu"], torch.relu(torch.relu(x) - 1))  # last call before the stop
    assert leftover_state(model) == []


def test_forward_until_cleans_up_and_explains_errors(small_cnn, digit_batch):
    x, _ = digit_batch
    before = list(small_cnn.module.modules())
    unused = torch.nn.ModuleDict({"used": torch.nn.Identity(), "spare": torch.nn.ReLU()}).eval()
    unused.forward = lambda x: unused["used"](x)  # "spare" is registered but never called
    with pytest.raises(ValueError, match="'spare' did not run"):
        forward_until(unused, x, ["used", "spare"])
    with pytest.raises(KeyError, match="no layer called 'nope'"):
        forward_until(small_cnn.module, x, ["features.1", "nope"])
    with pytest.raises(ValueError, match="at least one layer"):
        forward_until(small_cnn.module, x, [])
    with pytest.raises(RuntimeError):  # the model itself fails (3 channels) before the layer
        forward_until(small_cnn.module, torch.zeros(1, 3, 32, 32), "features.4")
    tuple_out = torch.nn.LSTM(4, 3, batch_first=True)
    with pytest.raises(ValueError, match="not a tensor"):
        forward_until(torch.nn.Sequential(tuple_out), torch.zeros(1, 2, 4), "0")
    assert leftover_state(small_cnn.module, before) == [] and leftover_state(unused) == []


def test_forward_until_keep_graph_gives_gradients(small_cnn, digit_batch):
    x, _ = digit_batch
    xg = x.clone().requires_grad_(True)
    acts = forward_until(small_cnn.module, xg, ["features.1", "features.4"], keep_graph=True)
    (to_input,) = torch.autograd.grad(acts["features.4"][:, 3].sum(), xg, retain_graph=True)
    (to_layer,) = torch.autograd.grad(acts["features.4"][:, 3].sum(), acts["features.1"])
    xe = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(small_cnn.module.features[:5](xe)[:, 3].sum(), xe)
    assert torch.allclose(to_input, expected, atol=1e-6)
    a = acts["features.1"].detach().requires_grad_(True)
    (expected_layer,) = torch.autograd.grad(small_cnn.module.features[2:5](a)[:, 3].sum(), a)
    assert torch.allclose(to_layer, expected_layer, atol=1e-6)
    assert leftover_state(small_cnn.module) == []
