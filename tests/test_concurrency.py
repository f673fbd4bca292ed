"""Many sessions in one process: every library method run at once in threads, on fresh models so that
every first-use build (the occlusion copy, random weights) overlaps the others' forward passes, gives
its serial result and leaves nothing behind; and no source of the app changes process-global state
(torch.fx tracing, global seeds, thread counts, warning filters, the environment) at run time."""

from __future__ import annotations

import ast
import dataclasses
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

from cnnviz import attribution as A
from cnnviz import synthesis as S
from cnnviz.features import channel_maxima, extract_features, feature_maps, receptive_field
from cnnviz.hooks import leftover_state
from cnnviz.layers import layer_table
from cnnviz.live import process_frame
from cnnviz.models import LoadedModel, load_model

SIZE = 64
TARGET = 3
EXACT = {"occlusion", "occlusion fp32", "gradients", "grad-cam", "feature maps", "receptive field", "layer table",
         "extraction", "dream", "build + occlusion", "build + gradient"}
"""Jobs whose concurrent result must be bit-identical to the serial one; the rest within 1e-5 relative."""


def _weights(module: torch.nn.Module) -> Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def _jobs(shared: LoadedModel, built: list[LoadedModel]) -> dict[str, Callable[[], object]]:
    """One library method per job. ``shared`` is fresh: no cached copy or table exists for it yet.
    Models the jobs build themselves are appended to ``built``."""
    net = shared.module
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    batch = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    pixels = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))

    def build(name: str) -> LoadedModel:
        model = load_model(name, pretrained=False)  # seeded random weights, built while others compute
        built.append(model)
        return model

    def build_and_occlude() -> tuple[Tensor, Tensor]:
        model = build("resnet18")
        return _weights(model.module), A.occlusion(model.module, x, TARGET, 32, 16, precision="bfloat16")

    def build_and_differentiate() -> tuple[Tensor, Tensor]:
        model = build("squeezenet1_1")
        return _weights(model.module), A.vanilla_gradient(model.module, x, TARGET)

    def live_frame(model: LoadedModel) -> tuple[Tensor, Tensor, list]:
        frame = (pixels[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        result = process_frame(model, frame, "layer1", 0, "grad_cam", cam_layer="layer4")
        return result.maps, result.heat, result.predictions

    return {
        "occlusion": lambda: A.occlusion(net, x, TARGET, 16, 16, precision="bfloat16"),  # builds the bf16 copy
        "occlusion fp32": lambda: A.occlusion(net, x, TARGET, 32, 32, precision="float32"),
        "gradients": lambda: (A.vanilla_gradient(net, x, TARGET), A.guided_backprop(net, x, TARGET)),
        "grad-cam": lambda: A.grad_cam(net, x, TARGET, A.default_cam_layer(net, x)),
        "smoothgrad": lambda: A.smoothgrad(net, x, TARGET, samples=4, batch_size=4),
        "integrated gradients": lambda: A.integrated_gradients(net, x, TARGET, steps=7, batch_size=8),
        "feature maps": lambda: feature_maps(net, x, ["layer1", "layer3.0.bn1"]),
        "receptive field": lambda: receptive_field(net, "layer2", (3, SIZE, SIZE)),  # empirical: forward_until
        "layer table": lambda: [(r.name, r.output_shape) for r in layer_table(net, (3, SIZE, SIZE))],
        "extraction": lambda: (extract_features(shared, batch, batch_size=2),
                               channel_maxima(shared, batch, "layer3", batch_size=2).values),
        "dream": lambda: S.run(S.dream(shared, pixels, "layer2", steps=3, octaves=2)).pixels,
        "live frame": lambda: live_frame(shared),  # builds the live copy; autograd off up to layer4 in its thread
        "build + occlusion": build_and_occlude,
        "build + gradient": build_and_differentiate,
    }


def _same(name: str, got: object, want: object) -> None:
    """Equal: bit for bit for the jobs in ``EXACT``, else within 1e-5 of the largest value."""
    if isinstance(want, Tensor):
        assert isinstance(got, Tensor) and got.shape == want.shape, name
        if name in EXACT:
            assert torch.equal(got, want), f"{name}: differs from the serial run by {float((got - want).abs().max())}"
        else:
            assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max()), name
    elif isinstance(want, np.ndarray):
        _same(name, torch.from_numpy(np.asarray(got)), torch.from_numpy(want))
    elif isinstance(want, (tuple, list)):
        assert len(got) == len(want), name  # type: ignore[arg-type]
        for g, w in zip(got, want):  # type: ignore[call-overload]
            _same(name, g, w)
    elif isinstance(want, dict):
        assert list(got) == list(want), name  # type: ignore[call-overload]
        for key in want:
            _same(name, got[key], want[key])  # type: ignore[index]
    else:
        assert dataclasses.is_dataclass(want) or isinstance(want, (int, float, str, type(None))), name
        assert got == want, name


def test_every_method_at_once_on_fresh_models_equals_its_serial_result():
    serial_built: list[LoadedModel] = []
    serial = {name: job() for name, job in _jobs(load_model("resnet18", pretrained=False), serial_built).items()}

    shared = load_model("resnet18", pretrained=False)  # fresh: its first-use builds happen in the threads
    before = list(shared.module.modules())
    built: list[LoadedModel] = []
    jobs = _jobs(shared, built)
    results: dict[str, object] = {}
    errors: list[str] = []
    barrier = threading.Barrier(len(jobs))
    rng_state = torch.random.get_rng_state()

    def worker(name: str) -> None:
        try:
            barrier.wait()
            results[name] = jobs[name]()
            if torch._C._len_torch_function_stack():
                errors.append(f"{name}: left a TorchFunctionMode on its thread")
        except Exception as error:  # reported below, with the job's name
            errors.append(f"{name}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=worker, args=(name,)) for name in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors, errors
    assert len(jobs) >= 4 and set(results) == set(jobs)
    for name in jobs:
        _same(name, results[name], serial[name])
    assert leftover_state(shared.module, before) == []
    assert len(built) == 2 and all(leftover_state(model.module) == [] for model in built)
    assert torch.equal(torch.random.get_rng_state(), rng_state), "a job seeded or drew from the global generator"


# --- no process-global state changed at run time ----------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
SCANNED = sorted([ROOT / "app.py", *(p for folder in ("cnnviz", "ui", "pages") for p in (ROOT / folder).rglob("*.py"))])

FORBIDDEN = {
    "torch.fx": "torch.fx tracing replaces nn.Module.__call__ for the whole process while it traces",
    "torchvision.models.feature_extraction": "create_feature_extractor traces with torch.fx",
    "torch.compile": "torch.compile patches and caches process-wide",
    "torch._dynamo": "torch.compile patches and caches process-wide",
    "torch.manual_seed": "seeds the global generator: use a torch.Generator (or cnnviz.randomness.seeded)",
    "torch.seed": "reseeds the global generator",
    "torch.random.manual_seed": "seeds the global generator",
    "torch.random.seed": "reseeds the global generator",
    "torch.random.fork_rng": "swaps the global generator's state while other threads draw from it",
    "torch.random.set_rng_state": "sets the global generator's state",
    "torch.set_rng_state": "sets the global generator's state",
    "torch.cuda.manual_seed": "seeds a global generator",
    "torch.cuda.manual_seed_all": "seeds the global generators",
    "numpy.random.seed": "seeds numpy's global generator: use numpy.random.default_rng(seed)",
    "random.seed": "seeds Python's global generator",
    "torch.set_num_threads": "changes the thread count for every thread started after it",
    "torch.set_num_interop_threads": "changes a process-wide thread pool",
    "threadpoolctl.threadpool_limits": "changes the process-wide OpenMP and BLAS thread pools",
    "torch.set_default_dtype": "process-wide default",
    "torch.set_default_tensor_type": "process-wide default",
    "torch.set_default_device": "process-wide default",
    "torch.set_flush_denormal": "process-wide flag",
    "torch.use_deterministic_algorithms": "process-wide flag",
    "torch.set_float32_matmul_precision": "process-wide flag",
    "torch.backends": "process-wide backend flags",
    "warnings.catch_warnings": "saves and restores the process-wide warning filters (not thread-safe)",
    "warnings.simplefilter": "changes the process-wide warning filters",
    "warnings.filterwarnings": "changes the process-wide warning filters",
    "warnings.resetwarnings": "changes the process-wide warning filters",
    "os.putenv": "changes the process environment",
    "os.unsetenv": "changes the process environment",
}
"""Dotted names (and everything under them) that change process-global state."""

ANYWHERE = ("symbolic_trace", "create_feature_extractor")
"""Attribute or function names flagged however they were imported."""

START_UP = {
    ("ui/__init__.py", "monkeypatch streamlit.runtime.pages_manager.PagesManager.uses_pages_directory"):
        "runs once, under the import lock, when app.py first imports ui, before any page is routed; it always "
        "writes the same constant (serve pages through st.navigation only), which no computation reads",
    ("cnnviz/admission.py", "torch.set_num_threads"):
        "configure_threads runs once per process, from shared_gate() on app.py's first script run, before any "
        "heavy job; it sets the count the admission gate was sized for and refuses to change it later",
    ("cnnviz/device.py", "torch.backends"):
        "mps_available only reads torch.backends.mps.is_available(); it sets no backend flag",
    ("cnnviz/admission.py", "threadpoolctl.threadpool_limits"):
        "the same start-up call: scikit-learn's BLAS pools get the gate's thread count once (OpenMP counts per "
        "thread: each script run and heavy job applies torch's count to its own thread, admission.align_thread)",
}
"""The allowed exceptions: (file, finding) -> why it is start-up code."""

PER_SESSION = "streamlit.session_state."
"""Attribute writes there are per browser session, not process-wide."""

_ENVIRON_WRITES = {"update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__"}


def _imports(tree: ast.AST) -> dict[str, str]:
    """Local name -> the dotted name it was imported as, for every import in a file."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (f"{node.module}." if node.module else "")
            for alias in node.names:
                names[alias.asname or alias.name] = module + alias.name
    return names


def _dotted(node: ast.AST, imports: dict[str, str]) -> str | None:
    """``np.random.seed`` -> "numpy.random.seed" when its root name was imported, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in imports:
        return ".".join([imports[node.id], *reversed(parts)])
    return None


def _forbidden(name: str) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)


def global_state_changes(source: str) -> list[tuple[int, str]]:
    """(line, finding) for every use in ``source`` of something that changes process-global state."""
    tree = ast.parse(source)
    imports = _imports(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if _forbidden(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if _forbidden(f"{node.module}.{a.name}")]
        elif isinstance(node, ast.Attribute):
            name = _dotted(node, imports)
            if (name and _forbidden(name)) or node.attr in ANYWHERE:
                found.append((node.lineno, name or node.attr))
            if name == "os.environ" and isinstance(node.ctx, (ast.Store, ast.Del)):
                found.append((node.lineno, "os.environ write"))
        elif isinstance(node, ast.Name) and node.id in ANYWHERE:
            found.append((node.lineno, node.id))
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                if isinstance(target, ast.Subscript) and _dotted(target.value, imports) == "os.environ":
                    found.append((node.lineno, "os.environ write"))
                elif isinstance(target, ast.Attribute) and (name := _dotted(target, imports)) \
                        and not name.startswith(PER_SESSION):
                    found.append((node.lineno, f"monkeypatch {name}"))
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in _ENVIRON_WRITES and _dotted(func.value, imports) == "os.environ":
                found.append((node.lineno, "os.environ write"))
            if isinstance(func, ast.Name) and func.id in ("setattr", "delattr") and node.args:
                if name := _dotted(node.args[0], imports):
                    found.append((node.lineno, f"monkeypatch {name}"))
    return sorted(set(found))


def test_no_source_changes_process_global_state_at_run_time():
    findings = {}
    for path in SCANNED:
        relative = path.relative_to(ROOT).as_posix()
        for line, finding in global_state_changes(path.read_text()):
            if (relative, finding) not in START_UP:
                reason = next((why for bad, why in FORBIDDEN.items() if finding == bad or finding.startswith(bad + ".")), "")
                findings[f"{relative}:{line}"] = f"{finding} ({reason})" if reason else finding
    assert len(SCANNED) > 20 and ROOT / "cnnviz" / "attribution" / "op_graph.py" in SCANNED
    assert not findings, findings
    for relative, finding in START_UP:  # every allowed exception still exists, so the list stays short and true
        assert finding in {f for _, f in global_state_changes((ROOT / relative).read_text())}, (relative, finding)


@pytest.mark.parametrize("source", [
    "import torch\ntorch.manual_seed(0)",
    "import torch as t\nt.random.fork_rng()",
    "from torch import manual_seed",
    "from torch.fx.experimental.optimization import fuse",
    "import torch.fx",
    "from torchvision.models.feature_extraction import create_feature_extractor",
    "from torchvision.models import feature_extraction as fe\nfe.create_feature_extractor(m, ['x'])",
    "import torch\ntorch.compile(model)",
    "import torch\ntorch.set_num_threads(1)",
    "import torch\ntorch.backends.cudnn.benchmark = True",
    "import numpy as np\nnp.random.seed(0)",
    "import warnings\nwith warnings.catch_warnings():\n    pass",
    "import os\nos.environ['OMP_NUM_THREADS'] = '1'",
    "import os\nos.environ.update(A='1')",
    "from torch import nn\nnn.Module.__call__ = None",
    "from . import hooks\nhooks.forward_hooks = None",
    "import torch\nsetattr(torch.nn.functional, 'relu', None)",
])
def test_the_scan_sees_each_kind_of_global_change(source):
    assert global_state_changes(source), source


def test_the_scan_allows_private_generators_and_reading_the_environment():
    source = ("import os, torch\nimport numpy as np\ng = torch.Generator().manual_seed(0)\ngenerator.manual_seed(1)\n"
              "rng = np.random.default_rng(0)\npath = os.environ.get('CNNVIZ_DATA')\nclone.set_submodule('a', m)\n"
              "module.weight = None\nimport streamlit as st\nst.session_state.layer = 3\n")
    assert global_state_changes(source) == []
