"""Views you can link to (ui/links.py): values round-trip through the URL, bad values are dropped
with a toast and never raise, what cannot travel says so, every page widget has a key, and every
prepared URL of docs/lecture-guide.md names a real page, model, image and widget."""

from __future__ import annotations

import ast
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from cnnviz.models import MODEL_NAMES
from cnnviz.samples import sample_names
from conftest import ROOT


def _links():
    """ui.links, imported only once an AppTest has run: importing ``ui`` in the test process before the
    first AppTest run hangs that run (seen with Streamlit 1.67), so the AppTest tests come first."""
    from ui import links

    return links

GUIDE = ROOT / "docs" / "lecture-guide.md"
WIDGETS = {"slider", "select_slider", "selectbox", "multiselect", "radio", "toggle", "checkbox", "number_input",
           "text_input", "text_area", "segmented_control", "pills", "color_picker", "date_input", "time_input"}


def guide_urls() -> list[str]:
    return re.findall(r"\(http://localhost:8501/([^)\s]+)\)", GUIDE.read_text())


def open_link(page: str, **params) -> AppTest:
    """A fresh session opening ``/page?params`` (one AppTest per link: see tests/test_app.py's new_app)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=400)
    at.query_params.update(params)
    return at.switch_page(f"pages/{page}.py").run()


def link_params(at: AppTest) -> dict[str, list[str]]:
    """The query parameters of the link the sidebar's panel shows."""
    (url,) = [c.value for c in at.code if "model=" in c.value]
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def test_a_link_restores_the_saliency_view_and_the_view_gives_the_same_link():
    sent = {"model": "small_cnn", "weights": "pretrained", "image": "digit-3", "saliency_methods": ["vanilla gradient", "SmoothGrad"],
            "saliency_samples": "7", "saliency_noise": "0.3", "saliency_target_MODEL": "5", "presenter": "1"}
    at = open_link("saliency", **sent)
    assert not at.exception and not at.toast
    state = at.session_state
    assert (state["model_name"], state["image_name"], state["presenter"]) == ("small_cnn", "digit 3", True)
    assert state["saliency_methods"] == ["vanilla gradient", "SmoothGrad"]
    assert (state["saliency_samples"], state["saliency_noise"]) == (7, 0.3)
    assert state["saliency_target_small_cnn|pretrained|"] == 5
    assert any("Why “5”?" in s.value for s in at.subheader)  # the target class, not the top prediction
    expected = {k: v if isinstance(v, list) else [v] for k, v in sent.items()}
    assert link_params(at) == expected  # the sidebar's link carries exactly the view
    assert {k: at.query_params[k] if isinstance(at.query_params[k], list) else [at.query_params[k]]
            for k in at.query_params} == expected  # and so does the address bar


def test_bad_values_in_a_link_are_left_out_with_a_toast_never_an_exception(monkeypatch):
    monkeypatch.setenv("CNNVIZ_DEFAULT_MODEL", "small_cnn")  # where an unknown model leaves the link: quick pages
    at = open_link("saliency", model="no_such_net", weights="stolen", image="dog", saliency_samples="1000",
                   saliency_noise="lots", saliency_methods=["vanilla gradient", "telepathy"], saliency_window_32="-4",
                   saliency_steps=["4", "5"], unknown="1", presenter="maybe")
    assert not at.exception and not at.error
    (toast,) = [t.value for t in at.toast if "left out" in t.value]
    for bad in ("model=no_such_net", "weights=stolen", "image=dog", "saliency_samples=1000", "saliency_noise=lots",
                "telepathy", "unknown=1", "presenter=maybe"):
        assert bad in toast, bad
    state = at.session_state
    assert state["saliency_samples"] == 25 and state["saliency_noise"] == 0.15 and not state["presenter"]
    assert any("no_such_net" in w.value and "cannot travel" in w.value for w in at.warning)


def test_a_link_to_weights_this_machine_lacks_says_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIZ_CACHE", str(tmp_path))  # nothing fetched
    at = open_link("home", model="squeezenet1_1", weights="pretrained", image="cat")
    assert not at.exception and not at.error
    assert at.session_state["model_name"] == "squeezenet1_1" and at.session_state["weights_squeezenet1_1"] == "random"
    assert any("not on this machine" in w.value and "python -m cnnviz fetch" in w.value for w in at.warning)


@pytest.mark.parametrize("url", [u for u in guide_urls() if "?" in u and u.split("?")[0] in ("initialization", "preprocessing",
                                                                                  "activation_functions")])
def test_light_prepared_urls_of_the_guide_apply_without_a_dropped_value(url):
    page, query = url.split("?")
    params = {k: v if len(v) > 1 else v[0] for k, v in parse_qs(query).items()}
    at = open_link(page, **params)
    assert not at.exception and not at.error and not at.toast
    shown = {k: v if isinstance(v, list) else [v] for k, v in at.query_params.items()}  # the address bar
    assert all(shown.get(k) == (v if isinstance(v, list) else [v]) for k, v in params.items()), (params, shown)



@pytest.mark.parametrize("current, value", [
    (True, False), (False, True), (3, -7), (0.15, 0.3), (0.5, 1e-05), ("a", "ReLU & co"), ("x", ""),
    (["a"], ["vanilla gradient", "Grad-CAM"]), (["a"], []), ((1, 2), (3, 40)), ((0.1, 0.2), (-1.5, 2.25)), ([3], [1, 2]),
])
def test_a_value_survives_the_url(current, value):
    assert _links().parse_value(_links().format_value(value), current) == value


@pytest.mark.parametrize("raw, current", [
    (["yes please"], True), (["3.5"], 3), (["nan"], 0.5), (["inf"], 0.5), (["x"], 0.5), (["1", "2"], 3),
    (["1"], (1, 2)), (["a"], [1]), (["1"], {"a": 1}),
])
def test_a_value_of_the_wrong_type_is_refused(raw, current):
    with pytest.raises(ValueError):
        _links().parse_value(raw, current)


def test_every_gallery_image_has_its_own_short_name():
    slugs = [_links().image_slug(name) for name in sample_names()]
    assert len(set(slugs)) == len(slugs) and all(re.fullmatch(r"[a-z0-9-]+", s) for s in slugs)
    assert _links().image_slug("cat (scikit-image)") == "cat"
    assert all(_links().image_from_slug(s) == n and _links().image_from_slug(n) == n for s, n in zip(slugs, sample_names()))
    assert _links().image_from_slug("dog") is None


def _widget_calls(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WIDGETS:
            yield node


def test_every_widget_of_every_page_has_a_key_so_it_can_travel():
    files = sorted((ROOT / "pages").glob("*.py")) + sorted((ROOT / "ui").glob("*.py"))
    calls = [(f.name, c.lineno) for f in files for c in _widget_calls(f)]
    missing = [(f.name, c.lineno) for f in files for c in _widget_calls(f) if not any(k.arg == "key" for k in c.keywords)]
    assert len(calls) > 100 and not missing


def _key_patterns(page: str) -> list[re.Pattern]:
    """The widget keys a page can draw (its own and ui/'s), f-string parts as wildcards."""
    sources = [ROOT / "pages" / f"{page}.py", *sorted((ROOT / "ui").glob("*.py"))]
    keys = [k for f in sources for k in re.findall(r'key=f?"([^"]+)"', f.read_text())]
    return [re.compile(re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(k)) + "$") for k in keys]


def test_every_prepared_url_of_the_lecture_guide_names_a_page_and_its_widgets():
    pages = {p.stem for p in (ROOT / "pages").glob("*.py")}
    urls = guide_urls()
    prepared = [u for u in urls if "?" in u]
    assert len(prepared) >= 22 and {u.split("?")[0] for u in urls} == pages - {"home"}
    for url in prepared:
        page, query = url.split("?")
        assert page in pages, url
        patterns = _key_patterns(page)
        for name, values in parse_qs(query, keep_blank_values=True).items():
            if name == "model":
                assert values[0] in MODEL_NAMES, url
            elif name == "weights":
                assert values[0] in _links().TRAVELLING_WEIGHTS, url
            elif name == "image":
                assert _links().image_from_slug(values[0]), url
            elif name == "presenter":
                assert _links().parse_value(values, False) is True, url
            else:
                assert any(p.match(name) for p in patterns), f"{url}: no widget {name}"


@pytest.mark.parametrize("state, says", [
    ({"model_name": "small_cnn", "weights_small_cnn": "uploaded", "image_source": "Gallery"}, ["Uploaded weights"]),
    ({"model_name": "my net (trained)", "image_source": "Upload"}, ["was trained in this session", "“Upload”"]),
    ({"model_name": "small_cnn", "weights_small_cnn": "random", "image_source": "Camera"}, ["“Camera”"]),
    ({"model_name": "small_cnn", "weights_small_cnn": "pretrained", "image_source": "Gallery"}, []),
])
def test_what_a_link_cannot_carry_is_said(monkeypatch, state, says):
    links = _links()
    monkeypatch.setattr(links.st, "session_state", {**state, "gallery_choice": "digit 3"})
    notes = links.what_cannot_travel()
    assert len(notes) == len(says) and all(s in n for s, n in zip(says, notes)), notes
    monkeypatch.setattr(links.st, "context", type("Ctx", (), {"url": "http://x/filters"})())
    params = links.current_params(widgets={})
    assert ("weights" in params) == (state.get("weights_small_cnn") in ("pretrained", "random"))
    assert ("image" in params) == (state["image_source"] == "Gallery")
