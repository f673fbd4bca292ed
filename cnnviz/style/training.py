"""Train your own fast style network (Johnson et al. 2016) against VGG-16 features.

Random crops of content photos go through a ``TransformerNet``; its output is scored on the shared
loss network with the same objectives as Gatys' method (content: relative feature error; style:
relative Gram errors; total variation), and only the TransformerNet's weights learn: gradients come
from ``torch.autograd.grad`` with respect to its parameters, so the loss network is never touched.

``train_style_network`` is a generator of ``TrainStep``s; ``TrainingJob`` runs one in a background
thread with a stop flag, for the page; ``main`` is ``python -m cnnviz train-style``.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..admission import AdmissionGate, Cancelled
from ..hooks import forward_until
from ..models import LoadedModel
from ..synthesis import Capture, feature_error, total_variation
from .gatys import resize_longer
from .gram import style_grams, style_loss
from .transformer import TransformerNet
from .vgg import module_name

STYLE_LAYERS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3")
"""Johnson et al.'s style layers (relu outputs)."""
CONTENT_LAYER = "conv2_2"
"""The content layer (Johnson et al. use relu3_3; relu2_2 keeps more detail at small sizes, as in
PyTorch's example)."""
MAX_TRAIN_STEPS = 500
"""A live run is bounded: a few hundred steps take a few minutes on a CPU."""
MAX_TRAIN_SIZE = 256


@dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a training run (the shipped networks record theirs).

    Attributes:
        norm: "instance" or "batch".
        width: channels of the TransformerNet's first layer.
        steps: optimiser steps.
        size: side of the square random crops.
        batch_size: crops per step.
        lr: Adam's learning rate.
        content_weight, style_weight, tv_weight: weights of the three losses.
        style_size: longer side of the style image when its Gram matrices are taken.
        seed: seeds the weights' initialisation and the crops.
    """

    norm: str = "instance"
    width: int = 16
    steps: int = 300
    size: int = 128
    batch_size: int = 4
    lr: float = 2e-3
    content_weight: float = 1.0
    style_weight: float = 5.0
    tv_weight: float = 1.0
    style_size: int = 256
    seed: int = 0

    def check(self, max_steps: int = MAX_TRAIN_STEPS) -> "TrainSettings":
        """Raises ValueError for settings out of range; returns self."""
        if not 1 <= self.steps <= max_steps:
            raise ValueError(f"Train for 1 to {max_steps} steps, not {self.steps}.")
        if not 16 <= self.size <= MAX_TRAIN_SIZE:
            raise ValueError(f"The crop size must be from 16 to {MAX_TRAIN_SIZE} pixels, not {self.size}.")
        if not 1 <= self.batch_size <= 16:
            raise ValueError(f"The batch size must be from 1 to 16, not {self.batch_size}.")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError("The learning rate must be a positive number.")
        if min(self.content_weight, self.style_weight, self.tv_weight) < 0:
            raise ValueError("The loss weights must be >= 0.")
        return self


SHIPPED = TrainSettings(width=16, steps=400, size=64, batch_size=4, lr=2e-3, content_weight=1.0, style_weight=5.0, tv_weight=1.0, style_size=256, seed=0)
"""The settings of the two shipped networks (``assets/train_style_networks.py``), instance and batch norm."""
SHIPPED_STYLE = "immunohistochemistry (scikit-image)"
ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"


def shipped_path(norm: str) -> Path:
    """Where the shipped network with ``norm`` ("instance" or "batch") is kept."""
    return ASSETS / f"style_{norm}_norm.safetensors"


def shipped_style_pixels() -> Tensor:
    """The shipped networks' style image, pixels (1, 3, H, W) in [0, 1]."""
    import skimage.data

    array = skimage.data.immunohistochemistry().astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


@dataclass(frozen=True)
class TrainStep:
    """One report of a training run.

    Attributes:
        step, total: steps done and planned.
        losses: this step's batch means: "content loss", "style loss", "TV^2", "loss" (weighted sum).
        history: the ``losses`` of every step so far.
        seconds: time since the start.
        network: the network being trained (live object: copy or save it before training goes on).
        preview: the preview image stylised by the network in eval mode (1, 3, H, W), or None
            (between previews).
    """

    step: int
    total: int
    losses: dict[str, float]
    history: tuple[dict[str, float], ...]
    seconds: float
    network: TransformerNet = field(repr=False)
    preview: Tensor | None = field(default=None, repr=False)


def init_weights_(net: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw every convolution's weights and biases as PyTorch's default (Kaiming-uniform) from
    ``generator``, so a seed fixes the network without touching the global random state."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight[0].numel())
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
    return net


def content_pool(images: Sequence[Image.Image], size: int) -> list[Tensor]:
    """Content photos as pixels (3, h, w) in [0, 1], the shorter side 1.25 × ``size`` (room for crops).

    Raises:
        ValueError: no image.
    """
    if not images:
        raise ValueError("Training needs at least one content image.")
    pool = []
    short = math.ceil(1.25 * size)
    for image in images:
        image = image.convert("RGB")
        w, h = image.size
        factor = short / min(w, h)
        image = image.resize((max(short, round(w * factor)), max(short, round(h * factor))), resample=Image.BICUBIC)
        pool.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous())
    return pool


def random_crops(pool: Sequence[Tensor], batch_size: int, size: int, generator: torch.Generator) -> Tensor:
    """``batch_size`` random ``size`` × ``size`` crops of random images of ``pool``, half of them
    flipped left-right: (B, 3, size, size)."""
    crops = []
    for _ in range(batch_size):
        image = pool[int(torch.randint(len(pool), (1,), generator=generator))]
        h, w = image.shape[1:]
        top = int(torch.randint(h - size + 1, (1,), generator=generator))
        left = int(torch.randint(w - size + 1, (1,), generator=generator))
        crop = image[:, top : top + size, left : left + size]
        if bool(torch.rand(1, generator=generator) < 0.5):
            crop = crop.flip(2)
        crops.append(crop)
    return torch.stack(crops)


def train_style_network(
    loss_model: LoadedModel,
    style: Tensor,
    content_images: Sequence[Image.Image],
    settings: TrainSettings = TrainSettings(),
    preview: Tensor | None = None,
    every: int = 10,
    network: TransformerNet | None = None,
    max_steps: int = MAX_TRAIN_STEPS,
) -> Iterator[TrainStep]:
    """Train a fast style network for ``style`` on random crops of ``content_images``.

    Per step: B random crops x, y = net(x), loss = α·‖Φ(y) − Φ(x)‖²/‖Φ(x)‖² at ``CONTENT_LAYER``
    + β·Σ_l ‖G_l(y) − A_l‖²/‖A_l‖²/L at ``STYLE_LAYERS`` + γ·TV²(y), Adam on the net's weights.

    Args:
        loss_model: VGG-16's convolutions (``loss_network()``), shared and left untouched.
        style: pixels (1, 3, H, W) in [0, 1].
        content_images: photos to crop from.
        preview: pixels (1, 3, H, W) stylised (eval mode) every ``every`` steps and after the last,
            e.g. the current image.
        network: continue training this network (else a new one from ``settings``).
        max_steps: bound on ``settings.steps`` (a live run's; the shipped networks' script raises it).

    Yields:
        a ``TrainStep`` after every step (so a consumer can stop between any two).
    """
    settings.check(max_steps)
    generator = torch.Generator().manual_seed(int(settings.seed))
    net = network if network is not None else init_weights_(TransformerNet(settings.norm, settings.width), generator)
    device = loss_model.device  # the network trains where the loss network runs
    net.to(device).train()
    grams = style_grams(loss_model, resize_longer(style.to(device), settings.style_size), STYLE_LAYERS)
    content_name = module_name(CONTENT_LAYER)
    pool = content_pool(content_images, settings.size)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    pre, vgg = loss_model.preprocessing, loss_model.module
    style_term = style_loss(grams)
    layers = [content_name, *(module_name(layer) for layer in STYLE_LAYERS)]
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for k in range(1, settings.steps + 1):
        x = random_crops(pool, settings.batch_size, settings.size, generator).to(device)
        with torch.no_grad():
            target = forward_until(vgg, pre.normalize(x), content_name)[content_name]
        with torch.enable_grad():
            y = net(x)
            capture = Capture(y, None, forward_until(vgg, pre.normalize(y), layers, keep_graph=True), pre)
            content = feature_error(content_name, target, name="content loss")(capture)
            loss = (settings.content_weight * content + settings.style_weight * style_term(capture)
                    + settings.tv_weight * total_variation(2.0)(capture)).mean()
            grads = torch.autograd.grad(loss, params)  # the loss network's weights get nothing
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        losses = {name: float(v.detach().mean()) for name, v in capture.values.items()}
        losses["loss"] = float(loss.detach())
        if not math.isfinite(losses["loss"]):
            raise ValueError(f"Training diverged at step {k} (the loss became {losses['loss']}); lower the learning rate.")
        history.append(losses)
        shown = None
        if preview is not None and (k % every == 0 or k == settings.steps):
            net.eval()
            with torch.inference_mode():
                shown = net(preview.float().to(device)).clone()
            net.train()
        yield TrainStep(k, settings.steps, losses, tuple(history), time.perf_counter() - start, net, shown)
    net.eval()


class TrainingJob:
    """One training run in a background thread, with a stop flag (one per browser session).

    The page starts it, polls ``latest`` and ``status``, and may ``stop`` it; the thread checks the
    flag between steps. ``status``: "running", "done", "stopped" or "error" (``error`` says why).

    Args:
        make_steps: returns the iterator of training steps.
        gate: train in a slot of this admission gate (``cnnviz.admission``), taking turns at every step;
            ``queued`` is the place in its queue while waiting (0 once training).
        owner: who the job belongs to at the gate (a session id).
    """

    def __init__(self, make_steps: Callable[[], Iterator[TrainStep]], gate: AdmissionGate | None = None,
                 owner: str = ""):
        self._make_steps = make_steps
        self._gate, self._owner, self.queued = gate, owner, 0
        self._stop = threading.Event()
        self.latest: TrainStep | None = None
        self.preview: Tensor | None = None  # the latest preview
        self.status = "running"
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="cnnviz-train-style", daemon=True)

    def start(self) -> "TrainingJob":
        self.thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to stop after the current step."""
        self._stop.set()

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def _queue_position(self, position: int) -> None:
        self.queued = position

    def _run(self) -> None:
        slot = (self._gate.job(self._owner, "style training", on_wait=self._queue_position, cancelled=self._stop.is_set)
                if self._gate is not None else nullcontext(None))
        try:
            with slot as ticket:
                self.queued = 0
                for step in self._make_steps():
                    self.latest = step
                    if step.preview is not None:
                        self.preview = step.preview
                    if self._stop.is_set():
                        self.status = "stopped"
                        return
                    if ticket is not None:
                        ticket.checkpoint(on_wait=self._queue_position, cancelled=self._stop.is_set)
                        self.queued = 0
            self.status = "done"
        except Cancelled:
            self.status = "stopped"
        except Exception as error:  # shown on the page; never a traceback in the thread
            self.status, self.error = "error", f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)


def main(style: str, content: str | None = None, out: str = "style_network.safetensors", say: Callable[[str], None] = print,
         **settings) -> int:
    """``python -m cnnviz train-style --style IMG``: train a fast style network, save it as safetensors.

    Args:
        style: path of the style image.
        content: a folder of content photos (default: the gallery photos).
        out: where to save the network.
        settings: fields of ``TrainSettings`` (default: the shipped networks' settings, 200 steps).

    Returns:
        The exit status (0, or 1 with a message on bad input or a missing loss network).
    """
    from dataclasses import asdict, replace

    from ..data import folder_dataset, photos_dataset
    from ..images import ImageError, load_image
    from ..models import WeightsUnavailable
    from ..sources import SourceError
    from .transformer import save_checkpoint
    from .vgg import loss_network

    try:
        picture = load_image(style)
        images = folder_dataset(content).images if content else photos_dataset().images
        model = loss_network(pretrained=True)
        chosen = replace(SHIPPED, **{"steps": 200, **{k: v for k, v in settings.items() if v is not None}}).check()
    except (ImageError, ValueError, OSError, WeightsUnavailable, SourceError) as error:
        say(f"error: {error}")
        return 1
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    say(f"training a {chosen.norm}-norm network on {len(images)} content images, {chosen.steps} steps of "
        f"{chosen.batch_size} crops of {chosen.size} px; loss network: {model.label}")
    last = None
    for last in train_style_network(model, pixels, images, chosen):
        if last.step % 10 == 0 or last.step == chosen.steps:
            say(f"step {last.step}/{chosen.steps}  loss {last.losses['loss']:.3f}  content {last.losses['content loss']:.3f}  "
                f"style {last.losses['style loss']:.3f}  {last.seconds:.0f} s")
            save_checkpoint(last.network, out, {"settings": asdict(chosen), "style": str(style), "steps_done": last.step,
                                                 "history": list(last.history)})
    say(f"saved {out}")
    return 0
