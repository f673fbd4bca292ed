"""Which device computes: a CUDA GPU, Apple silicon (MPS) or the CPU, and the fast dtype for each.

The library itself is CPU by default: every function follows the device of the tensors and model it
is given (``x.device``), never a module-level global. The app picks the device once
(``choose_device``) and loads its models there (``cnnviz.models.load_model(..., device=...)``).

``$CNNVIZ_DEVICE`` overrides the choice: ``cpu``, ``cuda`` (or ``cuda:1``), ``mps`` or ``auto`` (the
default: CUDA if available, else MPS, else the CPU). A device asked for but absent falls back on the
CPU, and ``device_choice`` says why.
"""

from __future__ import annotations

import os

import torch

ENV_VAR = "CNNVIZ_DEVICE"
CHOICES = ("auto", "cpu", "cuda", "mps")
"""Values ``$CNNVIZ_DEVICE`` and ``choose_device`` accept (``cuda:N`` picks one GPU)."""


def cuda_available() -> bool:
    """True when torch sees a usable CUDA GPU."""
    return bool(torch.cuda.is_available())


def mps_available() -> bool:
    """True when torch runs on Apple silicon's GPU (Metal Performance Shaders)."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def device_choice(preference: str | None = None) -> tuple[torch.device, str]:
    """The device to compute on, and one sentence saying why it was picked.

    Args:
        preference: "auto", "cpu", "cuda", "cuda:N" or "mps"; None reads ``$CNNVIZ_DEVICE``
            (unset or empty: "auto"). Case and surrounding spaces are ignored.

    Returns:
        (device, reason): e.g. (cuda, "CNNVIZ_DEVICE=auto: a CUDA GPU is available") or
        (cpu, "CNNVIZ_DEVICE=cuda, but torch sees no CUDA GPU: computing on the CPU").
    """
    raw = preference if preference is not None else os.environ.get(ENV_VAR, "")
    wanted = raw.strip().lower() or "auto"
    if preference is not None:
        said = f"asked for {wanted}"
    else:
        said = f"{ENV_VAR}={wanted}" if raw.strip() else "automatic choice"
    kind, _, index = wanted.partition(":")
    if kind not in CHOICES or (index and (kind != "cuda" or not index.isdigit())):
        return torch.device("cpu"), (f"{said}, which is not one of {', '.join(CHOICES)} (or cuda:N): computing on the CPU")
    if kind == "cpu":
        return torch.device("cpu"), f"{said}: computing on the CPU"
    if kind == "cuda":
        if not cuda_available():
            return torch.device("cpu"), f"{said}, but torch sees no CUDA GPU: computing on the CPU"
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            return torch.device("cpu"), f"{said}, but torch sees {count} CUDA GPU(s): computing on the CPU"
        return torch.device(wanted), f"{said}: a CUDA GPU is available"
    if kind == "mps":
        if not mps_available():
            return torch.device("cpu"), f"{said}, but Apple's MPS backend is not available: computing on the CPU"
        return torch.device("mps"), f"{said}: Apple silicon's GPU (MPS) is available"
    if cuda_available():
        return torch.device("cuda"), f"{said}: a CUDA GPU is available"
    if mps_available():
        return torch.device("mps"), f"{said}: Apple silicon's GPU (MPS) is available"
    return torch.device("cpu"), f"{said}: no CUDA GPU or Apple MPS found, computing on the CPU"


def choose_device(preference: str | None = None) -> torch.device:
    """The device to compute on (see ``device_choice``): CUDA if available, else MPS, else the CPU,
    unless ``preference`` or ``$CNNVIZ_DEVICE`` says otherwise; an absent device gives the CPU."""
    return device_choice(preference)[0]


def describe_device(device: torch.device | str) -> str:
    """Plain words for a device, e.g. "CUDA (NVIDIA H100 80GB HBM3)", "Apple silicon (MPS)", "the CPU"."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return f"CUDA ({torch.cuda.get_device_name(device)})"
        except (RuntimeError, AssertionError):
            return "CUDA"
    if device.type == "mps":
        return "Apple silicon (MPS)"
    return "the CPU" if device.type == "cpu" else device.type


def fast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The reduced precision for fast many-image inference (occlusion's fast copy) on ``device``.

    Returns:
        bfloat16 on a CUDA GPU that supports it (Ampere and later), else float16; float16 on MPS;
        bfloat16 on a CPU with native bfloat16 matrix products (AVX512-BF16 / AMX); None (stay in
        float32) on any other CPU.
    """
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        except (RuntimeError, AssertionError):
            return torch.float16
    if device.type == "mps":
        return torch.float16
    if device.type == "cpu":
        from .folding import bf16_supported

        return torch.bfloat16 if bf16_supported() else None
    return None


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (for timing); nothing to do on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for a module with neither)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
