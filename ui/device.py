"""The device the app computes on, picked once per process (``cnnviz.device.device_choice``:
``$CNNVIZ_DEVICE`` or automatic), and the sidebar's line that states it."""

from __future__ import annotations

import streamlit as st
import torch

from cnnviz.device import ENV_VAR, describe_device, device_choice


@st.cache_resource(show_spinner=False)
def app_device() -> tuple[torch.device, str]:
    """(device, why it was picked), the same for every session of this server process."""
    return device_choice()


def device_caption() -> str:
    """One line for the sidebar, e.g. "Computing on CUDA (NVIDIA L4)" or "Computing on the CPU
    (CNNVIZ_DEVICE=cpu)", with the reason when a device asked for is absent."""
    device, reason = app_device()
    line = f"Computing on {describe_device(device)}"
    if ENV_VAR in reason or "asked for" in reason:  # chosen by the setting, or absent: say so
        return f"{line} ({reason.split(':')[0]})."
    if device.type == "cpu":
        return f"{line} (no CUDA GPU or Apple MPS found)."
    return f"{line}; `{ENV_VAR}=cpu` forces the CPU."


def show_device() -> None:
    """The sidebar's caption stating the device in use."""
    st.sidebar.caption(device_caption())
