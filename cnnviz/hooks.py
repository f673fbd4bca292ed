"""The one hook helper, and checks that a shared model is left as it was found.

A model is loaded once per process and shared by every browser session, each running in its
own thread. So every hook here is:

* registered inside a context manager and removed in ``finally``, also when the body raises;
* owned by the thread that registered it: it does nothing when another thread runs the model,
  so two sessions computing on the same model at the same moment never see each other's data.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

ForwardHook = Callable[[nn.Module, tuple, object], object]


def get_module(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule called ``name`` (as in ``model.named_modules()``).

    Raises:
        KeyError: with a message listing where to find valid names.
    """
    modules = dict(model.named_modules())
    if name not in modules:
        sample = ", ".join(n for n in list(modules)[1:8])
        raise KeyError(
            f"The model has no layer called {name!r}. Valid names are those of the layer table "
            f"(cnnviz.layers.layer_names(model)), for example: {sample}, ..."
        )
    return modules[name]


@contextmanager
def forward_hooks(model: nn.Module, hooks: Mapping[str, ForwardHook]) -> Iterator[None]:
    """Attach forward hooks to named submodules for the duration of a ``with`` block.

    Each hook fires only in the thread that entered the block. A hook may return a value to
    replace the module's output, as in ``nn.Module.register_forward_hook``.

    Args:
        model: the model whose submodules get the hooks.
        hooks: layer name -> ``fn(module, inputs, output)``.
    """
    owner = threading.get_ident()
    handles = []

    def owned(fn: ForwardHook) -> ForwardHook:
        def hook(module: nn.Module, inputs: tuple, output: object) -> object:
            if threading.get_ident() == owner:
                return fn(module, inputs, output)
            return None

        return hook

    try:
        for name, fn in hooks.items():
            handles.append(get_module(model, name).register_forward_hook(owned(fn)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def record_activations(
    model: nn.Module, layers: Sequence[str], keep_graph: bool = False
) -> Iterator[dict[str, Tensor]]:
    """Record the outputs of named layers during forward passes inside the block.

    The recorded tensor is the layer's output as it left the layer: a later in-place op (an
    in-place ReLU after a conv, ResNet's ``out += identity``) acts on a copy, not on it.
    A module applied several times in one forward keeps its last output.

    Args:
        model: the model to observe.
        layers: names from ``model.named_modules()``.
        keep_graph: if True the recorded tensors stay in the autograd graph, so gradients with
            respect to them can be taken (Grad-CAM); else they are detached.

    Returns:
        (yields) a dict layer name -> output tensor, filled as the model runs.
    """
    store: dict[str, Tensor] = {}

    def recorder(name: str) -> ForwardHook:
        def hook(module: nn.Module, inputs: tuple, output: object) -> object:
            if not isinstance(output, Tensor):
                raise TypeError(f"Layer {name!r} returns {type(output).__name__}, not a tensor.")
            if keep_graph:
                store[name] = output
                return output.clone()  # later in-place ops change the clone, not the record
            store[name] = output.detach().clone()
            return None

        return hook

    with forward_hooks(model, {name: recorder(name) for name in layers}):
        yield store


@contextmanager
def preserve_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's train/eval flag on exit, whatever happened inside."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def leftover_state(model: nn.Module, expected_modules: Sequence[nn.Module] | None = None) -> list[str]:
    """List what a computation left on a shared model; an empty list means clean.

    Looks for hooks on any submodule, ``.grad`` on any parameter, a submodule in train mode,
    a parameter that stopped requiring grad, and (if given) modules swapped out.

    Args:
        model: the model to inspect.
        expected_modules: ``list(model.modules())`` taken before, to detect swapped modules.
    """
    problems = []
    for name, module in model.named_modules():
        for attr in HOOK_DICTS:
            if getattr(module, attr, None):
                problems.append(f"{name or '<root>'}: {attr} not empty")
        if module.training:
            problems.append(f"{name or '<root>'}: in train mode")
    for name, param in model.named_parameters():
        if param.grad is not None:
            problems.append(f"{name}: .grad is set")
        if not param.requires_grad:
            problems.append(f"{name}: requires_grad was turned off")
    if expected_modules is not None:
        now = list(model.modules())
        if len(now) != len(expected_modules) or any(a is not b for a, b in zip(now, expected_modules)):
            problems.append("modules were swapped")
    return problems


def input_gradient(
    model: nn.Module, x: Tensor, objective: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    """Gradient of a scalar objective of the model's output with respect to the input only.

    Uses ``torch.autograd.grad`` so no ``.grad`` ever lands on the model's parameters, and
    their gradients are never computed.

    Args:
        model: the model, in eval mode.
        x: input batch, (N, C, H, W).
        objective: maps the output (N, K) to per-sample scores (N,).

    Returns:
        (scores (N,), gradient (N, C, H, W)).
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = objective(model(x))
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return scores.detach(), grad
