"""cnnviz.training: initialisation statistics, augmentations, the training loop (early stopping,
snapshots, Stop), the recipe (LR finder, search, ensemble, TTA), gradient checking, transfer learning.

Every training here is tiny (a few hundred digits, one or two epochs) so the file runs in about a
minute on two shared cores.
"""

from __future__ import annotations

import math
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from cnnviz.hooks import leftover_state
from cnnviz.training import (AugmentConfig, TrainData, NetConfig, TrainConfig, apply, color_jitter, crop_scale, cutout,
                             digits_data, ensemble_report, gradient_check, hflip, initial_loss, lr_finder, mixup,
                             overfit_small_sample, run, save_trained, load_trained, search, to_loaded_model, train,
                             tta_report)
from cnnviz.training.activation_functions import curve, saturated_regions, zigzag
from cnnviz.training.gradcheck import verdict
from cnnviz.training.initialization import mlp_statistics
from cnnviz.training.live import BackgroundRun
from cnnviz.training.network import build_network
from cnnviz.training.preprocess_demo import covariance, point_cloud, preprocess_stages
from cnnviz.training.recipe import curve_hints, train_ensemble
from cnnviz.training.loop import Record

SMALL = NetConfig(width=8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny (16×16 inputs, 8 channels): a second intra-op thread only adds
    synchronisation, and on a shared, oversubscribed CPU it made them ten times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits (always offline): 1,437 train / 360 validation at 32×32."""
    return digits_data()


@pytest.fixture(scope="module")
def tiny(digits):
    """400 training and 200 validation digits at 16×16 (4× cheaper than 32×32)."""
    small = digits.subset(400, 200, seed=0)
    shrink = lambda x: torch.nn.functional.interpolate(x, size=(16, 16), mode="area")  # noqa: E731
    return TrainData("digits 16×16", shrink(small.x_train), small.y_train, shrink(small.x_val), small.y_val,
                     small.class_names, invert_light_background=True)


# --- initialisation ---------------------------------------------------------------------------------


def test_kaiming_keeps_relu_activations_alive_across_six_layers():
    stats = mlp_statistics(depth=6, width=256, activation="relu", scheme="kaiming", batch=512)
    first = stats[0].std
    assert all(0.5 * first <= s.std <= 2 * first for s in stats), [s.std for s in stats]


def test_small_normal_weights_make_tanh_activations_collapse():
    stats = mlp_statistics(depth=6, width=256, activation="tanh", scheme="normal", sigma=0.01, batch=512)
    assert stats[-1].std < 1e-3
    assert all(a.std > b.std for a, b in zip(stats, stats[1:]))  # shrinks layer by layer


def test_large_normal_weights_saturate_tanh_and_xavier_does_not():
    big = mlp_statistics(depth=6, width=256, activation="tanh", scheme="normal", sigma=1.0, batch=256)
    xavier = mlp_statistics(depth=6, width=256, activation="tanh", scheme="xavier", batch=256)
    assert big[-1].saturated > 0.7
    assert xavier[-1].saturated < 0.05 and xavier[-1].std > 0.1


# --- augmentations ----------------------------------------------------------------------------------

TRANSFORMS = {"hflip": hflip(), "crop_scale": crop_scale(0.2), "color_jitter": color_jitter(0.3),
              "cutout": cutout(0.3), "mixup": mixup(0.4)}


@pytest.mark.parametrize("name", TRANSFORMS)
def test_augmentation_keeps_shapes_and_labels_and_is_seeded(name, tiny):
    x, labels = tiny.x_train[:32], tiny.y_train[:32]
    out, target = apply(TRANSFORMS[name], x, labels, 10, seed=3)
    again, target_again = apply(TRANSFORMS[name], x, labels, 10, seed=3)
    other, _ = apply(TRANSFORMS[name], x, labels, 10, seed=4)
    assert out.shape == x.shape and target.shape == (32, 10)
    assert torch.equal(out, again) and torch.equal(target, target_again)
    assert not torch.equal(out, other)
    assert torch.allclose(target.sum(1), torch.ones(32))
    assert (target >= 0).all() and out.isfinite().all()
    if name != "mixup":
        assert torch.equal(target.argmax(1), labels)  # labels untouched


def test_hflip_mirrors_exactly_the_flipped_images(tiny):
    x = tiny.x_train[:64]
    out, _ = apply(hflip(), x, tiny.y_train[:64], 10, seed=0)
    flipped = [not torch.equal(a, b) for a, b in zip(out, x)]
    assert 10 < sum(flipped) < 54
    for a, b, f in zip(out, x, flipped):
        assert torch.equal(a, b.flip(2) if f else b)


def test_cutout_zeroes_one_square_and_mixup_blends_pairs(tiny):
    x = torch.ones(8, 1, 32, 32)
    out, _ = apply(cutout(0.25), x, torch.zeros(8, dtype=torch.long), 10, seed=0)  # 8×8 squares
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert (zeros > 0).all() and (zeros <= 64).all()  # an 8×8 square, possibly cut by the border
    x = tiny.x_train[:16]
    out, target = apply(mixup(1.0), x, tiny.y_train[:16], 10, seed=0)
    assert torch.allclose(target.sum(1), torch.ones(16))
    assert ((target > 0).sum(1) <= 2).all()
    # the image is the same blend of two images as the target is of two labels
    lam = target.max(1).values
    assert (lam >= 0.5 - 1e-6).all()


def test_crop_scale_of_strength_zero_is_the_identity(tiny):
    x = tiny.x_train[:8]
    out, _ = apply(crop_scale(0.0), x, tiny.y_train[:8], 10, seed=0)
    assert torch.allclose(out, x, atol=1e-5)


# --- the training loop ------------------------------------------------------------------------------


def test_training_learns_keeps_snapshots_and_is_deterministic(tiny):
    config = TrainConfig(net=replace(SMALL, dropout=0.2), epochs=2, lr=5e-3, augment=AugmentConfig(crop_scale=0.1))
    records = list(train(config, tiny))
    result = records[-1].result
    its = [r for r in records if r.kind == "iteration"]
    assert len(its) == 2 * math.ceil(400 / 64) and its[-1].iteration == len(its)
    assert np.mean([r.loss for r in its[-5:]]) < np.mean([r.loss for r in its[:5]])
    assert result.val_accuracy > 0.3  # chance is 0.1; 14 iterations only
    assert len(result.snapshots) == 3  # initialisation + one per epoch
    init = build_network(config.net, 1, 10, 16, torch.Generator().manual_seed(0))
    assert all(torch.equal(v, result.snapshots[0][k]) for k, v in init.state_dict().items())
    again = run(config, tiny)
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in result.model.state_dict().items())
    assert not result.model.training and all(p.grad is None for p in result.model.parameters())


def test_early_stopping_restores_the_best_epoch(tiny):
    # the learning rate grows tenfold every epoch: validation accuracy peaks early, then falls
    config = TrainConfig(net=SMALL, epochs=5, lr=1e-3, schedule="step", step_size=1, gamma=20.0, patience=2)
    result = run(config, tiny)
    vals = [r.val_accuracy for r in result.history]
    assert result.best_epoch == int(np.argmax(vals)) + 1 < len(vals)
    assert result.status == "early stopped" and len(vals) < 5
    best = result.snapshots[result.best_epoch]
    assert all(torch.equal(v, best[k]) for k, v in result.model.state_dict().items())
    from cnnviz.training.loop import evaluate
    assert evaluate(result.model, tiny.x_val, tiny.y_val, tiny.normalize)[0] == pytest.approx(max(vals))


def test_stop_halts_within_one_iteration(tiny):
    stop = threading.Event()

    def callback(record):
        if record.kind == "iteration" and record.iteration == 3:
            stop.set()

    records = list(train(TrainConfig(net=SMALL, epochs=3), tiny, callback, stop=stop))
    assert max(r.iteration for r in records if r.kind == "iteration") == 3
    assert records[-1].result.status == "stopped"


def test_background_run_stops_within_one_iteration(tiny):
    seen_at_stop = []
    job = BackgroundRun(lambda stop: train(TrainConfig(net=SMALL, epochs=50), tiny, stop=stop)).start()
    while not any(r.kind == "iteration" for r in job.snapshot().items):
        job.join(0.05)
    seen_at_stop.append(len([r for r in job.snapshot().items if r.kind == "iteration"]))
    job.stop()
    job.join(60)
    snap = job.snapshot()
    iterations = [r for r in snap.items if r.kind == "iteration"]
    assert snap.status == "stopped"
    assert len(iterations) <= seen_at_stop[0] + 1
    assert snap.items[-1].kind == "done"


def test_background_run_reports_errors_as_messages(tiny):
    job = BackgroundRun(lambda stop: train(TrainConfig(net=SMALL, lr=-1.0), tiny, stop=stop)).start()
    job.join(30)
    snap = job.snapshot()
    assert snap.status == "error" and "learning rate" in snap.error


def test_regularisers_and_structural_variants_train(tiny):
    net = NetConfig(width=8, residual=True, stochastic_depth=0.3, batch_norm=True, pool="fractional",
                    dropconnect=0.3, dropout=0.2, activation="elu", init="xavier")
    config = TrainConfig(net=net, epochs=1, optimizer="sgd", lr=0.05, regularization="elastic", weight_decay=1e-4,
                         warmup_epochs=0.5, augment=AugmentConfig(True, 0.1, 0.2, 0.25, 0.2))
    result = run(config, tiny)
    assert math.isfinite(result.history[-1].loss)
    x = tiny.normalize(tiny.x_val[:4])
    assert torch.equal(result.model(x), result.model(x))  # eval mode: no randomness left
    with pytest.raises(ValueError, match="residual"):
        run(TrainConfig(net=NetConfig(stochastic_depth=0.5)), tiny)


@pytest.mark.parametrize("penalty,strength", [("l1", 0.05), ("l2", 0.2), ("elastic", 0.1)])
def test_weight_penalties_shrink_the_weights(penalty, strength, tiny):
    config = TrainConfig(net=SMALL, epochs=2, optimizer="sgd", lr=0.05, schedule="constant")
    plain = run(replace(config, regularization="none"), tiny)
    shrunk = run(replace(config, regularization=penalty, weight_decay=strength), tiny)
    norm = lambda m: sum(float(p.detach().abs().sum()) for n, p in m.named_parameters() if n.endswith("weight"))  # noqa: E731
    assert norm(shrunk.model) < 0.8 * norm(plain.model)


def test_dead_relu_fractions_are_reported_per_layer(tiny):
    records = list(train(TrainConfig(net=SMALL, epochs=1), tiny))
    epoch = next(r for r in records if r.kind == "epoch")
    assert set(epoch.dead_relu) == {"features.1", "features.3", "features.6", "features.8"}
    assert all(0.0 <= v <= 1.0 for v in epoch.dead_relu.values())


def test_saved_network_loads_as_the_same_model(tiny):
    result = run(TrainConfig(net=SMALL, epochs=1), tiny)
    loaded = load_trained(save_trained(result))
    model = to_loaded_model(result)
    x = tiny.normalize(tiny.x_val[:8])
    assert torch.allclose(loaded.module(x), model.module(x))
    assert loaded.class_names == model.class_names and loaded.input_size == (1, 16, 16)
    with pytest.raises(ValueError):
        load_trained(b"not a file")


# --- the recipe -------------------------------------------------------------------------------------


def test_initial_loss_is_close_to_log_of_the_classes(tiny):
    check = initial_loss(TrainConfig(net=NetConfig(init="default")), tiny)
    assert check.expected == pytest.approx(math.log(10))
    assert check.ok, check.message
    bad = initial_loss(TrainConfig(net=NetConfig(init="normal", init_std=1.0)), tiny)
    assert not bad.ok and bad.loss > 5


def test_overfitting_a_small_sample_reaches_full_training_accuracy(tiny):
    records = list(overfit_small_sample(TrainConfig(net=SMALL, batch_size=16), tiny, batches=5, max_epochs=40))
    accs = [r.train_accuracy for r in records if r.kind == "epoch"]
    assert accs[-1] == 1.0 and len(accs) < 40


def test_lr_finder_suggestion_trains_better_than_a_hundred_times_larger(tiny):
    config = TrainConfig(net=SMALL, epochs=1)
    found = lr_finder(config, tiny, start=1e-4, end=10.0, steps=60)
    assert 1e-4 < found.suggestion < 10.0
    good = run(replace(config, lr=found.suggestion, schedule="constant", epochs=2), tiny).val_accuracy
    try:
        bad = run(replace(config, lr=100 * found.suggestion, schedule="constant", epochs=2), tiny).val_accuracy
    except ValueError:  # diverged to NaN: certainly worse
        bad = 0.0
    assert good > bad + 0.1, (found.suggestion, good, bad)


def test_search_runs_coarse_then_fine_around_the_best(tiny):
    trials = list(search(TrainConfig(net=SMALL), tiny, coarse=3, fine=2, train_images=200, val_images=100))
    assert [t.stage for t in trials] == ["coarse"] * 3 + ["fine"] * 2
    best = max(trials[:3], key=lambda t: t.val_accuracy)
    for t in trials[3:]:
        assert best.lr / 3.2 <= t.lr <= best.lr * 3.2 and best.weight_decay / 3.2 <= t.weight_decay <= best.weight_decay * 3.2
    with pytest.raises(ValueError, match="20"):
        list(search(TrainConfig(), tiny, coarse=15, fine=6))


def test_ensemble_is_at_least_as_good_as_its_mean_member(tiny):
    records = list(train_ensemble(TrainConfig(net=SMALL, epochs=1), tiny, members=3))
    models = [r.result.model for _, r in records if r.kind == "done"]
    report = ensemble_report(models, tiny)
    assert len(report.member_accuracies) == 3
    assert report.ensemble_accuracy >= report.mean_member


def test_tta_averages_views_and_reports_the_gain(tiny):
    result = run(TrainConfig(net=SMALL, epochs=1), tiny)
    plain = tta_report(result.model, tiny, flips=False, shift=0)
    assert plain.views == 1 and plain.gain == 0
    report = tta_report(result.model, tiny, flips=False, shift=2)
    assert report.views == 5 and 0 <= report.tta_accuracy <= 1


def test_curve_hints_name_overfitting():
    its = [Record("iteration", i, 1, 100, loss=2.0 * 0.97**i) for i in range(1, 101)]
    eps = [Record("epoch", 100, 1, 100, train_accuracy=0.99, val_accuracy=0.80)]
    assert any("overfitting" in h for h in curve_hints(its, eps))
    eps = [Record("epoch", 100, 1, 100, train_accuracy=0.95, val_accuracy=0.94)]
    assert not any("overfitting" in h for h in curve_hints(its, eps) if "no sign" not in h)


# --- gradient checking ------------------------------------------------------------------------------


def test_gradient_check_is_exact_on_a_smooth_network(tiny):
    model = build_network(NetConfig(width=4, activation="tanh", pool="avg"), 1, 10, 16, torch.Generator().manual_seed(0))
    report = gradient_check(model.eval(), tiny.normalize(tiny.x_val[:4]), tiny.y_val[:4], per_layer=4)
    assert len(report.rows) == 10  # weight and bias of 4 convolutions and the linear layer
    assert report.max_relative_error < 1e-6, [(r.parameter, r.max_relative_error) for r in report.rows]
    assert not report.has_kinks and all(r.verdict in ("excellent", "fine with kinks, too high for a smooth loss") for r in report.rows)


def test_gradient_check_explains_kinks_of_relu_and_max_pooling(tiny):
    model = build_network(NetConfig(width=4), 1, 10, 16, torch.Generator().manual_seed(0)).eval()
    report = gradient_check(model, tiny.normalize(tiny.x_val[:4]), tiny.y_val[:4], per_layer=3)
    assert report.has_kinks and "kink" in report.explanation
    assert verdict(1e-5) == "fine with kinks, too high for a smooth loss"


class _Doubled(torch.autograd.Function):
    """tanh whose backward is wrong by a factor of 2 (a deliberate bug)."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return 2 * grad * (1 - y**2)


class _BrokenTanh(nn.Module):
    def forward(self, x):
        return _Doubled.apply(x)


def test_gradient_check_flags_a_wrong_backward(tiny):
    model = build_network(NetConfig(width=4, activation="tanh", pool="avg"), 1, 10, 16, torch.Generator().manual_seed(0))
    model.features[1] = _BrokenTanh()
    report = gradient_check(model.eval(), tiny.normalize(tiny.x_val[:4]), tiny.y_val[:4], per_layer=4)
    rows = {r.parameter: r for r in report.rows}
    assert rows["features.0.weight"].max_relative_error > 1e-2
    assert rows["features.0.weight"].verdict == "probably wrong"
    assert rows["classifier.1.weight"].max_relative_error < 1e-6  # above the bug: still right


def test_gradient_check_leaves_the_model_untouched(small_cnn, digit_batch):
    x, y = digit_batch
    before = {k: v.clone() for k, v in small_cnn.module.state_dict().items()}
    gradient_check(small_cnn.module, x[:2], y[:2], per_layer=2)
    assert leftover_state(small_cnn.module) == []
    assert all(torch.equal(v, small_cnn.module.state_dict()[k]) for k, v in before.items())


# --- activation functions, preprocessing ------------------------------------------------------------


def test_activation_derivatives_match_their_formulas():
    x = np.linspace(-10, 10, 201)
    f, g = curve("sigmoid", x)
    assert np.allclose(g, f * (1 - f))
    f, g = curve("tanh", x)
    assert np.allclose(g, 1 - f**2)
    f, g = curve("ELU", x, alpha=1.0)
    assert np.allclose(g[x < 0], np.exp(x[x < 0]))
    f, g = curve("Maxout", x, w1=1.0, b1=0.0, w2=0.0, b2=0.0)  # = ReLU
    assert np.allclose(f, np.maximum(x, 0))
    regions = saturated_regions(x, curve("sigmoid", x)[1])
    assert regions[0][0] == -10 and regions[-1][1] == 10 and len(regions) == 2
    assert saturated_regions(x, curve("ReLU", x)[1])[0] == (-10.0, 0.0)


def test_all_positive_inputs_force_same_sign_updates():
    z = zigzag()
    assert z.positive_same_sign == 1.0 and z.centred_same_sign < 0.8
    assert np.linalg.norm(z.centred_path[-1] - np.array(z.target)) < np.linalg.norm(z.positive_path[-1] - np.array(z.target))


def test_whitening_gives_identity_covariance():
    stages = preprocess_stages(point_cloud())
    assert np.allclose(stages["zero-centred"].mean(0), 0, atol=1e-9)
    assert np.allclose(np.diag(covariance(stages["normalised"])), 1)
    cov = covariance(stages["decorrelated (PCA)"])
    assert abs(cov[0, 1]) < 1e-9 and cov[0, 0] > cov[1, 1]
    assert np.allclose(covariance(stages["whitened"]), np.eye(2), atol=1e-6)


# --- transfer learning ------------------------------------------------------------------------------


def _trained_squeezenet():
    from cnnviz.models import WeightsUnavailable, load_model

    try:
        model = load_model("squeezenet1_1")
    except (WeightsUnavailable, Exception) as error:  # noqa: BLE001
        pytest.skip(f"trained SqueezeNet not available here: {error}")
    return model


def test_transfer_from_the_trained_network_beats_random_features():
    from cnnviz.models import load_model
    from cnnviz.training import faces_dataset, transfer_learning

    faces = faces_dataset()
    trained = _trained_squeezenet()
    random = load_model("squeezenet1_1", pretrained=False)
    before = {k: v.clone() for k, v in trained.module.state_dict().items()}
    good = list(transfer_learning(trained, faces, "head", epochs=15, size=64))
    bad = list(transfer_learning(random, faces, "head", epochs=15, size=64))
    assert good[-1].val_accuracy > bad[-1].val_accuracy
    assert good[-1].val_accuracy > 0.85
    assert leftover_state(trained.module) == []
    assert all(torch.equal(v, trained.module.state_dict()[k]) for k, v in before.items())


def test_fine_tuning_the_last_block_trains_a_private_copy():
    from cnnviz.models import load_model
    from cnnviz.training import faces_dataset, transfer_learning

    model = load_model("squeezenet1_1", pretrained=False)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    records = list(transfer_learning(model, faces_dataset(), "finetune", epochs=2, size=48))
    assert len(records) == 2 and records[-1].method.startswith("finetune")
    assert leftover_state(model.module) == []
    assert all(torch.equal(v, model.module.state_dict()[k]) for k, v in before.items())
