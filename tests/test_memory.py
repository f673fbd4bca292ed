"""The bounded caches (``cnnviz.memory``): models kept within a byte budget, least recently used
first, shared objects handed out again while a session holds them, fast copies freed with their
model, results bounded by bytes; and ``ui.cached_model`` sharing one model per key."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnviz.folding import bf16_inference_copy, existing_inference_copy
from cnnviz.memory import ModelCache, ResultCache, model_bytes, module_bytes, nbytes


def _net(width: int) -> nn.Module:
    """A conv + batch norm + linear net with a known parameter count."""
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, 10)).eval()


def _expected_bytes(width: int) -> int:
    conv = width * 3 * 9 + width
    norm = 4 * width  # weight, bias, running mean and variance (float32) and num_batches_tracked (int64)
    linear = 10 * width + 10
    return 4 * (conv + norm + linear) + 8


def test_module_bytes_counts_parameters_and_buffers_once():
    net = _net(16)
    assert module_bytes(net) == _expected_bytes(16)
    tied = nn.Sequential(net, net)  # the same tensors twice count once
    assert module_bytes(tied) == _expected_bytes(16)


def test_model_bytes_adds_the_fast_copy_and_the_copy_dies_with_its_model():
    net = _net(16)
    assert model_bytes(net) == module_bytes(net)
    fast = bf16_inference_copy(net, example=torch.zeros(1, 3, 8, 8))
    assert existing_inference_copy(net) is fast
    assert model_bytes(net) == module_bytes(net) + module_bytes(fast)
    assert module_bytes(fast) < module_bytes(net)  # bfloat16, batch norm folded
    gone = weakref.ref(fast)
    del fast, net
    gc.collect()
    assert gone() is None


def _no_release() -> None:
    """Skip the full garbage collection and malloc_trim after each eviction (tests collect themselves)."""


def _loader(width: int, calls: list):
    def load():
        calls.append(width)
        return _net(width)
    return load


def test_least_recently_used_models_are_evicted_beyond_the_budget():
    size = _expected_bytes(64)
    cache = ModelCache(budget_bytes=int(2.5 * size), max_entries=6, release=_no_release)
    calls: list[int] = []
    a = weakref.ref(cache.get("a", _loader(64, calls)))
    cache.get("b", _loader(64, calls))
    cache.get("a", _loader(64, calls))  # a is now the most recent
    cache.get("c", _loader(64, calls))  # three do not fit: b (least recent) goes
    assert cache.keys() == ["a", "c"] and calls == [64, 64, 64]
    assert cache.kept_bytes() == 2 * size <= cache.budget_bytes
    assert a() is not None
    gc.collect()
    cache.get("b", _loader(64, calls))  # b was dropped by everyone: loaded anew, and a goes
    assert calls == [64] * 4 and cache.keys() == ["c", "b"]
    gc.collect()
    assert a() is None, "an evicted model nobody holds must be freed"


def test_the_newest_model_stays_even_when_it_alone_exceeds_the_budget():
    cache = ModelCache(budget_bytes=10, max_entries=6, release=_no_release)
    first = cache.get("small", lambda: _net(4))
    big = cache.get("big", lambda: _net(128))
    assert cache.keys() == ["big"] and cache.get("big", lambda: pytest.fail("reloaded")) is big
    del first


def test_an_evicted_model_a_session_still_holds_is_handed_out_again_not_reloaded():
    cache = ModelCache(budget_bytes=_expected_bytes(64), max_entries=6, release=_no_release)
    calls: list[int] = []
    held = cache.get("a", _loader(64, calls))  # a session keeps using it ...
    cache.get("b", _loader(64, calls))  # ... while it is evicted
    assert "a" not in cache
    again = cache.get("a", _loader(64, calls))
    assert again is held and calls == [64, 64], "two copies of one model, or a needless reload"
    assert cache.keys() == ["a"]  # back in, and b (least recent) out


def test_max_entries_bounds_the_count():
    cache = ModelCache(budget_bytes=1 << 40, max_entries=2, release=_no_release)
    for key in "abc":
        cache.get(key, lambda: _net(4))
    assert cache.keys() == ["b", "c"]


def test_concurrent_requests_for_one_model_load_it_once():
    cache = ModelCache(budget_bytes=1 << 30)
    calls: list[int] = []

    def slow_load():
        calls.append(1)
        time.sleep(0.2)
        return _net(8)

    got: list[nn.Module] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("k", slow_load))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 4 and all(g is got[0] for g in got)


def test_a_failed_load_caches_nothing_and_the_next_call_tries_again():
    cache = ModelCache()

    def fail():
        raise ValueError("bad weights")

    with pytest.raises(ValueError, match="bad weights"):
        cache.get("k", fail)
    assert "k" not in cache
    assert isinstance(cache.get("k", lambda: _net(4)), nn.Module)


@dataclass
class _Result:
    heat: np.ndarray
    note: str


def test_nbytes_of_results():
    assert nbytes(np.zeros((10, 20), np.float32)) == 800
    assert nbytes(torch.zeros(5, 5, dtype=torch.float64)) == 200
    assert nbytes(torch.zeros(100)[:10]) == 400  # a view holds its whole storage
    assert nbytes(Image.new("RGB", (10, 4))) == 120
    assert nbytes({"a": (np.zeros(10, np.uint8), [torch.zeros(2)]), "b": "text"}) == 18
    assert nbytes(_Result(np.zeros(7, np.int16), "x")) == 14
    assert nbytes(3.5) == 0


def test_results_are_bounded_by_bytes_and_count():
    mb = 1 << 20
    store = ResultCache(budget_bytes=3 * mb, max_entries=48)
    for i in range(5):
        store.put(i, np.zeros(mb, np.uint8))
    assert [k for k in range(5) if k in store] == [2, 3, 4] and store.kept_bytes() == 3 * mb
    assert store.lookup(2)[0] and store.lookup(0) == (False, None)
    store.put(5, np.zeros(mb, np.uint8))  # 2 was used last: 3 goes
    assert [k for k in range(6) if k in store] == [2, 4, 5]
    store.put("huge", np.zeros(10 * mb, np.uint8))  # the newest stays, alone
    assert len(store) == 1 and store.lookup("huge")[0]
    store.put("x", 1, max_entries=1)
    assert len(store) == 1 and store.kept_bytes() == 0
    store.put("x", np.zeros(10, np.uint8))  # replacing a key keeps the byte count right
    assert store.kept_bytes() == 10


def test_ui_cached_model_shares_one_model_per_key():
    import ui

    first = ui.cached_model("small_cnn", ui.PRETRAINED)
    assert ui.cached_model("small_cnn", ui.PRETRAINED) is first
    assert ui.cached_model("small_cnn", ui.RANDOM) is not first


@pytest.mark.parametrize("page", ["pages/saliency.py", "pages/class_visualization.py"])
def test_a_session_that_moved_on_to_another_model_keeps_the_old_one_no_longer(page):
    # Streamlit keeps every widget's format function and callbacks for the whole session; one defined in
    # a page held that run's globals, and so the model: the server grew by each model a student visited
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    import ui

    ui._models().clear()  # a model of its own: earlier tests' sessions may still hold the cached one
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=300)
    at.session_state["model_name"] = "small_cnn"
    at.run()
    at.switch_page(page).run()
    assert not at.exception
    old = weakref.ref(at.session_state["context"].model.module)
    at.session_state["model_name"] = "squeezenet1_1"
    del at.session_state["context"]  # the sidebar builds it again (AppTest runs the page alone)
    at.switch_page(page).run()
    at.run()  # the session state's previous values are let go on the next run
    assert not at.exception and at.session_state["context"].model.name == "squeezenet1_1"
    ui._models().clear()
    ui._results().clear()
    gc.collect()
    assert old() is None, [type(r).__name__ for r in gc.get_referrers(old())]


def test_freezing_the_long_lived_objects_happens_once_and_later_garbage_is_still_collected():
    from cnnviz import memory

    memory.freeze_long_lived_objects()  # start-up (app.py); may have run already in this process
    frozen = gc.get_freeze_count()
    assert frozen > 0 and memory.freeze_long_lived_objects() is False and gc.get_freeze_count() == frozen

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
