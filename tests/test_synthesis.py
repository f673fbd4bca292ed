"""The optimisation loop and its parts: objectives move the right way, regularizers do what they say,
the loop is deterministic, refuses NaN, and leaves nothing on the shared model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnviz import synthesis as S
from cnnviz.hooks import input_gradient, leftover_state
from cnnviz.models import load_model


@pytest.fixture(scope="module")
def resnet():
    return load_model("resnet18", pretrained=False)


@pytest.fixture(scope="module")
def digit_x(small_cnn):
    from cnnviz.samples import load_sample

    return small_cnn.preprocessing(load_sample("digit 3"))


def high_frequency_energy(pixels: torch.Tensor) -> float:
    """Mean squared response to the discrete Laplacian (a high-pass filter)."""
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(pixels.shape[1], 1, 1, 1)
    return float(torch.nn.functional.conv2d(pixels, lap, groups=pixels.shape[1]).pow(2).mean())


# --- objectives move the right way ---------------------------------------------------------


@pytest.mark.parametrize("init", ["noise", "zeros"])
def test_class_score_rises_on_random_weights(resnet, init):
    """Also from "zeros": an exactly flat image would give a random ResNet a zero gradient."""
    last = S.run(S.class_visualization(resnet, 7, steps=8, lr=0.05, size=64, init=init))
    assert last.history[-1]["logit 7"] > last.history[0]["logit 7"] + 0.1
    assert leftover_state(resnet.module) == []


def test_class_score_rises_on_small_cnn(small_cnn):
    last = S.run(S.class_visualization(small_cnn, "8", steps=20))
    scores = [h["logit 8"] for h in last.history]
    assert scores[-1] > scores[0] + 5
    assert leftover_state(small_cnn.module) == []


@pytest.mark.parametrize("position", [None, "centre"])
def test_channel_and_unit_activation_rise(resnet, position):
    last = S.run(S.neuron_visualization(resnet, "layer2", 3, position, steps=8, size=64, init="noise"))
    key = next(k for k in last.losses if k != "objective")
    assert last.history[-1][key] > last.history[0][key]
    assert leftover_state(resnet.module) == []


def test_inversion_loss_falls(small_cnn, digit_x):
    last = S.run(S.invert_features(small_cnn, digit_x, "features.4", steps=30, tv_weight=0.1))
    errors = [h["feature error"] for h in last.history]
    assert errors[-1] < 0.3 * errors[0]
    assert leftover_state(small_cnn.module) == []


def test_deepdream_activation_norm_rises_in_every_octave(resnet):
    start = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    last = S.run(S.dream(resnet, start, "layer2", steps=4, octaves=2, lr=0.02, jitter_pixels=2))
    assert last.pixels.shape == (1, 3, 64, 64) and last.step == last.total == 8
    for octave in (1, 2):
        norms = [h["layer2 ½‖A‖²"] for h in last.history if h["octave"] == octave]
        assert norms[-1] > norms[0]
    assert leftover_state(resnet.module) == []


def test_deepdream_runs_at_any_size_on_a_model_with_a_fixed_size_head(small_cnn, digit_x):
    """The forward stops after the dreamt layer, so the small CNN's linear head never sees 48×48."""
    start = small_cnn.preprocessing.denormalize(digit_x).clamp(0, 1)
    last = S.run(S.dream(small_cnn, start, "features.3", steps=3, octaves=2, size=48))
    assert last.pixels.shape == (1, 1, 48, 48)
    assert leftover_state(small_cnn.module) == []


# --- the loop against an independent gradient ----------------------------------------------


def test_one_plain_ascent_step_matches_autograd(small_cnn, digit_x):
    pre = small_cnn.preprocessing
    start = pre.denormalize(digit_x).clamp(0, 1)
    step = S.run(S.optimize(small_cnn.module, S.class_logit(2), start, 1, S.ascent(0.01), pre))
    # oracle: gradient of logit 2 w.r.t. the normalised input, chain rule through normalize (÷ std)
    _, grad = input_gradient(small_cnn.module, digit_x, lambda out: out[:, 2])
    expected = (start + 0.01 * grad / pre.std[0]).clamp(0, 1)
    torch.testing.assert_close(step.pixels, expected, atol=1e-6, rtol=1e-5)


def test_objective_algebra_matches_formula(small_cnn, digit_x):
    pixels = small_cnn.preprocessing.denormalize(digit_x)
    logits = small_cnn.module(digit_x).detach()
    capture = S.Capture(pixels, logits, {}, small_cnn.preprocessing)
    combined = S.class_logit(1) - 0.5 * S.l2() + 2 * S.class_logit(3) - 1.0
    expected = logits[:, 1] - 0.5 * digit_x.pow(2).sum() + 2 * logits[:, 3] - 1.0
    torch.testing.assert_close(combined(capture), expected)
    assert set(capture.values) == {"logit 1", "‖I‖²", "logit 3"}


def test_total_variation_and_feature_error_formulas():
    x = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    capture = S.Capture(x, None, {"a": x * 2})
    dx = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    dy = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    tv1 = ((dx**2 + dy**2 + 1e-8) ** 0.5).sum(1).mean()
    torch.testing.assert_close(S.total_variation(1.0)(capture), tv1.view(1))
    target = torch.ones_like(x)
    expected = ((x * 2 - 1) ** 2).sum() / target.pow(2).sum()
    torch.testing.assert_close(S.feature_error("a", target)(capture), expected.view(1))


# --- regularizers do what they claim -------------------------------------------------------


def test_blur_lowers_high_frequency_energy(small_cnn):
    noise = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    state = S.ImageState(noise, torch.zeros_like(noise), 4, small_cnn.preprocessing)
    blurred = S.blur_every(2, 1.0)(state)
    assert high_frequency_energy(blurred) < 0.2 * high_frequency_energy(noise)
    assert torch.equal(S.blur_every(3, 1.0)(state), noise)  # step 4 is not a multiple of 3
    plain = S.run(S.class_visualization(small_cnn, 5, steps=12, init="noise"))
    smooth = S.run(S.class_visualization(small_cnn, 5, steps=12, init="noise", blur_every_steps=1, blur_sigma=1.0))
    assert high_frequency_energy(smooth.pixels) < 0.5 * high_frequency_energy(plain.pixels)


def test_l2_term_lowers_the_norm(small_cnn):
    def norm(step):
        return float(small_cnn.preprocessing.normalize(step.pixels).norm())

    free = S.run(S.class_visualization(small_cnn, 5, steps=15, init="noise"))
    penalised = S.run(S.class_visualization(small_cnn, 5, steps=15, init="noise", l2_weight=1.0))
    assert norm(penalised) < 0.7 * norm(free)
    only_l2 = S.run(S.optimize(small_cnn.module, -S.l2(), S.initial_pixels(small_cnn, "noise"), 10,
                               S.normalized_ascent(0.02), small_cnn.preprocessing))
    assert only_l2.history[-1]["‖I‖²"] < only_l2.history[0]["‖I‖²"]


def _state(pre, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(1, channels, 16, 16, generator=g)
    grad = torch.randn(1, channels, 16, 16, generator=g)
    return S.ImageState(pixels, grad, 1, pre)


@pytest.mark.parametrize("kind", ["norm", "contribution"])
def test_clipping_switches_zero_exactly_the_small_pixels(resnet, kind):
    pre = resnet.preprocessing
    state = _state(pre)
    centred = pre.normalize(state.pixels)
    if kind == "norm":
        score = centred.pow(2).sum(1)[0].numpy()
        out = S.clip_small_norm(30)(state)
    else:
        score = np.abs((centred * state.grad).sum(1)[0].numpy())
        out = S.clip_small_contribution(30)(state)
    expected_zero = score < np.percentile(score, 30)
    zeroed = (pre.normalize(out).abs().amax(1)[0] < 1e-5).numpy()
    assert abs(expected_zero.sum() - 0.3 * 256) <= 1
    np.testing.assert_array_equal(zeroed, expected_zero)  # those pixels are now the mean colour
    untouched = ~expected_zero
    assert torch.equal(out[0][:, torch.from_numpy(untouched)], state.pixels[0][:, torch.from_numpy(untouched)])


def test_projection_keeps_the_epsilon_ball(small_cnn):
    state = _state(small_cnn.preprocessing, channels=1)
    center = torch.full_like(state.pixels, 0.5)
    out = S.project_linf(center, 0.1)(state)
    assert float((out - center).abs().max()) <= 0.1 + 1e-7


def test_jitter_and_scale_keep_the_size():
    x = torch.rand(1, 3, 20, 20)
    g = torch.Generator().manual_seed(0)
    t = S.compose([S.jitter(3), S.random_scale([0.8, 1.0, 1.2])])
    for _ in range(5):
        assert t(x, g).shape == x.shape


# --- determinism, bounds, failures ---------------------------------------------------------


def test_deterministic_given_a_seed(small_cnn):
    params = dict(steps=6, init="noise", jitter_pixels=3, blur_every_steps=2)
    a = S.run(S.class_visualization(small_cnn, 4, seed=3, **params))
    b = S.run(S.class_visualization(small_cnn, 4, seed=3, **params))
    c = S.run(S.class_visualization(small_cnn, 4, seed=4, **params))
    assert torch.equal(a.pixels, b.pixels) and a.history == b.history
    assert not torch.equal(a.pixels, c.pixels)


def test_pixels_stay_valid_and_every_controls_yields(small_cnn):
    steps = list(S.class_visualization(small_cnn, 4, steps=10, lr=0.2, every=4))
    assert [s.step for s in steps] == [4, 8, 10]
    assert all(0 <= float(s.pixels.min()) and float(s.pixels.max()) <= 1 for s in steps)
    assert len(steps[-1].history) == 10


def test_nan_stops_with_a_clear_error_and_leaves_the_model_clean(small_cnn):
    nan_objective = S.Objective(lambda c: c.logits[:, 0] * float("nan"), "nan", needs_logits=True)
    with pytest.raises(S.OptimizationError, match="diverged at step 1"):
        S.run(S.optimize(small_cnn.module, nan_objective, S.initial_pixels(small_cnn, "zeros"), 5,
                         S.ascent(0.1), small_cnn.preprocessing))
    assert leftover_state(small_cnn.module) == []


def test_exception_and_abandoned_loop_leave_the_model_clean(resnet):
    def boom(capture):
        raise RuntimeError("inside the loop")

    with pytest.raises(RuntimeError):
        S.run(S.optimize(resnet.module, S.Objective(boom, layers=["layer1"]), torch.rand(1, 3, 32, 32), 3,
                         S.ascent(0.1), resnet.preprocessing))
    assert leftover_state(resnet.module) == []
    loop = S.class_visualization(resnet, 1, steps=50, size=32)
    next(loop)  # stopped after one step, as the Stop button does
    loop.close()
    assert leftover_state(resnet.module) == []


def test_bad_parameters_give_clear_messages(small_cnn, digit_x):
    with pytest.raises(ValueError, match="steps"):
        S.run(S.class_visualization(small_cnn, 1, steps=S.MAX_STEPS + 1))
    with pytest.raises(ValueError, match="step size"):
        S.run(S.class_visualization(small_cnn, 1, lr=0))
    with pytest.raises(ValueError, match="no class called 'sevn'"):
        S.class_index(small_cnn, "sevn")
    with pytest.raises(ValueError, match="at most|from 16"):
        next(S.dream(small_cnn, torch.rand(1, 1, 32, 32), "features.3", size=S.MAX_DREAM_SIZE + 1))
    with pytest.raises(ValueError, match="16 channels"):
        S.run(S.neuron_visualization(small_cnn, "features.1", 99, steps=1))
    with pytest.raises(KeyError, match="no layer called"):
        S.run(S.invert_features(small_cnn, digit_x, "nope", steps=1))
    assert leftover_state(small_cnn.module) == []
