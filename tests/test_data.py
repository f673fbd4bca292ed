"""cnnviz.data: offline datasets, folder/zip datasets, hostile zips refused with nothing written,
torchvision datasets from a cache and failing fast offline."""

from __future__ import annotations

import io
import stat
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnviz.data import digits_dataset, folder_dataset, photos_dataset, safe_extract_zip, torchvision_dataset, zip_dataset


def _png(color: tuple[int, int, int] = (200, 10, 10), size: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*"))


@pytest.fixture()
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """(outer folder, target folder inside it); anything written outside the target shows up in outer."""
    target = tmp_path / "outer" / "target"
    target.mkdir(parents=True)
    return tmp_path / "outer", target


def _assert_nothing_written(outer: Path, target: Path) -> None:
    assert _files_under(outer) == [target], _files_under(outer)
    assert not (outer.parent / "evil.txt").exists()


def test_digits_and_photos():
    digits = digits_dataset(limit=50)
    assert len(digits) == 50 and digits.images[0].size == (28, 28) and digits.class_names[3] == "3"
    assert len(digits_dataset()) == 1797
    photos = photos_dataset()
    assert len(photos) == 8 and photos.label_name(0) == photos.class_names[0]


def test_zip_dataset_labels_from_folders_and_skips(sandbox):
    _, target = sandbox
    archive = _zip({
        "animals/cats/a.png": _png(),
        "animals/cats/b.png": _png((0, 0, 255)),
        "animals/dogs/c.png": _png((0, 255, 0)),
        "animals/dogs/notes.txt": b"hello",
        "animals/dogs/broken.png": _png()[:40],
    })
    dataset = zip_dataset(archive, target)
    assert dataset.class_names == ("cats", "dogs")
    assert dataset.labels.tolist() == [0, 0, 1]
    assert dataset.skipped == {"not an image": 1, "unreadable image": 1}
    assert dataset.images[2].getpixel((0, 0)) == (0, 255, 0)


def test_folder_dataset(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(_png())
    (tmp_path / "b" / "y.png").write_bytes(_png())
    (tmp_path / "b" / "z.jpg").write_bytes(b"not really a jpeg")
    dataset = folder_dataset(tmp_path)
    assert dataset.labels.tolist() == [0, 1] and dataset.skipped == {"unreadable image": 1}
    (tmp_path / "empty" / "c").mkdir(parents=True)
    (tmp_path / "empty" / "c" / "readme.md").write_text("no images")
    with pytest.raises(ValueError, match="No readable image"):
        folder_dataset(tmp_path / "empty")


@pytest.mark.parametrize("evil", ["../evil.txt", "cats/../../evil.txt", "/tmp/cnnviz_absolute_evil.txt", "..\\evil.txt"])
def test_zip_slip_is_refused_and_nothing_written(sandbox, evil):
    outer, target = sandbox
    archive = _zip({"cats/a.png": _png(), evil: b"pwned"})  # a good entry first: validated before writing
    with pytest.raises(ValueError, match="refused"):
        safe_extract_zip(archive, target)
    _assert_nothing_written(outer, target)
    assert not Path("/tmp/cnnviz_absolute_evil.txt").exists()


def test_symlink_entry_is_refused(sandbox):
    outer, target = sandbox
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cats/a.png", _png())
        link = zipfile.ZipInfo("cats/link.png")
        link.create_system = 3  # unix
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(ValueError, match="link"):
        safe_extract_zip(buffer.getvalue(), target)
    _assert_nothing_written(outer, target)


def test_too_many_files_is_refused(sandbox):
    outer, target = sandbox
    archive = _zip({f"c/{i}.png": b"x" for i in range(11)})
    with pytest.raises(ValueError, match="more than 10 files"):
        safe_extract_zip(archive, target, max_files=10)
    _assert_nothing_written(outer, target)


def test_too_many_declared_bytes_is_refused(sandbox):
    outer, target = sandbox
    archive = _zip({"c/big.bin": b"\0" * 200_000}, zipfile.ZIP_DEFLATED)  # compresses to a few hundred bytes
    assert len(archive) < 2_000
    with pytest.raises(ValueError, match="expand"):
        safe_extract_zip(archive, target, max_bytes=100_000)
    _assert_nothing_written(outer, target)


def _lie_about_size(archive: bytes, name: bytes, declared: int) -> bytes:
    """Rewrite the uncompressed size of ``name`` in the local header and the central directory."""
    out = bytearray(archive)
    for signature, offset_size, offset_name_len, header_len in ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)):
        start = 0
        while (start := out.find(signature, start)) != -1:
            name_len = struct.unpack_from("<H", out, start + offset_name_len)[0]
            if bytes(out[start + header_len : start + header_len + name_len]) == name:
                struct.pack_into("<I", out, start + offset_size, declared)
            start += 4
    return bytes(out)


def test_lying_header_is_refused_and_cleaned_up(sandbox):
    outer, target = sandbox
    honest = _zip({"c/a.png": _png(), "c/big.bin": b"\0" * 300_000}, zipfile.ZIP_DEFLATED)
    liar = _lie_about_size(honest, b"c/big.bin", 10)  # claims 10 bytes, inflates to 300,000
    assert zipfile.ZipFile(io.BytesIO(liar)).getinfo("c/big.bin").file_size == 10
    with pytest.raises(ValueError):
        safe_extract_zip(liar, target, max_bytes=100_000)
    _assert_nothing_written(outer, target)


def test_not_a_zip():
    with pytest.raises(ValueError, match="not a readable zip"):
        safe_extract_zip(b"plain text", "/tmp/never_created_cnnviz")


def _idx_images(n: int) -> bytes:
    pixels = (np.arange(n * 28 * 28) % 251).astype(np.uint8)
    return struct.pack(">IIII", 2051, n, 28, 28) + pixels.tobytes()


def _idx_labels(labels: list[int]) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + bytes(labels)


def test_torchvision_mnist_from_cache_offline(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", 3), ("t10k", 5)):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(_idx_images(n))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(_idx_labels(list(range(n))))
    monkeypatch.setattr("cnnviz.models.can_reach", lambda *a, **k: pytest.fail("must not touch the network"))
    dataset = torchvision_dataset("MNIST", root=tmp_path, limit=None)
    assert len(dataset) == 5 and dataset.labels.tolist() == [0, 1, 2, 3, 4]
    assert dataset.images[1].size == (28, 28) and dataset.images[1].mode == "RGB"
    assert dataset.class_names[0].startswith("0")


def test_torchvision_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr("cnnviz.models.can_reach", lambda url, timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(ValueError, match="no network"):
        torchvision_dataset("CIFAR-10", root=tmp_path)
    assert time.perf_counter() - start < 5
    assert not any(tmp_path.iterdir()) or all(p.is_dir() for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="Unknown dataset"):
        torchvision_dataset("ImageNet", root=tmp_path)


def testcan_reach_really_fails_fast_here():
    from cnnviz.models import can_reach

    start = time.perf_counter()
    reachable = can_reach("https://www.cs.toronto.edu/x", timeout=2.0)
    assert time.perf_counter() - start < 6
    assert isinstance(reachable, bool)
