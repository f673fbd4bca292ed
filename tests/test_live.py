"""cnnviz.live: one frame equals the still-image methods, two threads at once, the latest-frame-wins
worker, the stream cap, and the bundled clip."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from cnnviz.attribution import default_cam_layer, grad_cam, vanilla_gradient
from cnnviz.display import channel_max_abs
from cnnviz.features import feature_maps
from cnnviz.hooks import leftover_state
from cnnviz.live import (
    BundledClip,
    LiveProcessor,
    LiveSettings,
    cap_frame,
    channel_grid,
    draw_overlay,
    model_box,
    process_frame,
)
from cnnviz.models import load_model, predict
from cnnviz.samples import load_sample


@pytest.fixture(scope="module")
def squeezenet():
    return load_model("squeezenet1_1", pretrained=False)


def _frame(seed: int, size: tuple[int, int] = (300, 200)) -> np.ndarray:
    """A smooth random RGB frame (H, W, 3) uint8, different per seed."""
    generator = torch.Generator().manual_seed(seed)
    small = torch.rand(3, 6, 9, generator=generator)
    big = torch.nn.functional.interpolate(small[None], size=(size[1], size[0]), mode="bilinear")[0]
    return (big.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def resnet():
    """Batch norms with statistics that are not the identity: the live copy folds them."""
    model = load_model("resnet18", pretrained=False)
    copy = model.module
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in copy.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding of an equivalent computation (channels-last, folded batch norms):
    1e-4 relative, and 1e-4 of the largest value absolute."""
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


@pytest.mark.parametrize("name,layer", [("small_cnn", "features.4"), ("squeezenet1_1", "features.6"),
                                        ("resnet18", "layer2.1.bn2")])
@pytest.mark.parametrize("overlay", ["grad_cam", "vanilla_gradient", "none"])
def test_frame_equals_the_still_image_methods(name, layer, overlay, small_cnn, squeezenet, resnet):
    """Also on ResNet-18, whose live copy has its batch norms folded (``layer2.1.bn2`` is then an
    identity after the folded convolution): equal up to float32 rounding."""
    model = {"small_cnn": small_cnn, "squeezenet1_1": squeezenet, "resnet18": resnet}[name]
    image = load_sample("digit 5" if name == "small_cnn" else "coffee (scikit-image)")
    frame = cap_frame(image)
    x = model.preprocessing(frame)
    cam_layer = default_cam_layer(model.module, x)
    result = process_frame(model, frame, layer, 3, overlay, cam_layer=cam_layer)

    _close(result.maps, feature_maps(model.module, x, [layer])[layer][0])
    expected = predict(model, x, k=5)[0]
    assert [n for n, _ in result.predictions] == [n for n, _ in expected]
    np.testing.assert_allclose([p for _, p in result.predictions], [p for _, p in expected], rtol=1e-4)
    assert result.target == model.class_names.index(expected[0][0])
    if overlay == "grad_cam":
        _close(result.heat, grad_cam(model.module, x, result.target, cam_layer)[0])
    elif overlay == "vanilla_gradient":
        expected_heat = channel_max_abs(vanilla_gradient(model.module, x, result.target))[0]
        if name == "resnet18":  # rounding flips a few ReLU and max-pool gates, and so their gradients
            near = torch.isclose(result.heat, expected_heat, rtol=1e-4, atol=1e-4 * float(expected_heat.abs().max()))
            assert near.float().mean() > 0.995
            assert np.corrcoef(result.heat.flatten(), expected_heat.flatten())[0, 1] > 0.999
        else:
            _close(result.heat, expected_heat)
    else:
        assert not result.heat.any()
    assert result.heat.shape == x.shape[-2:]
    assert result.composite.shape == (frame.height, frame.width, 3)
    torch.testing.assert_close(result.channel_map, result.maps[3])
    assert leftover_state(model.module) == []


def test_frames_run_through_a_channels_last_copy_of_a_small_model_only(squeezenet, monkeypatch):
    import cnnviz.live as live

    x = squeezenet.preprocessing(cap_frame(_frame(0)))
    copy = live.live_network(squeezenet, x)
    assert copy is not squeezenet.module and live.live_network(squeezenet, x) is copy  # built once
    assert copy.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert squeezenet.module.features[0].weight.is_contiguous()  # the shared model is untouched
    monkeypatch.setattr(live, "FAST_COPY_MAX_MB", 0)
    big = load_model("squeezenet1_1", pretrained=False)  # a model of its own, no copy built yet
    assert live.live_network(big, x) is big.module
    slow = process_frame(big, _frame(0), "features.6", 0, fast=False)
    torch.testing.assert_close(process_frame(big, _frame(0), "features.6", 0).heat, slow.heat)


def test_a_given_target_is_explained(small_cnn):
    frame = load_sample("digit 2")
    x = small_cnn.preprocessing(frame)
    result = process_frame(small_cnn, frame, "features.4", 0, "grad_cam", cam_layer="features.9", target=7)
    assert result.target == 7
    torch.testing.assert_close(result.heat, grad_cam(small_cnn.module, x, 7, "features.9")[0])


def test_two_threads_at_once_get_their_own_results(squeezenet):
    jobs = [(_frame(1), "features.3", "grad_cam"), (_frame(2), "features.9", "vanilla_gradient")]
    cam_layer = "features.12"
    expected = [process_frame(squeezenet, f, layer, 1, overlay, cam_layer=cam_layer) for f, layer, overlay in jobs]
    barrier = threading.Barrier(2)
    results: dict[int, list] = {0: [], 1: []}
    errors = []

    def work(i: int) -> None:
        try:
            frame, layer, overlay = jobs[i]
            for _ in range(3):
                barrier.wait(timeout=60)
                results[i].append(process_frame(squeezenet, frame, layer, 1, overlay, cam_layer=cam_layer))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    for i in range(2):
        assert len(results[i]) == 3
        for result in results[i]:
            assert result.layer == jobs[i][1]
            torch.testing.assert_close(result.maps, expected[i].maps)
            torch.testing.assert_close(result.heat, expected[i].heat)
            assert [n for n, _ in result.predictions] == [n for n, _ in expected[i].predictions]
            np.testing.assert_allclose([p for _, p in result.predictions], [p for _, p in expected[i].predictions])
    assert leftover_state(squeezenet.module) == []


@pytest.mark.parametrize("kwargs,message", [
    (dict(layer="features.4", channel=16), "has 16 channels"),
    (dict(layer="classifier.1", channel=0), "not feature maps"),
    (dict(layer="nope", channel=0), "no layer called"),
    (dict(layer="features.4", channel=0, overlay="occlusion"), "Unknown overlay"),
    (dict(layer="features.4", channel=0, target=10), "between 0 and 9"),
])
def test_bad_settings_raise_a_clear_error_and_leave_nothing(small_cnn, kwargs, message):
    with pytest.raises(ValueError, match=message):
        process_frame(small_cnn, load_sample("digit 1"), cam_layer="features.9", **kwargs)
    assert leftover_state(small_cnn.module) == []


def test_model_box_is_the_centre_crop():
    squeeze = load_model("squeezenet1_1", pretrained=False).preprocessing  # resize 256, crop 224
    # 240 px shorter side -> the crop covers 240 * 224 / 256 = 210 px, centred
    assert model_box((320, 240), squeeze) == (55, 15, 265, 225)
    frame = Image.fromarray(_frame(4, (320, 240)))
    left, top, right, bottom = model_box(frame.size, squeeze)
    seen = np.asarray(squeeze.view(frame), dtype=np.float64)
    cropped = np.asarray(frame.crop((left, top, right, bottom)).resize((224, 224), Image.Resampling.BILINEAR), dtype=np.float64)
    assert np.abs(seen - cropped).mean() < 2.0  # the same pixels, up to resampling


def test_cap_frame_limits_the_longer_side():
    assert cap_frame(np.zeros((480, 640, 3), np.uint8)).size == (320, 240)
    assert cap_frame(Image.new("RGB", (100, 50))).size == (100, 50)


def test_draw_overlay_blends_only_inside_the_box():
    image = Image.new("RGB", (40, 30), (10, 20, 30))
    heat = np.zeros((8, 8))
    heat[:4, :4] = 1.0  # hot top-left quarter
    out = draw_overlay(image, heat, (10, 5, 30, 25), alpha=0.8).astype(int)
    base = np.asarray(image).astype(int)
    assert (out[:, :9] == base[:, :9]).all() and (out[:4] == base[:4]).all()  # outside the box
    assert np.abs(out[7:13, 12:18] - base[7:13, 12:18]).sum() > np.abs(out[19:23, 24:28] - base[19:23, 24:28]).sum()
    unchanged = draw_overlay(image, heat, (10, 5, 30, 25), alpha=0.0)
    assert (unchanged[7:23, 12:28] == base[7:23, 12:28]).all()


def test_channel_grid_frames_the_picked_channel():
    maps = torch.zeros(8, 4, 4)
    grid = channel_grid(maps, 5, width=64)  # 4 columns of 16 px tiles + 2 px gaps
    red = (grid == [255, 40, 40]).all(axis=-1)
    rows, cols = np.nonzero(red)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (18, 33, 18, 33)  # row 1, column 1


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_two_frames_at_once_are_both_processed(small_cnn):
    """WebRTC often hands over frames in pairs: an idle worker must not drop the first of a pair."""
    processor = LiveProcessor(LiveSettings(small_cnn, "features.4", 2, "grad_cam", "features.9"), idle_seconds=0.5,
                              streams=threading.BoundedSemaphore(1))
    try:
        for round_ in range(3):
            before = processor.stats().processed
            first, second = _frame(2 * round_, (64, 48)), _frame(2 * round_ + 1, (64, 48))
            processor.submit(first)
            processor.submit(second)
            _wait(lambda: processor.stats().processed == before + 2)
            assert np.array_equal(np.asarray(processor.latest().image), second)
        assert processor.stats().dropped == 0
    finally:
        processor.close()


def test_the_worker_drops_stale_frames_and_shows_the_newest(small_cnn):
    processor = LiveProcessor(LiveSettings(small_cnn, "features.4", 2, "grad_cam", "features.9"), idle_seconds=0.5,
                              streams=threading.BoundedSemaphore(1))
    frames = [_frame(seed, (64, 48)) for seed in range(30)]
    try:
        for frame in frames:  # far faster than the model: most frames wait behind a newer one
            processor.submit(frame)
        _wait(lambda: processor.stats().processed + processor.stats().dropped == len(frames))
        stats = processor.stats()
        assert stats.dropped >= 1 and stats.processed < len(frames)
        assert np.array_equal(np.asarray(processor.latest().image), frames[-1])  # the newest frame wins
        assert stats.error == "" and stats.latency > 0
        for frame in frames[:8]:  # at a steady pace every frame is processed
            before = processor.stats().processed
            processor.submit(frame)
            processor.wait_for_result(before)
        assert processor.stats().processed == stats.processed + 8 and processor.stats().fps > 0
        _wait(lambda: not processor.running)  # idle: the thread ends by itself
    finally:
        processor.close()
    assert leftover_state(small_cnn.module) == []


def test_a_bad_setting_is_reported_and_the_worker_survives(small_cnn):
    processor = LiveProcessor(LiveSettings(small_cnn, "features.4", 99), streams=threading.BoundedSemaphore(1))
    try:
        processor.submit(_frame(0))
        _wait(lambda: processor.stats().error != "")
        assert "has 16 channels" in processor.stats().error and processor.latest() is None
        processor.configure(LiveSettings(small_cnn, "features.4", 1, "vanilla_gradient"))
        processor.submit(_frame(1))
        _wait(lambda: processor.latest() is not None)
        assert processor.stats().error == "" and processor.latest().overlay == "vanilla_gradient"
    finally:
        processor.close()


def test_streams_beyond_the_cap_are_refused_until_one_ends(small_cnn):
    slots = threading.BoundedSemaphore(1)
    settings = LiveSettings(small_cnn, "features.4", 0, "none")
    first = LiveProcessor(settings, idle_seconds=0.3, streams=slots)
    second = LiveProcessor(settings, idle_seconds=0.3, streams=slots)
    try:
        first.submit(_frame(0))
        second.submit(_frame(1))
        assert "maximum of live streams" in second.stats().error
        _wait(lambda: not first.running)  # the first one goes idle and gives its slot back
        second.submit(_frame(1))
        _wait(lambda: second.latest() is not None)
    finally:
        first.close()
        second.close()


def test_bundled_clip_pans_zooms_and_loops():
    clip = BundledClip(["cat (scikit-image)", "coffee (scikit-image)"], seconds_per_image=2.0)
    assert clip.duration == 4.0 and clip.name_at(2.5) == "coffee (scikit-image)"
    first = clip.frame_at(0.0)
    assert first.shape == (240, 320, 3) and first.dtype == np.uint8
    # t = 0: no zoom yet, the widest 4:3 window of the cat photo (451 x 300) at its left edge
    cat = load_sample("cat (scikit-image)")
    assert cat.size == (451, 300)
    expected = np.asarray(cat.resize((320, 240), Image.Resampling.BILINEAR, box=(0, 0, 400, 300)))
    assert np.abs(first.astype(int) - expected.astype(int)).mean() < 1.0
    moving = [clip.frame_at(t) for t in (0.0, 0.5, 1.0)]
    assert all(np.abs(a.astype(int) - b.astype(int)).mean() > 1 for a, b in zip(moving, moving[1:]))
    assert np.array_equal(clip.frame_at(1.25), clip.frame_at(5.25))  # loops
    with pytest.raises(ValueError):
        BundledClip([], 1.0)


def test_a_frozen_frame_is_the_image_of_every_page():
    from streamlit.testing.v1 import AppTest

    from conftest import ROOT

    frame = Image.fromarray(_frame(7, (320, 240)))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.session_state["_live_frame"] = (frame, "Live frame 12:00:00")  # as ui.freeze_image leaves it
    at.session_state["image_source"] = "Live frame"
    at.run()
    assert not at.exception
    assert at.session_state["image_name"] == "Live frame 12:00:00"
    at.switch_page("pages/activations.py").run()
    assert not at.exception
    context = at.session_state["context"]
    assert context.image_name == "Live frame 12:00:00"
    torch.testing.assert_close(context.x, context.model.preprocessing(frame))


def test_frames_take_turns_at_the_admission_gate(small_cnn):
    from cnnviz.admission import AdmissionGate

    gate = AdmissionGate(slots=1, quantum_s=0.05, poll_s=0.01)
    processor = LiveProcessor(LiveSettings(small_cnn, "features.4", 2, "grad_cam", "features.9"), idle_seconds=0.5,
                              streams=threading.BoundedSemaphore(1), gate=gate, owner="student live")
    try:
        with gate.job("another student", "occlusion"):  # the one slot is busy: no frame is processed
            processor.submit(_frame(0))
            _wait(lambda: gate.status()["waiting"] == ["live frame"])
            time.sleep(0.2)
            assert processor.stats().processed == 0
        _wait(lambda: processor.stats().processed == 1)  # the slot is free: the waiting frame goes through
        assert gate.status() == {"running": [], "waiting": []}  # each frame gives its turn back
        processor.submit(_frame(1))
        _wait(lambda: processor.stats().processed == 2)
    finally:
        processor.close()
    assert leftover_state(small_cnn.module) == []
