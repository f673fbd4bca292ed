"""No traceback, ever: every page is fed bad inputs and must answer with a message, never an exception.

Bad inputs: a corrupt, an empty and a truncated file, a 1×1 image, a 4000×300 panorama, grayscale,
RGBA, palette and 16-bit images, weights for another network, an empty, a path-traversing and a
zip-bomb dataset, and every slider, number input and select slider of a page at its minimum and
then its maximum. The library's loaders get the raw bytes (their ``ImageError`` / ``ValueError`` is
what the sidebar and the pages show); the pages get what the sidebar makes of an odd image, through
AppTest (which cannot upload files; tests/test_browser_bad_inputs.py uploads them in a real browser).

Time: the sweep runs every page on the small CNN (plus three pages on SqueezeNet), four or five runs
each; the whole file (45 tests) took 3 min 3 s on 2 cores at a load average of about 10 (7 min 42 s at
25, before the initialization page's maximum was left out). Half of it is the style pages' first views
(VGG-16, computed once per process). Heavy computations (training,
optimisation loops) sit behind buttons, which the sweep never clicks; ``HEAVY_AT_MAX`` lists the pages
whose maximum settings compute at once for minutes, which get their minimum only.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from cnnviz.data import zip_dataset
from cnnviz.images import MAX_SIDE, ImageError, load_image
from cnnviz.models import load_model, load_state_dict
from conftest import ROOT

PAGE_FILES = re.findall(r'st\.Page\("(pages/[\w]+\.py)"', (ROOT / "app.py").read_text())
BOUNDARY = "Something went wrong"  # ui.errors.guarded's message: a defect that reached the last resort


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _gradient(size: tuple[int, int]) -> Image.Image:
    w, h = size
    array = np.zeros((h, w, 3), np.uint8)
    array[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    array[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    array[..., 2] = 128
    return Image.fromarray(array)


PHOTO = _png(_gradient((96, 64)))
CORRUPT = {
    "empty": b"",
    "not an image": b"%PDF-1.4 this is a pdf, not a picture\n" * 20,
    "truncated png": PHOTO[: len(PHOTO) // 2],
    "png header then noise": PHOTO[:40] + bytes(range(256)) * 4,
    "jpeg header only": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
}
ODD = {  # name -> (bytes, the size load_image must return)
    "1x1": (_png(Image.new("RGB", (1, 1), (200, 30, 30))), (1, 1)),
    "panorama 4000x300": (_png(_gradient((4000, 300))), (MAX_SIDE, round(300 * MAX_SIDE / 4000))),
    "grayscale": (_png(_gradient((80, 60)).convert("L")), (80, 60)),
    "rgba": (_png(_gradient((80, 60)).convert("RGBA")), (80, 60)),
    "palette": (_png(_gradient((80, 60)).convert("P")), (80, 60)),
    "16-bit": (_png(Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20))), (64, 48)),
    "gif": (_png(_gradient((40, 30)), "GIF"), (40, 30)),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_a_corrupt_image_becomes_a_message_that_says_what_to_do(name):
    with pytest.raises(ImageError) as caught:
        load_image(CORRUPT[name])
    message = str(caught.value)
    assert "Traceback" not in message and len(message) < 400
    assert re.search(r"choose|please|export", message, re.I), message


@pytest.mark.parametrize("name", list(ODD))
def test_an_odd_but_valid_image_becomes_rgb_and_at_most_max_side(name):
    data, size = ODD[name]
    image = load_image(data)
    assert image.mode == "RGB" and image.size == size


def test_weights_for_another_network_are_refused_with_a_message():
    buffer = io.BytesIO()
    torch.save(load_model("squeezenet1_1", pretrained=False).module.state_dict(), buffer)
    state = load_state_dict(buffer.getvalue())  # a valid weights file...
    with pytest.raises(ValueError) as caught:  # ...of another architecture
        load_model("small_cnn", state_dict=state)
    assert "small_cnn" in str(caught.value) or "architecture" in str(caught.value).lower(), str(caught.value)


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _bomb() -> bytes:
    """A zip whose one entry declares 4 GB (its size fields patched): refused from its headers."""
    data = bytearray(_zip({"a/x.png": PHOTO}))
    for header, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local and central uncompressed size
        at = data.index(header) + offset
        data[at : at + 4] = (2**32 - 16).to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize("name, data, said", [
    ("empty zip", _zip({}), r"no images|empty|no .*folder"),
    ("no zip at all", b"PK\x03\x04 not really", r"not a readable zip"),
    ("path traversal only", _zip({"../x.png": PHOTO, "/etc/y.png": PHOTO}), r"no images|empty|refused|unsafe"),
    ("zip bomb", _bomb(), r"more than .* MB|refused"),
])
def test_a_hostile_or_empty_dataset_zip_is_refused_and_writes_nothing_outside(tmp_path, name, data, said):
    target = tmp_path / "inside"
    with pytest.raises(ValueError) as caught:
        zip_dataset(data, target)
    assert re.search(said, str(caught.value), re.I), str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inside"]  # nothing escaped


def test_style_methods_refuse_a_too_thin_image_with_what_to_do():
    from cnnviz.style import stylize
    from cnnviz.style.gatys import style_transfer

    thin = torch.rand(1, 3, 10, 128)  # the 4000×300 panorama at 128 px
    with pytest.raises(ValueError, match="less elongated"):
        stylize(thin, torch.eye(26)[0])
    with pytest.raises(ValueError, match="less elongated"):
        style_transfer(None, thin, torch.rand(1, 3, 64, 64), size=128)  # refused before the network is used
    with pytest.raises(ValueError, match="less elongated"):
        style_transfer(None, torch.rand(1, 3, 64, 64), thin, size=128)


# --- every page, through AppTest ---------------------------------------------------------------


def _inject(at: AppTest, image: Image.Image, name: str) -> None:
    """What the sidebar does with an upload (ui._set_image), with the source left on "Upload"."""
    digest = hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()[:16]
    for key, value in dict(image_source="Upload", image=image, image_name=name, image_key=digest,
                           _gallery_auto=False).items():
        at.session_state[key] = value


def _problems(at: AppTest) -> list[str]:
    shown = [f"exception: {e.value}" for e in at.exception]
    shown += [f"error: {e.value}" for e in at.error if BOUNDARY in e.value or "Traceback" in e.value]
    return shown


def _raw_option(slider, label: str):
    """The value a select slider shows as ``label`` (AppTest sets values, its options are labels), or None."""
    for cast in (int, float, str):
        try:
            value = cast(label)
            if str(slider.format_func(value)) == label:
                return value
        except (TypeError, ValueError, KeyError):
            continue
    return None


def _extremes(at: AppTest, end: int) -> int:
    """Set every enabled slider, select slider and bounded number input of the page to its min (end=0)
    or max (end=-1); returns how many were set."""
    count = 0
    for slider in at.slider:
        if slider.disabled:
            continue
        bound = slider.min if end == 0 else slider.max
        slider.set_value((bound, bound) if isinstance(slider.value, (tuple, list)) else bound)
        count += 1
    for slider in at.select_slider:
        value = _raw_option(slider, slider.options[end])
        if slider.disabled or value is None:
            continue
        slider.set_value((value, value) if isinstance(slider.value, (tuple, list)) else value)
        count += 1
    for box in at.number_input:
        bound = box.min if end == 0 else box.max
        if bound is not None and not box.disabled:
            box.set_value(int(bound) if isinstance(box.value, int) else bound)
            count += 1
    return count


PANORAMA = load_image(ODD["panorama 4000x300"][0])
TINY = load_image(ODD["1x1"][0])


HEAVY_AT_MAX = {  # pages that compute at once from their settings, for minutes at the maximum: min only here
    "pages/embeddings.py": "a dataset pass and t-SNE of 5,000 images",
    "pages/patches.py": "a dataset pass over 5,000 images",
    "pages/initialization.py": "12 layers of 4096 units, about 80 s of the sweep on a busy machine",
}


def _swap_image(at: AppTest, image: Image.Image, name: str) -> None:
    """Change the image between runs as the sidebar would. From its second run on, AppTest runs the page
    without app.py (see tests/test_app.py), so the page context is rebuilt here the way ``ui.sidebar`` does."""
    import ui

    _inject(at, image, name)
    old = at.session_state["context"]
    at.session_state["context"] = ui.Context(old.model, old.model_key, image, name, at.session_state["image_key"],
                                             old.model.preprocessing(image))


@pytest.mark.parametrize("model, page", [("small_cnn", p) for p in PAGE_FILES]
                         + [("squeezenet1_1", p) for p in ("pages/home.py", "pages/saliency.py", "pages/activations.py")])
def test_a_page_shows_no_exception_for_odd_images_and_extreme_settings(model, page):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["model_name"] = model
    _inject(at, PANORAMA, "Upload: panorama.png")
    at.run()  # the first run goes through app.py: the sidebar builds the context, Home runs on it
    assert not _problems(at), ("panorama on Home", _problems(at))
    at.switch_page(page).run()
    assert at.session_state["image_name"] == "Upload: panorama.png"
    assert not _problems(at), ("panorama", _problems(at))
    _swap_image(at, TINY, "Upload: 1x1.png")
    at.run()
    assert not _problems(at), ("1x1", _problems(at))
    if model != "small_cnn":
        return
    for end, label in ((0, "min"),) if page in HEAVY_AT_MAX else ((0, "min"), (-1, "max")):
        _extremes(at, end)
        at.run()
        assert not _problems(at), (f"every setting at its {label}", _problems(at))


# --- the boundary itself ----------------------------------------------------------------------


def _boundary_script():
    import streamlit as st

    import ui
    from ui.errors import guarded

    calls = st.session_state.setdefault("calls", [])

    def fails(progress):
        calls.append("fails")
        raise RuntimeError("half-way\nsecond line of detail")

    def works(progress):
        calls.append("works")
        return 42

    guarded(lambda: ui.cached(("bad-input-test",), fails, "computing"))  # message, nothing stored
    st.write(f"value {ui.cached(('bad-input-test',), works, 'computing')}")
    guarded(st.stop)  # st.stop passes through the boundary: nothing below runs
    st.write("after stop")


def test_the_boundary_turns_an_error_into_a_message_stores_no_half_result_and_lets_st_stop_through():
    at = AppTest.from_function(_boundary_script, default_timeout=60).run()
    assert not at.exception
    assert len(at.error) == 1 and BOUNDARY in at.error[0].value and "half-way" in at.error[0].value
    assert "second line" not in at.error[0].value and "other sessions are not affected" in at.error[0].value
    assert at.session_state["calls"] == ["fails", "works"]  # the failed result was not cached
    assert [m.value for m in at.markdown] == ["value 42"]  # and nothing after st.stop ran
