"""Security of a shared server: the server settings that protect uploads, no code run from an
uploaded weights file, safe unpickling and HTML everywhere in the source, zips that cannot write
outside their folder."""

from __future__ import annotations

import ast
import functools
import io
import os
import pickle
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([ROOT / "app.py", *(ROOT / "cnnviz").rglob("*.py"), *(ROOT / "ui").rglob("*.py"),
                  *(ROOT / "pages").rglob("*.py")])


def _config() -> dict:
    return tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())


def test_xsrf_protection_is_on_and_cors_not_turned_off():
    server = _config()["server"]
    assert server.get("enableXsrfProtection") is True, "XSRF protection must be set on explicitly"
    assert server.get("enableCORS", True) is True, "turning CORS protection off also turns XSRF protection off"


def test_upload_limit_is_the_one_the_sidebar_states():
    import ui

    assert _config()["server"]["maxUploadSize"] == ui.UPLOAD_LIMIT_MB


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _calls(path: Path):
    """(dotted name of the called function, call node) of every call in a source file."""
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), node


def _keyword(call: ast.Call, name: str):
    """The constant value of keyword ``name`` in ``call`` ("missing" when absent, "not constant" otherwise)."""
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else "not constant"
    return "missing"


def test_the_sources_are_scanned():
    assert len(SOURCES) > 40 and ROOT / "cnnviz" / "models.py" in SOURCES


def test_every_torch_load_is_weights_only():
    found = []
    for path in SOURCES:
        for name, call in _calls(path):
            if name.endswith("torch.load"):
                found.append(path.name)
                assert _keyword(call, "weights_only") is True, f"{path.relative_to(ROOT)}:{call.lineno}: {ast.unparse(call)}"
    assert "models.py" in found  # uploaded weights are read there


def test_nothing_unpickles_without_restriction():
    bad = []
    for path in SOURCES:
        for name, call in _calls(path):
            plain_pickle = name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "joblib.load")
            numpy_pickle = name.endswith(("np.load", "numpy.load")) and _keyword(call, "allow_pickle") is True
            if plain_pickle or numpy_pickle:
                bad.append(f"{path.relative_to(ROOT)}:{call.lineno}: {ast.unparse(call)}")
    assert not bad, bad


def test_no_user_input_is_rendered_as_html():
    """Markdown in Streamlit escapes HTML unless ``unsafe_allow_html`` is set; ``st.html`` renders it.
    Neither may take anything a user typed or uploaded: no unsafe markdown at all, and ``st.html``
    only with the app's own CSS built from widget keys."""
    unsafe, html = [], []
    for path in SOURCES:
        for name, call in _calls(path):
            if _keyword(call, "unsafe_allow_html") != "missing":
                unsafe.append(f"{path.relative_to(ROOT)}:{call.lineno}")
            if name.endswith("st.html") or name.endswith("components.html") or name.endswith("components.v1.html"):
                html.append((path.relative_to(ROOT).as_posix(), call))
    assert not unsafe, unsafe
    for where, call in html:  # only style sheets: presenter mode's constant, and Live's filled in with a widget key
        text = call.args[0] if call.args else None
        if where == "ui/links.py" and isinstance(text, ast.Name) and text.id == "PRESENTER_CSS":
            continue
        names = {n.id for v in getattr(text, "values", []) if isinstance(v, ast.FormattedValue)
                 for n in ast.walk(v.value) if isinstance(n, ast.Name)}
        assert where == "ui/live.py" and isinstance(text, ast.JoinedStr) and names <= {"key"}, \
            f"{where}:{call.lineno}: {ast.unparse(call)}"
        assert ast.unparse(text).startswith(("f'<style>", 'f"<style>'))


class _Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_an_uploaded_weights_pickle_runs_no_code_and_is_refused_with_a_message(tmp_path):
    """Through the sidebar's own loader (``ui.cached_model`` with uploaded bytes): refused with a
    ValueError, which the sidebar shows as "These weights cannot be used", and the payload never runs."""
    import ui
    from cnnviz.small_cnn import SmallCNN

    marker = tmp_path / "pwned"
    state = {**SmallCNN().state_dict(), "evil": _Exploit(str(marker))}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    assert b"posix" in data or b"system" in data  # the payload really is in the file
    with pytest.raises(ValueError):
        ui.cached_model("small_cnn", ui.UPLOADED, "digest-of-evil", data, "evil.pt")
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # the oracle: a plain weights-only load refuses it too
        torch.load(io.BytesIO(data), weights_only=True)
    assert not marker.exists()


@pytest.mark.parametrize("evil", ["C:/evil.txt", "C:evil.txt", "c:\\evil.txt", "cats/./../../evil.txt", "//server/evil.txt"])
def test_zip_entries_with_drive_letters_or_unc_paths_are_refused(tmp_path, evil):
    from cnnviz.data import safe_extract_zip

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cats/a.png", b"x")
        archive.writestr(evil, b"pwned")
    target = tmp_path / "inside" / "target"
    with pytest.raises(ValueError, match="refused"):
        safe_extract_zip(buffer.getvalue(), target)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [], written
