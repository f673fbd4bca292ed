"""Bounded process-wide caches: models kept by a byte budget, results by a byte budget, and giving
freed memory back to the operating system.

A lecture server visits many models; keeping each one forever (and its fast inference copy, and its
results) grew the server from 0.9 GB to 3.7 GB over the zoo. ``ModelCache`` keeps models least
recently used first within a budget of parameter bytes, and ``ResultCache`` keeps results within a
budget of array bytes. An evicted model that a session still holds is not loaded a second time: the
cache keeps a weak reference and hands the same object out again, so every session keeps sharing one
copy. Nothing here imports Streamlit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import gc
import os
import threading
import weakref
from collections import OrderedDict
from typing import Callable, Hashable

import numpy as np
import torch
from PIL import Image
from torch import nn

MODEL_BUDGET_MB = int(os.environ.get("CNNVIZ_MODEL_CACHE_MB", "512"))
"""Parameter and buffer bytes (float32 models plus their fast copies) the model cache keeps, in MiB
(``$CNNVIZ_MODEL_CACHE_MB``); the model loaded last is always kept, whatever its size."""
MODEL_MAX_ENTRIES = 6
"""At most this many models are cached, whatever their size."""
RESULT_BUDGET_MB = int(os.environ.get("CNNVIZ_RESULT_CACHE_MB", "128"))
"""Bytes of arrays, tensors and images the shared result store keeps, in MiB (``$CNNVIZ_RESULT_CACHE_MB``)."""
RESULT_MAX_ENTRIES = 48
"""At most this many results are kept, whatever their size."""


def module_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (each tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def nbytes(value: object, _depth: int = 0) -> int:
    """Approximate bytes held by a result: tensors, arrays and images, looking inside tuples, lists,
    dicts and dataclasses (other objects count 0).

    Args:
        value: anything a page stores with ``ui.cached``.

    Returns:
        The summed ``nbytes`` of the arrays found (a tensor's storage counted in full).
    """
    if _depth > 6:
        return 0
    if isinstance(value, torch.Tensor):
        return value.untyped_storage().nbytes() if value.device.type != "meta" else 0
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, Image.Image):
        return value.width * value.height * len(value.getbands())
    if isinstance(value, dict):
        return sum(nbytes(v, _depth + 1) for v in value.values())
    if isinstance(value, (tuple, list, set, frozenset)):
        return sum(nbytes(v, _depth + 1) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name, None), _depth + 1) for f in dataclasses.fields(value))
    return 0


def model_bytes(model: object) -> int:
    """Bytes a cached model holds: its module's parameters and buffers plus those of its fast
    inference copy when one was built (``cnnviz.folding.existing_inference_copy``).

    Args:
        model: a ``LoadedModel`` (its ``.module``) or an ``nn.Module``.
    """
    from .folding import existing_inference_copies

    module = getattr(model, "module", model)
    if not isinstance(module, nn.Module):
        return 0
    return module_bytes(module) + sum(module_bytes(fast) for fast in existing_inference_copies(module))


_LIBC = None


ARENAS = 2
"""glibc malloc arenas for the server (its default is 8 per core): with one arena per busy thread, each
session's thread kept its own freed pages."""
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024
"""Free memory above the heap's top beyond this goes back to the OS at once. Setting it also fixes
glibc's mmap threshold, which otherwise grows after each large free until big tensors come from the
heap, where they stay."""
_M_TRIM_THRESHOLD, _M_ARENA_MAX = -1, -8  # mallopt's parameter numbers (malloc.h)
_TUNED: bool | None = None


def tune_allocator() -> bool:
    """Make glibc's malloc give freed tensor memory back (``ARENAS``, ``TRIM_THRESHOLD_BYTES``): what
    ``MALLOC_ARENA_MAX=2 MALLOC_TRIM_THRESHOLD_=67108864`` would do, from inside the process. Call it
    once at start-up; later calls set the same values.

    Returns:
        Whether the allocator took the settings (False off glibc).
    """
    global _LIBC, _TUNED
    if _TUNED is None:
        try:
            if _LIBC is None:
                _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _TUNED = bool(_LIBC.mallopt(_M_ARENA_MAX, ARENAS)) and bool(_LIBC.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
        except (OSError, AttributeError):  # not glibc
            _TUNED = False
    return _TUNED


_FROZEN = False
_FREEZE_LOCK = threading.Lock()


def freeze_long_lived_objects() -> bool:
    """Hide every object alive now from the garbage collector's full collections, once per process.

    Streamlit collects garbage after every script run (``runner.postScriptGC``), and Python after enough
    allocations. Once torch, plotly, scikit-learn, Streamlit and cnnviz are imported, about half a million
    objects are alive (modules, classes, functions); scanning them took 0.45-0.5 s here, with the GIL held,
    so every rerun of any session (the Live panel's, every second) stopped the whole server for half a
    second. ``gc.freeze`` moves them to a permanent generation; objects made afterwards (sessions, results,
    models) are collected as before. Call it at start-up, after the imports.

    Returns:
        Whether this call froze them (False when done before).
    """
    global _FROZEN
    with _FREEZE_LOCK:
        if _FROZEN:
            return False
        gc.collect()  # what is garbage now is freed, not frozen
        gc.freeze()
        _FROZEN = True
        return True


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc's ``malloc_trim``; nothing
    more elsewhere). torch's CPU allocator frees through malloc, which keeps freed pages otherwise."""
    global _LIBC
    gc.collect()
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class ModelCache:
    """A thread-safe LRU of loaded models bounded by parameter bytes and by count.

    ``get(key, load)`` returns the cached model or calls ``load()`` once, even when several threads
    ask for the same key at once. After a load, least recently used models are evicted until the
    kept bytes fit ``budget_bytes`` (the newest model always stays). An evicted model that some
    session still holds is found again through a weak reference instead of being loaded anew.

    Args:
        budget_bytes: bytes of parameters and buffers to keep; ``size`` says what one model costs.
        max_entries: most models kept.
        size: model -> bytes; by default ``model_bytes`` (its module and fast copy).
        release: called after an eviction to give memory back (``release_memory``).
    """

    def __init__(self, budget_bytes: int = MODEL_BUDGET_MB << 20, max_entries: int = MODEL_MAX_ENTRIES,
                 size: Callable[[object], int] | None = None,
                 release: Callable[[], None] = release_memory) -> None:
        self._release = release
        self.budget_bytes = budget_bytes
        self.max_entries = max_entries
        self._size = size or model_bytes
        self._store: OrderedDict[Hashable, object] = OrderedDict()
        self._evicted: dict[Hashable, weakref.ref] = {}
        self._lock = threading.Lock()
        self._loading: dict[Hashable, threading.Lock] = {}
        self.loads = 0  # how many times a loader ran (for tests and benches)
        self.evictions = 0

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._store

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    def keys(self) -> list[Hashable]:
        """The cached keys, least recently used first."""
        with self._lock:
            return list(self._store)

    def kept_bytes(self) -> int:
        """Bytes of the models kept now."""
        with self._lock:
            models = list(self._store.values())
        return sum(self._size(m) for m in models)

    def _lookup(self, key: Hashable) -> object | None:
        """The cached or still-alive evicted model (made most recent), else None. Holds ``_lock``."""
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key]
        ref = self._evicted.pop(key, None)
        model = ref() if ref is not None else None
        if model is not None:
            self._store[key] = model
        return model

    def get(self, key: Hashable, load: Callable[[], object]) -> object:
        """The model under ``key``, loading it with ``load()`` on a miss (exceptions propagate and
        nothing is cached)."""
        with self._lock:
            revived = key not in self._store
            model = self._lookup(key)
            if model is None:
                key_lock = self._loading.setdefault(key, threading.Lock())
        if model is not None:
            if revived:  # back from the evicted: the others may no longer fit
                self._evict()
            return model
        with key_lock:  # one load per key; the others wait and find it
            with self._lock:
                model = self._lookup(key)
            if model is None:
                model = load()
                self.loads += 1
                with self._lock:
                    self._store[key] = model
                    self._store.move_to_end(key)
                self._evict()
        with self._lock:
            if self._loading.get(key) is key_lock and not key_lock.locked():
                del self._loading[key]
        return model

    def _evict(self) -> None:
        """Drop least recently used models beyond the budget; return their memory to the OS."""
        evicted, model = False, None
        with self._lock:
            sizes = {key: self._size(model) for key, model in self._store.items()}
            total = sum(sizes.values())
            while len(self._store) > 1 and (total > self.budget_bytes or len(self._store) > self.max_entries):
                key, model = self._store.popitem(last=False)
                total -= sizes[key]
                try:
                    self._evicted[key] = weakref.ref(model)
                except TypeError:  # not weak-referenceable: simply dropped
                    pass
                evicted = True
                self.evictions += 1
            self._evicted = {k: r for k, r in self._evicted.items() if r() is not None}
            model = None  # noqa: F841 (no reference left here before the memory goes back)
        if evicted:
            self._release()

    def clear(self) -> None:
        """Forget every model (sessions keep what they hold)."""
        with self._lock:
            self._store.clear()
            self._evicted.clear()
        self._release()


class ResultCache:
    """A thread-safe LRU of computed results bounded by bytes (``nbytes``) and by count.

    Args:
        budget_bytes: bytes of arrays, tensors and images to keep; the newest result always stays.
        max_entries: most results kept.
    """

    def __init__(self, budget_bytes: int = RESULT_BUDGET_MB << 20, max_entries: int = RESULT_MAX_ENTRIES) -> None:
        self.budget_bytes = budget_bytes
        self.max_entries = max_entries
        self._store: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self.lock = threading.Lock()

    def __contains__(self, key: Hashable) -> bool:
        with self.lock:
            return key in self._store

    def __len__(self) -> int:
        with self.lock:
            return len(self._store)

    def kept_bytes(self) -> int:
        """Bytes of the results kept now."""
        with self.lock:
            return self._bytes

    def lookup(self, key: Hashable) -> tuple[bool, object]:
        """(True, result) when ``key`` is stored (made most recent), else (False, None)."""
        with self.lock:
            if key in self._store:
                self._store.move_to_end(key)
                return True, self._store[key][0]
        return False, None

    def put(self, key: Hashable, value: object, max_entries: int | None = None) -> None:
        """Store ``value`` under ``key`` and drop the least recently used beyond the bounds.

        Args:
            max_entries: a smaller count bound for this call (``ui.cached``'s argument), if any.
        """
        size = nbytes(value)
        limit = self.max_entries if max_entries is None else min(max_entries, self.max_entries)
        with self.lock:
            if key in self._store:
                self._bytes -= self._store.pop(key)[1]
            self._store[key] = (value, size)
            self._bytes += size
            while len(self._store) > 1 and (self._bytes > self.budget_bytes or len(self._store) > limit):
                _, (_, dropped) = self._store.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        """Forget every result."""
        with self.lock:
            self._store.clear()
            self._bytes = 0
