"""Bad uploads in a real browser (Streamlit served headless, Playwright on Chromium): a 1×1 image, a
corrupt file and a 4000×300 panorama on Home, Saliency and Activations, and weights for another
network on Home. No exception element ever shows, the message says what to do, the previous image is
kept after a corrupt file, and the server log stays clean (``serve_app``)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import screenshot, wait_for_app


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _panorama() -> Image.Image:
    array = np.zeros((300, 4000, 3), np.uint8)
    array[..., 0] = np.linspace(0, 255, 4000, dtype=np.uint8)[None, :]
    array[..., 1] = 90
    return Image.fromarray(array)


TINY = _png(Image.new("RGB", (1, 1), (200, 30, 30)))
PANORAMA = _png(_panorama())
CORRUPT = b"\x89PNG\r\n\x1a\n" + b"this is not the rest of a png" * 10


def _upload(page, label: str, name: str, data: bytes, mime: str = "image/png") -> None:
    box = page.locator("[data-testid='stSidebar'] [data-testid='stFileUploader']").filter(has_text=label)
    box.locator("input[type='file']").set_input_files(files=[{"name": name, "mimeType": mime, "buffer": data}])


def _caption(page) -> str:
    """The caption under the sidebar's image: the current image's name."""
    return page.locator("[data-testid='stSidebar'] [data-testid='stImage']").last.inner_text()


def _no_exception(page) -> None:
    assert page.locator("[data-testid='stException']").count() == 0
    assert page.get_by_text("Traceback").count() == 0
    assert page.get_by_text("Something went wrong").count() == 0  # ui.errors' last resort: a defect


@pytest.mark.parametrize("path, ready", [("", "Top prediction"), ("saliency", None), ("activations", None)])
def test_bad_image_uploads_give_messages_never_a_traceback(app_url, page, path, ready):
    page.set_default_timeout(90_000)  # a busy machine: reruns can take a while
    page.goto(f"{app_url}/{path}")
    wait_for_app(page, ready)
    source = page.locator("[data-testid='stSidebar'] [data-testid='stRadio']").filter(has_text="Camera")
    source.get_by_text("Upload", exact=True).click()
    wait_for_app(page)

    _upload(page, "Your image", "tiny.png", TINY)
    wait_for_app(page, f"Upload: tiny.png ({len(TINY)} bytes)")
    _no_exception(page)

    _upload(page, "Your image", "holiday.png", CORRUPT)
    wait_for_app(page, "The previous image is kept")
    _no_exception(page)
    assert "tiny.png" in _caption(page)  # the 1×1 image is still the one in use
    if path == "saliency":
        screenshot(page, "bad_input_saliency_corrupt")

    _upload(page, "Your image", "panorama.png", PANORAMA)
    wait_for_app(page, f"Upload: panorama.png ({len(PANORAMA)} bytes)")
    _no_exception(page)
    assert page.get_by_text("The previous image is kept").count() == 0
    if path == "":
        page.get_by_text(re.compile("^Top prediction")).first.wait_for(timeout=30_000)
        screenshot(page, "bad_input_home_panorama")


def test_weights_for_another_network_say_so_and_the_model_is_kept(app_url, page):
    from cnnviz.models import load_model

    buffer = io.BytesIO()
    torch.save(load_model("squeezenet1_1", pretrained=False).module.state_dict(), buffer)
    page.set_default_timeout(90_000)
    page.goto(app_url)
    wait_for_app(page, "Top prediction")
    weights = page.locator("[data-testid='stSidebar'] [data-testid='stRadio']").filter(has_text="Random weights")
    weights.get_by_text("Upload a weights file").click()
    wait_for_app(page)
    _upload(page, "Weights file", "squeezenet.pt", buffer.getvalue(), "application/octet-stream")
    # the sidebar's message may be below the fold: a toast says it where the student looks
    page.locator("[data-testid='stToast']").filter(has_text="These weights cannot be used").wait_for()
    screenshot(page, "bad_input_wrong_weights")
    wait_for_app(page, "These weights cannot be used")
    _no_exception(page)
    assert page.get_by_text(re.compile("^Top prediction")).first.is_visible()  # the last usable model is kept
