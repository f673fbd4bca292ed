"""Live video through a network: one frame in, predictions, one layer's feature maps and a saliency
map out, from a single forward pass; a latest-frame-wins background worker; and a bundled clip
made from the gallery photos for machines without a camera.

Nothing here knows about Streamlit or WebRTC: ``ui.live`` feeds camera frames to a
``LiveProcessor`` and shows what it returns. Like every method of cnnviz, ``process_frame`` leaves
nothing on the shared model (hooks through ``cnnviz.hooks``, gradients with ``torch.autograd.grad``),
so any number of threads may call it on one model at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from . import display
from .attribution import cam_from_gradient, default_cam_layer, module_check
from .features import feature_map_grid
from .folding import existing_inference_copy, fast_inference_copy
from .hooks import graph_from, record_activations
from .memory import module_bytes
from .models import LoadedModel
from .preprocessing import Preprocessing
from .samples import load_sample

if TYPE_CHECKING:
    from .admission import AdmissionGate

MAX_SIDE = 320
"""Frames are shrunk so that their longer side is at most this many pixels."""

OVERLAYS = ("grad_cam", "vanilla_gradient", "none")
"""Saliency drawn over the video: Grad-CAM (default), the vanilla gradient, or nothing."""

MAX_LIVE_STREAMS = 2
"""Live streams processed at once by one server process (each one keeps a CPU core busy)."""

_STREAMS = threading.BoundedSemaphore(MAX_LIVE_STREAMS)

Frame = Image.Image | np.ndarray


# --------------------------------------------------------------------------------------------
# One frame


@dataclass(frozen=True)
class FrameResult:
    """What the network made of one frame.

    Attributes:
        image: the frame as processed (RGB, longer side at most ``MAX_SIDE``).
        predictions: top-k (class name, softmax probability), most likely first.
        target: index of the class the saliency map explains (the top class unless given).
        layer: the layer whose feature maps are in ``maps``; ``channel`` the one picked.
        maps: (C, h, w) feature maps of ``layer`` for this frame, detached.
        overlay: one of ``OVERLAYS``; ``cam_layer`` the Grad-CAM layer ("" otherwise).
        heat: (H, W) non-negative saliency at the model's input size; zeros for "none".
        box: (left, top, right, bottom) of the part of the frame the model sees (its centre crop).
        composite: uint8 (h, w, 3) frame with the saliency blended into ``box``, or None if not drawn.
        seconds: wall time of the whole call.
    """

    image: Image.Image
    predictions: list[tuple[str, float]]
    target: int
    layer: str
    channel: int
    maps: Tensor
    overlay: str
    cam_layer: str
    heat: Tensor
    box: tuple[int, int, int, int]
    composite: np.ndarray | None
    seconds: float

    @property
    def channel_map(self) -> Tensor:
        """(h, w) map of the picked channel."""
        return self.maps[self.channel]


def cap_frame(frame: Frame, max_side: int = MAX_SIDE) -> Image.Image:
    """An RGB image (PIL, or uint8 array (H, W, 3)) shrunk so its longer side is at most ``max_side``."""
    image = Image.fromarray(np.ascontiguousarray(frame)) if isinstance(frame, np.ndarray) else frame
    image = image.convert("RGB")
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return image


def model_box(size: tuple[int, int], preprocessing: Preprocessing) -> tuple[int, int, int, int]:
    """Where the model's centre crop lies in an image of ``size`` (W, H): (left, top, right, bottom).

    ``Preprocessing`` resizes the shorter side to ``resize`` and crops ``crop`` × ``crop`` from the
    centre, so the model sees a centred square of side min(W, H) · crop / resize.
    """
    width, height = size
    side = min(width, height) * min(1.0, preprocessing.crop / preprocessing.resize)
    left, top = (width - side) / 2, (height - side) / 2
    return round(left), round(top), round(left + side), round(top + side)


@lru_cache(maxsize=8)
def _lut(name: str) -> np.ndarray:
    """(256, 3) uint8 colour table of a plotly scale (``display.colormap`` of a ramp)."""
    return display.colormap(np.linspace(0.0, 1.0, 256), name)


def draw_overlay(image: Image.Image, heat: Tensor | np.ndarray | None, box: tuple[int, int, int, int],
                 alpha: float = 0.5, percentile: float = 99.0) -> np.ndarray:
    """The frame with a saliency map blended into ``box`` (Inferno, scaled from its minimum to its
    ``percentile``) and the box outlined, so the viewer sees which part the model looks at.

    Args:
        image: the frame (W, H).
        heat: (h, w) map for the box, or None for the outline only.
        alpha: opacity of the map in [0, 1].

    Returns:
        uint8 (H, W, 3).
    """
    if not 0 <= alpha <= 1:
        raise ValueError("The overlay opacity must be between 0 and 1.")
    frame = np.array(image.convert("RGB"))
    left, top, right, bottom = box
    if heat is not None and right > left and bottom > top:
        levels = (display.normalize(heat, percentile) * 255).round().astype(np.uint8)
        colored = Image.fromarray(_lut("Inferno")[levels]).resize((right - left, bottom - top), Image.Resampling.BILINEAR)
        region = frame[top:bottom, left:right].astype(np.float32)
        blended = (1 - alpha) * region + alpha * np.asarray(colored, dtype=np.float32)
        frame[top:bottom, left:right] = blended.round().clip(0, 255).astype(np.uint8)
    if (left, top, right, bottom) != (0, 0, frame.shape[1], frame.shape[0]):
        edge = (230, 230, 230)
        frame[top, left:right] = frame[max(top, bottom - 1), left:right] = edge
        frame[top:bottom, left] = frame[top:bottom, max(left, right - 1)] = edge
    return frame


def process_frame(
    model: LoadedModel,
    image: Frame,
    layer: str,
    channel: int,
    overlay: str = "grad_cam",
    *,
    cam_layer: str | None = None,
    target: int | None = None,
    k: int = 5,
    alpha: float = 0.5,
    draw: bool = True,
    fast: bool = True,
) -> FrameResult:
    """Run one video frame through the model: top-k predictions, every feature map of ``layer`` and
    a saliency map for the top class (or ``target``), all from one forward pass.

    The frame is preprocessed exactly as on the still-image pages (``model.preprocessing``), so the
    maps and predictions equal ``feature_maps`` and ``predict`` for the same image, and the map
    equals ``grad_cam`` / ``channel_max_abs(vanilla_gradient)`` (up to float32 rounding with
    ``fast``). The layer's output is recorded by a thread-local hook; Grad-CAM takes
    ``torch.autograd.grad`` of the class logit with respect to the ``cam_layer`` output, with autograd
    on only after that layer (``graph_from``), the vanilla gradient with respect to the input.

    Args:
        model: the shared model (not modified).
        image: RGB frame, PIL image or uint8 array (H, W, 3); shrunk to ``MAX_SIDE`` first.
        layer: layer whose feature maps are returned (a name from the layer table).
        channel: the channel picked among them.
        overlay: one of ``OVERLAYS``.
        cam_layer: Grad-CAM layer; None picks ``default_cam_layer`` (one more forward pass:
            resolve it once per model when calling per frame).
        target: class to explain; None for the top prediction of this frame.
        k: number of predictions.
        alpha: opacity of the map in the composite.
        draw: also draw the composite frame (``draw_overlay``).
        fast: run the frame through ``live_network`` (a channels-last copy of a model up to
            ``FAST_COPY_MAX_MB``), equal to the model up to float32 rounding; False: the model itself.

    Returns:
        A ``FrameResult``.

    Raises:
        ValueError: an unknown overlay or layer, a channel out of range, a layer without feature
            maps, a layer that did not run, or a target outside the classes.
    """
    start = time.perf_counter()
    if overlay not in OVERLAYS:
        raise ValueError(f"Unknown overlay {overlay!r}. Choose from: {', '.join(OVERLAYS)}.")
    net = model.module
    module_check(net, layer)
    frame = cap_frame(image)
    x = model.preprocessing(frame)
    cam_layer = (cam_layer or default_cam_layer(net, x)) if overlay == "grad_cam" else ""
    if cam_layer:
        module_check(net, cam_layer)
    network = live_network(model, x) if fast else net
    inputs = x.contiguous(memory_format=torch.channels_last) if network is not net else x
    if overlay == "vanilla_gradient":
        inputs = inputs.detach().requires_grad_(True)
    graph = (graph_from(network, cam_layer) if overlay == "grad_cam"
             else torch.enable_grad() if overlay == "vanilla_gradient" else torch.inference_mode())
    with graph as cams:
        with record_activations(network, [layer]) as maps:
            logits = network(inputs)
        activation = _feature_maps(maps, layer, channel)
        probs = torch.softmax(logits.detach().float(), dim=1)[0]
        top = probs.topk(min(k, probs.numel()))
        target = int(top.indices[0]) if target is None else int(target)
        if not 0 <= target < logits.shape[1]:
            raise ValueError(f"The target class must be between 0 and {logits.shape[1] - 1}.")
        heat = _saliency(logits[0, target], overlay, inputs, (cams or {}).get(cam_layer), cam_layer)
    predictions = [(model.class_names[i], float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist())]
    box = model_box(frame.size, model.preprocessing)
    composite = draw_overlay(frame, heat if overlay != "none" else None, box, alpha) if draw else None
    return FrameResult(frame, predictions, target, layer, int(channel), activation, overlay, cam_layer, heat,
                       box, composite, time.perf_counter() - start)


FAST_COPY_MAX_MB = 128
"""Models up to this many MiB of parameters get a copy for live frames (``live_network``); a larger one
(VGG: 528 MiB) would double its memory for little gain, and runs as it is."""


def live_network(model: LoadedModel, example: Tensor) -> nn.Module:
    """The network live frames run through: for a model of at most ``FAST_COPY_MAX_MB``, its float32
    copy with batch norms folded and channels-last weights (``cnnviz.folding.fast_inference_copy``,
    built once per model and counted in the model cache's budget), which runs a frame about 1.5×
    faster on a CPU; otherwise, or if the copy cannot be built, the model itself.

    Args:
        example: a preprocessed frame (1, C, H, W), used once to find the batch norms to fold.
    """
    net = model.module
    built = existing_inference_copy(net, torch.float32)
    if built is not None:
        return built
    if module_bytes(net) > FAST_COPY_MAX_MB << 20:
        return net
    try:
        return fast_inference_copy(net, example, torch.float32)
    except Exception:  # noqa: BLE001 - a model the copy does not handle still runs, only slower
        return net


def _feature_maps(recorded: dict[str, Tensor], layer: str, channel: int) -> Tensor:
    """The recorded (C, h, w) maps of the first image, checked: the layer ran, gives maps, has ``channel``."""
    if layer not in recorded:
        raise ValueError(f"The layer {layer!r} did not run in the forward pass.")
    activation = recorded[layer][0]
    if activation.dim() != 3:
        raise ValueError(f"The layer {layer!r} gives {tuple(recorded[layer].shape)}, not feature maps "
                         "(N, C, h, w). Pick a convolutional layer.")
    if not 0 <= channel < activation.shape[0]:
        raise ValueError(f"The layer {layer!r} has {activation.shape[0]} channels; pick one from 0 to "
                         f"{activation.shape[0] - 1}.")
    return activation.contiguous()


def _saliency(score: Tensor, overlay: str, inputs: Tensor, cam_activation: Tensor | None, cam_layer: str) -> Tensor:
    """(H, W) map of the input ``inputs`` (1, C, H, W) for one class ``score`` (a logit in the graph):
    Grad-CAM from the recorded ``cam_activation``, |gradient| max over channels, or zeros."""
    size = tuple(inputs.shape[-2:])
    if overlay == "grad_cam":
        if cam_activation is None:
            raise ValueError(f"The layer {cam_layer!r} did not run in the forward pass.")
        if cam_activation.dim() != 4:
            raise ValueError(f"Grad-CAM needs a layer with a spatial output (N, C, h, w); {cam_layer!r} gives "
                             f"{tuple(cam_activation.shape)}. Pick a convolutional layer.")
        (gradient,) = torch.autograd.grad(score, cam_activation)
        return cam_from_gradient(cam_activation.detach(), gradient, size)[0]
    if overlay == "vanilla_gradient":
        (gradient,) = torch.autograd.grad(score, inputs)
        return display.channel_max_abs(gradient)[0]
    return torch.zeros(size, device=inputs.device)


def channel_grid(maps: Tensor, channel: int, max_maps: int = 256, width: int = 640, pad: int = 2) -> np.ndarray:
    """The first ``max_maps`` feature maps (C, h, w) as a grid (``feature_map_grid``, each map on its own
    scale) about ``width`` px wide, with the picked channel framed in red (if shown).

    Returns:
        uint8 (H, W, 3).
    """
    shown = min(len(maps), max_maps)
    columns = min(32, int(np.ceil(np.sqrt(2 * shown))))
    tile_px = max(8, width // columns)
    grid = feature_map_grid(maps[:shown], columns=columns, tile_px=tile_px)
    if 0 <= channel < shown:
        factor = max(1, tile_px // max(maps.shape[1:]))
        h, w = maps.shape[1] * factor, maps.shape[2] * factor
        row, col = divmod(channel, columns)
        top, left = row * (h + pad), col * (w + pad)
        red = (255, 40, 40)
        grid[top : top + h, left : left + 2] = grid[top : top + h, left + w - 2 : left + w] = red
        grid[top : top + 2, left : left + w] = grid[top + h - 2 : top + h, left : left + w] = red
    return grid


# --------------------------------------------------------------------------------------------
# A latest-frame-wins worker


@dataclass(frozen=True)
class LiveSettings:
    """What to compute for each frame (see ``process_frame``); replaced as a whole by ``configure``."""

    model: LoadedModel
    layer: str
    channel: int = 0
    overlay: str = "grad_cam"
    cam_layer: str | None = None
    alpha: float = 0.5


@dataclass(frozen=True)
class LiveStats:
    """How the stream keeps up.

    Attributes:
        fps: frames processed per second over the last few seconds (0 when none arrive).
        latency: seconds from a frame's arrival to its result, for the latest result.
        processed: frames processed so far; ``dropped`` frames replaced by a newer one unprocessed.
        error: why the latest frame gave no result ("" when it did).
    """

    fps: float
    latency: float
    processed: int
    dropped: int
    error: str


class LiveProcessor:
    """Processes frames in a background thread, at the rate the model allows.

    ``submit`` only stores the frame. At most ``queued`` frames wait for the worker; a newer one
    drops the oldest, so what is shown never lags behind the camera by more than ``queued`` frames'
    processing time. Two, not one: WebRTC often delivers frames in pairs a millisecond apart, and
    with room for one the first of each pair was dropped unseen (half the frames, at an idle worker).
    The worker thread starts on the first frame and ends after
    ``idle_seconds`` without frames (a closed browser tab leaves no thread behind). At most
    ``MAX_LIVE_STREAMS`` workers run at once in a process (``streams``); a further one reports so
    in ``stats().error`` instead of processing.

    With a ``gate`` (``cnnviz.admission``), each frame is a short heavy job of ``owner``: frames take
    turns with the other sessions' heavy jobs instead of competing with them for the cores, and while
    the gate is busy the stream slows down (the frames meanwhile are dropped) rather than slowing
    everyone.
    """

    def __init__(self, settings: LiveSettings | None = None, *, idle_seconds: float = 5.0, window_seconds: float = 3.0,
                 streams: threading.Semaphore | None = None, queued: int = 2, gate: "AdmissionGate | None" = None,
                 owner: str = "live") -> None:
        self._gate, self._owner = gate, owner
        self._settings = settings
        self._idle_seconds = idle_seconds
        self._window = window_seconds
        self._streams = streams or _STREAMS
        self._lock = threading.Condition()
        self._pending: deque[tuple[Image.Image | np.ndarray, float]] = deque(maxlen=max(1, queued))
        self._thread: threading.Thread | None = None
        self._closed = False
        self._result: FrameResult | None = None
        self._done: deque[float] = deque(maxlen=120)
        self._latency = 0.0
        self._processed = 0
        self._dropped = 0
        self._error = ""

    def configure(self, settings: LiveSettings) -> None:
        """Use these settings from the next frame on."""
        with self._lock:
            self._settings = settings

    @property
    def settings(self) -> LiveSettings | None:
        return self._settings

    def submit(self, frame: Frame) -> None:
        """Hand over the newest frame (PIL or uint8 (H, W, 3)); returns at once."""
        with self._lock:
            if self._closed:
                return
            if len(self._pending) == self._pending.maxlen:
                self._dropped += 1  # the oldest waiting frame goes
            self._pending.append((frame, time.perf_counter()))
            if self._thread is None:
                if not self._streams.acquire(blocking=False):
                    self._pending.clear()
                    self._error = ("The server is already processing its maximum of live streams; "
                                   "try again when another one stops.")
                    return
                self._thread = threading.Thread(target=self._run, name="cnnviz-live", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def latest(self) -> FrameResult | None:
        """The most recent result, or None before the first one."""
        with self._lock:
            return self._result

    def wait_for_result(self, processed: int, timeout: float = 10.0) -> FrameResult | None:
        """Block until more than ``processed`` frames are done (or ``timeout``); the latest result."""
        with self._lock:
            self._lock.wait_for(lambda: self._processed > processed or bool(self._error), timeout)
            return self._result

    def stats(self) -> LiveStats:
        with self._lock:
            now = time.perf_counter()
            recent = [t for t in self._done if now - t <= self._window]
            fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0
            return LiveStats(fps, self._latency, self._processed, self._dropped, self._error)

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        with self._lock:
            return self._thread is not None

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (after the frame in hand) and refuse further frames."""
        with self._lock:
            self._closed = True
            self._pending.clear()
            thread = self._thread
            self._lock.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _next(self) -> tuple[Image.Image | np.ndarray, float, LiveSettings | None] | None:
        """Wait for a frame; None (and the thread is given up) when idle or closed."""
        with self._lock:
            self._lock.wait_for(lambda: bool(self._pending) or self._closed, self._idle_seconds)
            if not self._pending or self._closed:
                self._thread = None
                return None
            frame, arrived = self._pending.popleft()
            return frame, arrived, self._settings

    def _run(self) -> None:
        try:
            while (item := self._next()) is not None:
                frame, arrived, settings = item
                if settings is None:
                    continue
                turn = (self._gate.job(self._owner, "live frame", cancelled=lambda: self._closed) if self._gate
                        else nullcontext())
                try:
                    with turn:
                        result = process_frame(settings.model, frame, settings.layer, settings.channel,
                                               settings.overlay, cam_layer=settings.cam_layer, alpha=settings.alpha)
                except Exception as error:  # noqa: BLE001 - the worker must survive a bad setting; the page shows it
                    with self._lock:
                        self._error = str(error).strip("'\"") or type(error).__name__
                        self._lock.notify_all()
                    continue
                with self._lock:
                    done = time.perf_counter()
                    self._result, self._latency, self._error = result, done - arrived, ""
                    self._done.append(done)
                    self._processed += 1
                    self._lock.notify_all()
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None
            self._streams.release()


# --------------------------------------------------------------------------------------------
# A clip for machines without a camera

CLIP_PHOTOS = (
    "cat (scikit-image)",
    "coffee (scikit-image)",
    "astronaut (scikit-image)",
    "rocket (scikit-image)",
    "flower (scikit-learn)",
    "china (scikit-learn)",
)
"""Gallery photos the bundled clip pans across, in order."""


class BundledClip:
    """A short looping clip made at run time from gallery images: each is shown for
    ``seconds_per_image`` with a slow pan and zoom (alternately in and out), so the Live page can be
    demonstrated without a camera. Nothing is stored on disk.

    Args:
        names: gallery names (``cnnviz.samples``).
        seconds_per_image: how long each image stays.
        size: (W, H) of the frames.
    """

    def __init__(self, names: Sequence[str] = CLIP_PHOTOS, seconds_per_image: float = 4.0,
                 size: tuple[int, int] = (320, 240)) -> None:
        if not names:
            raise ValueError("The clip needs at least one image.")
        if seconds_per_image <= 0 or min(size) < 1 or max(size) > MAX_SIDE:
            raise ValueError(f"Give a positive duration and a frame size of at most {MAX_SIDE} px.")
        self.names = tuple(names)
        self.images = [load_sample(name) for name in self.names]
        self.seconds_per_image = float(seconds_per_image)
        self.size = size

    @property
    def duration(self) -> float:
        """Seconds until the clip loops."""
        return self.seconds_per_image * len(self.images)

    def name_at(self, t: float) -> str:
        """The gallery name shown at time ``t`` (seconds)."""
        return self.names[int((t % self.duration) // self.seconds_per_image)]

    def frame_at(self, t: float) -> np.ndarray:
        """The frame at time ``t`` (seconds; the clip loops): uint8 (H, W, 3)."""
        t = t % self.duration
        index = int(t // self.seconds_per_image)
        image = self.images[index]
        s = (t - index * self.seconds_per_image) / self.seconds_per_image
        s = s * s * (3 - 2 * s)  # ease in and out
        zoom = 1.0 + 0.35 * (s if index % 2 == 0 else 1 - s)
        width, height = self.size
        fit = min(image.width / width, image.height / height)  # largest window of the frame's shape
        w, h = width * fit / zoom, height * fit / zoom
        cx = image.width / 2 + (s - 0.5) * (image.width - w) * (1 if index % 2 == 0 else -1)
        cy = image.height / 2 + (s - 0.5) * (image.height - h) * 0.5
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        return np.asarray(image.resize(self.size, Image.Resampling.BILINEAR, box=box))
