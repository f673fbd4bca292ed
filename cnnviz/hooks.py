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
ForwardPreHook = Callable[[nn.Module, tuple], object]


def get_module(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule called ``name`` (as in ``model.named_modules()``).

    Raises:
        KeyError: with a message listing where to find valid names.
    """
    try:  # walks the dotted path: cheaper than listing every module (this runs in optimisation loops)
        return model.get_submodule(name)
    except AttributeError:
        pass
    modules = dict(model.named_modules())
    if name not in modules:
        sample = ", ".join(n for n in list(modules)[1:8])
        raise KeyError(
            f"The model has no layer called {name!r}. Valid names are those of the layer table "
            f"(cnnviz.layers.layer_names(model)), for example: {sample}, ..."
        )
    return modules[name]


_REGISTRATION = threading.Lock()
"""Serialises registering and removing hooks: torch numbers hook handles with an unlocked class
counter, so two threads registering at once could get the same number on one module, and one
would overwrite (and later remove) the other's hook."""


@contextmanager
def _owned_hooks(model: nn.Module, hooks: Mapping[str, Callable], pre: bool) -> Iterator[None]:
    """Register thread-owned forward hooks (or pre-hooks) on named submodules for a ``with`` block."""
    owner = threading.get_ident()
    handles = []

    def owned(fn: Callable) -> Callable:
        def hook(module: nn.Module, *args: object) -> object:
            if threading.get_ident() == owner:
                return fn(module, *args)
            return None

        return hook

    try:
        with _REGISTRATION:
            for name, fn in hooks.items():
                module = get_module(model, name)
                register = module.register_forward_pre_hook if pre else module.register_forward_hook
                handles.append(register(owned(fn)))
        yield
    finally:
        with _REGISTRATION:
            for handle in handles:
                handle.remove()


@contextmanager
def forward_hooks(model: nn.Module, hooks: Mapping[str, ForwardHook]) -> Iterator[None]:
    """Attach forward hooks to named submodules for the duration of a ``with`` block.

    Each hook fires only in the thread that entered the block. A hook may return a value to
    replace the module's output, as in ``nn.Module.register_forward_hook``.

    Args:
        model: the model whose submodules get the hooks.
        hooks: layer name -> ``fn(module, inputs, output)``.
    """
    with _owned_hooks(model, hooks, pre=False):
        yield


@contextmanager
def forward_pre_hooks(model: nn.Module, hooks: Mapping[str, ForwardPreHook]) -> Iterator[None]:
    """Like ``forward_hooks``, but each hook runs before its module: ``fn(module, inputs)``.

    A hook may return new inputs, as in ``nn.Module.register_forward_pre_hook``.
    """
    with _owned_hooks(model, hooks, pre=True):
        yield


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
def graph_from(model: nn.Module, layer: str) -> Iterator[dict[str, Tensor]]:
    """Run the forward pass inside the block without autograd up to ``layer``, and with it after.

    ``layer``'s output is recorded as a leaf that requires grad, and autograd records the rest of
    the network only: gradients with respect to that output (Grad-CAM) then cost a graph of the
    layers after it, not of the whole network. The gradient equals the one taken through the full
    graph. Grad mode is thread-local and restored when the block ends, also when it raises.

    Meant for one forward pass per block: the pass turns autograd on when it reaches ``layer``.

    Args:
        model: the model to observe (not changed; its parameters need not require grad).
        layer: a name from ``model.named_modules()``.

    Returns:
        (yields) a dict that holds ``layer`` -> its output (N, ...) once the forward has reached it.
    """
    store: dict[str, Tensor] = {}

    def hook(module: nn.Module, inputs: tuple, output: object) -> object:
        if not isinstance(output, Tensor):
            raise TypeError(f"Layer {layer!r} returns {type(output).__name__}, not a tensor.")
        store[layer] = leaf = output.detach().requires_grad_(True)
        torch.set_grad_enabled(True)
        return leaf.clone()  # later in-place ops change the clone, not the leaf

    previous = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    try:
        with forward_hooks(model, {layer: hook}):
            yield store
    finally:
        torch.set_grad_enabled(previous)


class _StopForward(Exception):
    """Raised by ``forward_until``'s hook once every wanted layer is recorded: skips the rest."""


def forward_until(
    model: nn.Module, x: Tensor, layers: str | Sequence[str], keep_graph: bool = False, inputs: bool = False
) -> dict[str, Tensor]:
    """Run the model only as far as needed to record the named layers, and return what they saw.

    The forward pass stops (a private exception raised by a hook, caught here) as soon as every
    layer has been recorded once, so the layers after the last one needed never run: cheaper,
    and a model with a fixed-size head still runs to an early layer at any input size.

    A module applied several times in one forward (a shared ReLU) is recorded at each call until
    the stop, so it keeps its last output before the stop; the layer that completes the set is
    recorded at its first call. A record is the tensor as it left its layer: a later in-place op
    acts on a copy, not on it (as in ``record_activations``).

    Args:
        model: the model, in eval mode; nothing is left on it (hooks via ``forward_hooks``).
        x: input batch, e.g. (N, C, H, W).
        layers: one name or several, from ``model.named_modules()``.
        keep_graph: keep the records in the autograd graph (to take gradients w.r.t. them or
            through them to ``x``); else they are detached.
        inputs: record each layer's first input instead of its output (the input of the last
            linear layer is the penultimate representation). The hook sees it after the layer
            ran, so an in-place layer (``ReLU(inplace=True)``) shows its output.

    Returns:
        layer name -> recorded tensor, in the order of ``layers``; e.g. (N, C', H', W') for a
        convolution, (N, D) for the input of a linear layer.

    Raises:
        KeyError: a name that is not a layer of the model.
        ValueError: no layer given; a layer that did not run in the forward pass; a layer whose
            output (or input) is not a tensor.
    """
    names = list(dict.fromkeys([layers] if isinstance(layers, str) else layers))
    if not names:
        raise ValueError("Name at least one layer to run the model up to.")
    store: dict[str, Tensor] = {}
    wanted = len(names)

    def recorder(name: str) -> ForwardHook:
        def hook(module: nn.Module, args: tuple, output: object) -> object:
            value = (args[0] if args else None) if inputs else output
            if not isinstance(value, Tensor):
                what = "input" if inputs else "output"
                raise ValueError(f"The {what} of layer {name!r} is a {type(value).__name__}, not a tensor.")
            last = len(store) + (name not in store) == wanted
            if last:  # nothing runs after this: no copy needed
                store[name] = value if keep_graph else value.detach()
                raise _StopForward
            if keep_graph:
                store[name] = value
                return None if inputs else value.clone()  # later in-place ops change the clone
            store[name] = value.detach().clone()
            return None

        return hook

    try:
        with forward_hooks(model, {name: recorder(name) for name in names}):
            model(x)
    except _StopForward:
        pass
    missing = [name for name in names if name not in store]
    if missing:
        raise ValueError(f"The layer(s) {', '.join(map(repr, missing))} did not run in the forward pass.")
    return {name: store[name] for name in names}


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
