"""Private copies of a shared model: plain copies to modify freely, and fast inference copies
with batch norms folded into the layer before them and bfloat16 weights.

The shared model is never changed, and nothing here patches torch: torch.fx's tracer (behind
``torch.fx.experimental.optimization.fuse``) replaces ``nn.Module.__call__`` for the whole process
while it traces, which breaks every forward pass other sessions run meanwhile. Instead, which
convolution feeds which batch norm is read off one ordinary forward pass of the private copy,
watched by this thread's hooks (``cnnviz.hooks``) and a thread-local ``TorchFunctionMode``.
"""

from __future__ import annotations

import copy
import threading
import weakref

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval
from torch.overrides import TorchFunctionMode

from .hooks import forward_hooks, forward_pre_hooks

_RUNTIME_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)
"""Hook dictionaries that sessions change at run time (``cnnviz.hooks`` registers and removes)."""

FOLDABLE = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d, nn.Linear: nn.BatchNorm1d}
"""Layer type -> the batch norm type that can be folded into it (the pairs torch.fx's ``fuse`` folds;
exact types, as there). A subclass counts when it sets ``folds_like_its_base = True``: its output is
still linear in ``weight`` and ``bias`` (e.g. ``cnnviz.efficientnet_lite.Conv2dSame``, which only pads first)."""


def _base_layer_type(module: nn.Module) -> type | None:
    """The FOLDABLE key ``module`` folds as, or None."""
    kind = type(module)
    if kind in FOLDABLE:
        return kind
    if getattr(kind, "folds_like_its_base", False):
        return next((base for base in FOLDABLE if issubclass(kind, base)), None)
    return None


def private_copy(model: nn.Module) -> nn.Module:
    """A deep copy of a model to modify freely: no hooks carried over, eval mode.

    Safe while other threads run the model and register or remove their hooks on it: the hook
    dictionaries are not copied (the copy gets empty ones), so nothing iterates them.
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        for attr in _RUNTIME_HOOK_DICTS:
            hooks = module.__dict__.get(attr)
            if hooks is not None:
                memo[id(hooks)] = type(hooks)()
    return copy.deepcopy(model, memo).eval()


def _tensors(value: object) -> list[Tensor]:
    """The tensors in a value, looking inside tuples, lists and dicts."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


class _TensorUses(TorchFunctionMode):
    """Records, for each watched tensor, which batch norm (or None: anything else) every torch call
    taking it ran in. Thread-local, like every ``TorchFunctionMode``."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: dict[int, Tensor] = {}  # id -> tensor, kept alive so that ids stay unique
        self.users: dict[int, list[str | None]] = {}
        self.running: list[str] = []  # batch norms running now, innermost last

    def watch(self, tensor: Tensor) -> None:
        self.watched[id(tensor)] = tensor
        self.users.setdefault(id(tensor), [])

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        for tensor in _tensors((args, kwargs)):
            if self.watched.get(id(tensor)) is tensor:
                self.users[id(tensor)].append(self.running[-1] if self.running else None)
        return func(*args, **kwargs)


def _default_example(model: nn.Module) -> Tensor | None:
    """A zero 224×224 image with the channels of the model's first 2-D convolution, on its device, or None."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if first is None else torch.zeros(1, first.in_channels, 224, 224, device=first.weight.device)


def conv_bn_pairs(model: nn.Module, example: Tensor | None = None) -> list[tuple[str, str]]:
    """The (layer, batch norm) pairs of ``model`` whose batch norm can be folded into the layer.

    A pair is a convolution (or linear layer) whose output feeds one batch norm and nothing else,
    as in torch.fx's ``fuse``: each called once, the batch norm's input is the layer's very output,
    no other torch call (and not the model's output) uses that tensor, and the batch norm keeps
    running statistics. Found from one forward pass of ``example`` watched by hooks and a
    ``TorchFunctionMode`` that fire in this thread only; no tracing, nothing left on the model.

    Args:
        model: the network, in eval mode (run once; pass a private copy to leave no trace at all).
        example: an input batch the model accepts, e.g. (1, C, H, W); by default a zero 224×224
            image with the channels of the first 2-D convolution.

    Returns:
        [(layer name, batch norm name), ...] in definition order; [] when the model
        has no batch norm or the forward pass fails.
    """
    named = list(model.named_modules(remove_duplicate=False))
    counts: dict[int, int] = {}
    for _, module in named:
        counts[id(module)] = counts.get(id(module), 0) + 1
    unique = {name: m for name, m in named if name and counts[id(m)] == 1}  # a module under two names stays
    layers = [name for name, m in unique.items() if _base_layer_type(m) is not None]
    norms = [name for name, m in unique.items() if type(m) in FOLDABLE.values()]
    example = _default_example(model) if example is None else example
    if not layers or not norms or example is None:
        return []

    uses = _TensorUses()
    calls: dict[str, int] = {}
    produced_by: dict[int, str] = {}  # id(output) -> layer
    inputs: dict[str, Tensor | None] = {}  # batch norm -> its first input

    def layer_done(name: str):
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, Tensor):
                uses.watch(output)
                produced_by[id(output)] = name

        return hook

    def norm_starts(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            calls[name] = calls.get(name, 0) + 1
            inputs[name] = args[0] if args and isinstance(args[0], Tensor) else None
            uses.running.append(name)

        return hook

    def norm_done(module: nn.Module, args: tuple, output: object) -> None:
        uses.running.pop()

    try:
        done = {**{n: layer_done(n) for n in layers}, **{n: norm_done for n in norms}}
        with torch.no_grad(), forward_pre_hooks(model, {n: norm_starts(n) for n in norms}), \
                forward_hooks(model, done), uses:
            output = model(example)
    except Exception:  # a model this input does not fit: fold nothing
        return []
    returned = {id(t) for t in _tensors(output)}
    pairs = []
    for norm in norms:
        tensor = inputs.get(norm)
        if tensor is None or calls.get(norm) != 1 or uses.watched.get(id(tensor)) is not tensor:
            continue
        layer = produced_by[id(tensor)]
        if (calls.get(layer) == 1 and FOLDABLE[_base_layer_type(unique[layer])] is type(unique[norm])
                and set(uses.users[id(tensor)]) == {norm} and id(tensor) not in returned
                and unique[norm].track_running_stats and unique[norm].running_mean is not None):
            pairs.append((layer, norm))
    return pairs


def fold_batch_norms(model: nn.Module, example: Tensor | None = None) -> tuple[nn.Module, list[tuple[str, str]]]:
    """A private copy of ``model`` with each batch norm of ``conv_bn_pairs`` folded into its layer.

    The layer's weight and bias absorb the batch norm's affine map and running statistics
    (``torch.nn.utils.fusion``), and the batch norm becomes ``nn.Identity``. In float32 the copy
    computes what the model computes up to rounding. The shared model is not changed, not even
    run: the pairs are found on the copy.

    Returns:
        (the copy in eval mode, the folded (layer, batch norm) pairs).
    """
    clone = private_copy(model)
    pairs = conv_bn_pairs(clone, example)
    for layer, norm in pairs:
        first, bn = clone.get_submodule(layer), clone.get_submodule(norm)
        fuse = fuse_linear_bn_eval if isinstance(first, nn.Linear) else fuse_conv_bn_eval
        clone.set_submodule(layer, fuse(first, bn))
        clone.set_submodule(norm, nn.Identity())
    return clone, pairs


def bf16_supported() -> bool:
    """True when this CPU runs bfloat16 matrix products natively (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


_INFERENCE_COPIES: "weakref.WeakKeyDictionary[nn.Module, dict[torch.dtype, nn.Module]]" = weakref.WeakKeyDictionary()
_INFERENCE_COPIES_LOCK = threading.Lock()


def bf16_inference_copy(model: nn.Module, example: Tensor | None = None) -> nn.Module:
    """A private copy of ``model`` for fast many-image inference: batch norms folded into the
    convolutions before them (``fold_batch_norms``), bfloat16 weights, channels-last.

    Built once per model and kept while the model lives; the shared model itself is never changed.
    Its outputs differ from the float32 model's by bfloat16 rounding only.

    Args:
        example: an input the model accepts, used once (on the copy) to find the convolution ->
            batch norm pairs; by default a zero 224×224 image.
    """
    return fast_inference_copy(model, example, torch.bfloat16)


def fast_inference_copy(model: nn.Module, example: Tensor | None = None,
                        dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """``bf16_inference_copy`` in any reduced precision: batch norms folded, ``dtype`` weights
    (bfloat16, or float16 on a GPU without bfloat16, see ``cnnviz.device.fast_dtype``),
    channels-last, on the model's device. Built once per (model, dtype) and kept while the model lives.

    Args:
        example: an input the model accepts (on the model's device), used once on the copy to find
            the convolution -> batch norm pairs; by default a zero 224×224 image there.
        dtype: the copy's floating-point type.
    """
    with _INFERENCE_COPIES_LOCK:
        copies = _INFERENCE_COPIES.setdefault(model, {})
        fast = copies.get(dtype)
        if fast is None:
            fast, _ = fold_batch_norms(model, example)
            fast = fast.to(dtype).to(memory_format=torch.channels_last)
            for param in fast.parameters():
                param.requires_grad_(False)
            copies[dtype] = fast
    return fast


def existing_inference_copy(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module | None:
    """The fast copy in ``dtype`` built for ``model`` (``fast_inference_copy``), or None (never builds
    one). The copies live as long as ``model`` does: evicting the model frees them too."""
    with _INFERENCE_COPIES_LOCK:
        return _INFERENCE_COPIES.get(model, {}).get(dtype)


def existing_inference_copies(model: nn.Module) -> list[nn.Module]:
    """Every fast copy built for ``model``, one per dtype (never builds one)."""
    with _INFERENCE_COPIES_LOCK:
        return list(_INFERENCE_COPIES.get(model, {}).values())
