"""Record which operation feeds which in one forward pass, without touching the model.

``capture_graph(network, x)`` runs the network once on ``x`` under a ``TorchFunctionMode`` that is
active in the calling thread only (the same mechanism as guided backprop): every torch call that
reads a tensor derived from ``x`` becomes a node with its function, its arguments (graph tensors
replaced by ``Ref`` placeholders) and its output in this clean pass. Nothing is registered on the
model and nothing is patched process-wide, so other threads keep using the model meanwhile.

Each node is classified for region-wise replay (``cnnviz.attribution.incremental_occlusion``):

* ``"window"``: a convolution or pooling whose output row ``o`` reads input rows
  ``o*stride - padding`` to ``o*stride - padding + dilation*(kernel-1)`` (``Window``);
* ``"pointwise"``: one graph tensor in, same shape out, each output position computed from the same
  input position (ReLU, eval batch norm, eval dropout, arithmetic with a scalar or a per-channel
  constant...);
* ``"join"``: several graph tensors of one shape combined position by position (a residual
  addition) or concatenated along channels (SqueezeNet, GoogLeNet, DenseNet);
* ``"other"``: anything else (global pooling, flatten, linear, squeeze-and-excitation's rescaling
  by a pooled vector...): recomputed in full.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode


@dataclass(frozen=True)
class Ref:
    """A graph tensor in a recorded call: output ``item`` (None: the only one) of node ``node``."""

    node: int
    item: int | None = None


@dataclass(frozen=True, eq=False)
class Window:
    """Geometry of a convolution or pooling along (rows, columns), and how to run it on a crop.

    ``op`` is "conv", "max" or "avg"; ``pad_value`` is what the real padding holds (0, or -inf for
    max pooling), so a crop padded by hand with it and run without padding gives the same values.
    """

    op: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    pad_value: float
    params: dict[str, Any] = field(default_factory=dict)

    def run(self, crop: Tensor) -> Tensor:
        """The operation on a crop already padded by hand: (B, C, h_in, w_in) -> (B, C', h, w)."""
        if self.op == "conv":
            return F.conv2d(crop, self.params["weight"], self.params["bias"], self.stride, 0, self.dilation,
                            self.params["groups"])
        if self.op == "max":
            return F.max_pool2d(crop, self.kernel, self.stride, 0, self.dilation)
        return F.avg_pool2d(crop, self.kernel, self.stride, 0, False, True, self.params["divisor_override"])


@dataclass(eq=False)
class Node:
    """One recorded call.

    Attributes:
        func: the torch function called.
        args, kwargs: its arguments, graph tensors replaced by ``Ref``.
        inputs: indices of the nodes whose outputs it reads.
        clean: its output in the clean pass (a tensor, or a tuple of them), batch size 1.
        kind: "input", "window", "pointwise", "join" or "other".
        window: the geometry of a "window" node.
    """

    func: Callable | None
    args: tuple
    kwargs: dict
    inputs: list[int]
    clean: Any
    kind: str
    window: Window | None = None


@dataclass
class Graph:
    """Nodes in execution order (node 0 is the input) and the reference to the network's output."""

    nodes: list[Node]
    output: Ref


class UnsupportedGraph(Exception):
    """The forward pass does something region-wise replay cannot reproduce exactly."""


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 1 and isinstance(value[0], int):
        return (value[0], value[0])
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    return None


def _bind(args: tuple, kwargs: dict, names: tuple[str, ...], defaults: dict[str, Any]) -> dict[str, Any]:
    bound = dict(defaults)
    bound.update(zip(names, args))
    bound.update(kwargs)
    return bound


_CONV = {torch.conv2d, F.conv2d}
_MAX_POOL = {F.max_pool2d, torch.max_pool2d}
_AVG_POOL = {F.avg_pool2d}


def window_of(func: Callable, args: tuple, kwargs: dict, in_shape: tuple[int, ...],
              out_shape: tuple[int, ...]) -> Window | None:
    """The ``Window`` of a conv2d / max_pool2d / avg_pool2d call that a hand-padded crop reproduces
    exactly, or None (string padding, pooling indices, average pooling whose divisor changes at
    the border)."""
    if func in _CONV:
        b = _bind(args, kwargs, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
                  {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
        stride, padding, dilation = _pair(b["stride"]), _pair(b["padding"]), _pair(b["dilation"])
        weight = b["weight"]
        if None in (stride, padding, dilation) or not isinstance(weight, Tensor) or weight.dim() != 4:
            return None
        return Window("conv", tuple(weight.shape[2:]), stride, padding, dilation, 0.0,
                      {"weight": weight, "bias": b["bias"], "groups": b["groups"]})
    if func in _MAX_POOL:
        b = _bind(args, kwargs, ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
                  {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False})
        kernel = _pair(b["kernel_size"])
        stride = kernel if b["stride"] in (None, (), []) else _pair(b["stride"])
        padding, dilation = _pair(b["padding"]), _pair(b["dilation"])
        if None in (kernel, stride, padding, dilation) or b["return_indices"]:
            return None
        return Window("max", kernel, stride, padding, dilation, float("-inf"))
    if func in _AVG_POOL:
        b = _bind(args, kwargs, ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                 "divisor_override"),
                  {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True, "divisor_override": None})
        kernel = _pair(b["kernel_size"])
        stride = kernel if b["stride"] in (None, (), []) else _pair(b["stride"])
        padding = _pair(b["padding"])
        if None in (kernel, stride, padding) or (padding != (0, 0) and not b["count_include_pad"]):
            return None
        for size, out, k, s, p in zip(in_shape[-2:], out_shape[-2:], kernel, stride, padding):
            if (out - 1) * s + k > size + 2 * p:  # ceil mode: a last window over the border averages fewer pixels
                return None
        return Window("avg", kernel, stride, padding, (1, 1), 0.0, {"divisor_override": b["divisor_override"]})
    return None


# Functions computing each output position from the same input position; their tensor arguments
# other than the graph tensor are per-channel parameters (batch norm) or scalars.
_POINTWISE = {
    F.relu, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_, F.relu_, F.relu6, F.hardtanh, F.hardtanh_,
    F.leaky_relu, F.leaky_relu_, F.elu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.sigmoid, torch.sigmoid,
    Tensor.sigmoid, torch.tanh, Tensor.tanh, torch.clamp, Tensor.clamp, Tensor.clamp_, Tensor.contiguous,
    Tensor.clone, Tensor.detach, Tensor.to, Tensor.float, Tensor.bfloat16, Tensor.half, F.batch_norm, F.dropout,
    F.dropout2d, F.alpha_dropout, F.feature_alpha_dropout,
}
# Arithmetic: pointwise with one graph tensor and scalars / broadcast constants, a join with several.
_ARITHMETIC = {
    Tensor.__add__, Tensor.__radd__, Tensor.__iadd__, Tensor.add, Tensor.add_, torch.add,
    Tensor.__sub__, Tensor.__rsub__, Tensor.__isub__, Tensor.sub, Tensor.sub_, torch.sub,
    Tensor.__mul__, Tensor.__rmul__, Tensor.__imul__, Tensor.mul, Tensor.mul_, torch.mul,
    Tensor.__truediv__, Tensor.__itruediv__, Tensor.div, Tensor.div_, torch.div,
}
_TRAINING_ARGUMENT = {F.batch_norm: (5, "training", False), F.dropout: (2, "training", True),
                      F.dropout2d: (2, "training", True), F.alpha_dropout: (2, "training", False),
                      F.feature_alpha_dropout: (2, "training", False)}


def _training(func: Callable, args: tuple, kwargs: dict) -> bool:
    index, name, default = _TRAINING_ARGUMENT[func]
    return bool(kwargs.get(name, args[index] if len(args) > index else default))


def _spatially_constant(value: Any) -> bool:
    """A scalar or a constant tensor that is the same at every position (size 1 in the last two dims)."""
    if not isinstance(value, Tensor):
        return True
    return value.numel() == 1 or (value.dim() >= 2 and value.shape[-1] == 1 and value.shape[-2] == 1)


def classify(func: Callable, args: tuple, kwargs: dict, refs: list[Ref], shapes: list[tuple[int, ...]],
             out: Tensor, constants: list[Any]) -> tuple[str, Window | None]:
    """Node kind (see the module docstring) of one recorded call whose output is a single tensor."""
    spatial = out.dim() == 4 and out.is_floating_point()
    if len(refs) == 1 and refs[0].item is None and spatial:
        window = window_of(func, args, kwargs, shapes[0], tuple(out.shape)) if (func in _CONV | _MAX_POOL | _AVG_POOL) else None
        if window is not None and args and isinstance(args[0], Ref):
            return "window", window
        if func in _POINTWISE and shapes[0] == tuple(out.shape):
            if func in _TRAINING_ARGUMENT and _training(func, args, kwargs):
                return "other", None
            if func is F.batch_norm or all(map(_spatially_constant, constants)):  # batch norm: per-channel
                return "pointwise", None
        if func in _ARITHMETIC and shapes[0] == tuple(out.shape) and all(map(_spatially_constant, constants)):
            return "pointwise", None
    if spatial and len(refs) >= 2 and all(r.item is None for r in refs) and not constants:
        if func in _ARITHMETIC and all(s == tuple(out.shape) for s in shapes):
            return "join", None
        if func is torch.cat:
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if dim in (1, -3) and all(s[2:] == tuple(out.shape[2:]) for s in shapes):
                return "join", None
    return "other", None


_INPLACE_CACHE: dict[Callable, str | None] = {}


def _inplace_parameter(func: Callable) -> str | None:
    """Name of the function's ``inplace`` parameter bound by position, if it has one."""
    if func not in _INPLACE_CACHE:
        try:
            parameters = list(inspect.signature(func).parameters)
            _INPLACE_CACHE[func] = "inplace" if "inplace" in parameters else None
        except (TypeError, ValueError):
            _INPLACE_CACHE[func] = None
    return _INPLACE_CACHE[func]


def _maybe_inplace(func: Callable, args: tuple, kwargs: dict) -> bool:
    name = getattr(func, "__name__", "")
    if (name.endswith("_") and not name.endswith("__")) or name.startswith("__i") or kwargs.get("inplace"):
        return True
    if _inplace_parameter(func):
        try:
            return bool(inspect.signature(func).bind(*args, **kwargs).arguments.get("inplace"))
        except TypeError:
            return False
    return False


class _Recorder(TorchFunctionMode):
    """Records every call reading a graph tensor (this thread only, while the mode is entered)."""

    def __init__(self, x: Tensor) -> None:
        super().__init__()
        self.nodes: list[Node] = [Node(None, (), {}, [], x, "input")]
        self.refs: dict[int, Ref] = {id(x): Ref(0)}
        self.versions: list[int] = [x._version]
        self.error: str | None = None

    def _template(self, value: Any, refs: list[Ref], shapes: list, constants: list) -> Any:
        """``value`` with graph tensors replaced by ``Ref`` (collected in ``refs``, their shapes in
        ``shapes``); other tensors are collected in ``constants``."""
        if isinstance(value, Tensor):
            ref = self.refs.get(id(value))
            if ref is None:
                constants.append(value)
                return value
            refs.append(ref)
            shapes.append(tuple(value.shape))
            return ref
        if isinstance(value, (list, tuple)) and any(isinstance(v, (Tensor, list, tuple)) for v in value):
            return type(value)(self._template(v, refs, shapes, constants) for v in value)
        return value

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        refs: list[Ref] = []
        shapes: list = []
        constants: list = []
        t_args = self._template(tuple(args), refs, shapes, constants)
        t_kwargs = {k: self._template(v, refs, shapes, constants) for k, v in kwargs.items()}
        if not refs:
            return func(*args, **kwargs)
        first = args[0] if args and isinstance(args[0], Tensor) and id(args[0]) in self.refs else None
        before = first.clone() if first is not None and _maybe_inplace(func, args, kwargs) else None
        out = func(*args, **kwargs)
        if first is not None and out is first and before is not None and first._version != self.versions[self.refs[id(first)].node]:
            for index, node in enumerate(self.nodes):  # every node holding the overwritten tensor keeps its old value
                if node.clean is first:
                    node.clean = before
                    self.versions[index] = before._version
        inputs = sorted({r.node for r in refs})
        if isinstance(out, Tensor):
            kind, window = classify(func, t_args, t_kwargs, refs, shapes, out, constants)
            self.nodes.append(Node(func, t_args, t_kwargs, inputs, out, kind, window))
            self.versions.append(out._version)
            self.refs[id(out)] = Ref(len(self.nodes) - 1)
        elif isinstance(out, (tuple, list)) and out and all(isinstance(o, Tensor) for o in out):
            self.nodes.append(Node(func, t_args, t_kwargs, inputs, tuple(out), "other"))
            self.versions.append(0)
            for item, o in enumerate(out):
                self.refs[id(o)] = Ref(len(self.nodes) - 1, item)
        return out

    def check_versions(self) -> None:
        """Raise if a recorded clean value was changed in place after it was recorded (e.g. through a view)."""
        for node, version in zip(self.nodes, self.versions):
            if isinstance(node.clean, Tensor) and node.clean._version != version:
                name = getattr(self.nodes[-1].func, "__name__", "an operation")
                raise UnsupportedGraph(f"a tensor was changed in place after it was used ({name})")


def capture_graph(network: nn.Module, x: Tensor) -> Graph:
    """Run ``network`` once on ``x`` (batch 1) and record its operations (see the module docstring).

    Runs under ``torch.no_grad`` (not inference mode: the recorder reads version counters to catch
    in-place changes). The network is not modified and nothing outlives the call.

    Raises:
        UnsupportedGraph: the output is not one tensor computed from ``x``, or a recorded value was
            changed in place in a way the recorder cannot undo.
    """
    x = x.detach().clone()
    recorder = _Recorder(x)
    with torch.no_grad(), recorder:
        out = network(x)
    recorder.check_versions()
    if not isinstance(out, Tensor) or id(out) not in recorder.refs:
        raise UnsupportedGraph("the network's output is not one tensor computed from the input")
    return Graph(recorder.nodes, recorder.refs[id(out)])


def _same(value: Tensor) -> Tensor:
    """The identity: what a batch norm folded into its convolution leaves behind."""
    return value


def channels_last_convolutions(graph: Graph) -> Graph:
    """A copy of the graph whose convolutions use channels-last copies of their weights, so that
    oneDNN runs them in its faster NHWC layout (10-40% per convolution on a CPU). The network's own
    tensors are not modified."""
    nodes = list(graph.nodes)
    for k, node in enumerate(nodes):
        if node.kind != "window" or node.window.op != "conv" or node.window.params["weight"].dim() != 4:
            continue
        weight = node.window.params["weight"].detach().contiguous(memory_format=torch.channels_last)
        window = replace(node.window, params={**node.window.params, "weight": weight})
        args = (node.args[0], weight, *node.args[2:]) if len(node.args) > 1 and isinstance(node.args[1], Tensor) else node.args
        kwargs = {**node.kwargs, "weight": weight} if "weight" in node.kwargs else node.kwargs
        nodes[k] = Node(node.func, args, kwargs, node.inputs, node.clean, node.kind, window)
    return Graph(nodes, graph.output)


def fold_recorded_batch_norms(graph: Graph) -> Graph:
    """A copy of the graph where every eval-mode batch norm right after a convolution (and the
    convolution's only reader) is folded into it: scaled weights and a new bias, and the batch norm
    becomes the identity. The same function up to rounding, one operation less per layer. The
    network's own tensors are not modified."""
    nodes = list(graph.nodes)
    readers: dict[int, int] = {}
    for node in nodes:
        for i in node.inputs:
            readers[i] = readers.get(i, 0) + 1
    for k, node in enumerate(nodes):
        if node.func is not F.batch_norm or node.kind != "pointwise" or len(node.inputs) != 1:
            continue
        (u,) = node.inputs
        conv = nodes[u]
        if conv.kind != "window" or conv.window.op != "conv" or readers.get(u) != 1 or graph.output.node == u:
            continue
        b = _bind(node.args, node.kwargs, ("input", "running_mean", "running_var", "weight", "bias", "training",
                                          "momentum", "eps"), {"weight": None, "bias": None, "eps": 1e-5})
        mean, var, gamma, beta = b["running_mean"], b["running_var"], b["weight"], b["bias"]
        weight, bias = conv.window.params["weight"], conv.window.params["bias"]
        if not all(isinstance(t, Tensor) for t in (mean, var)):
            continue
        scale = torch.rsqrt(var.float() + b["eps"]) * (1.0 if gamma is None else gamma.float())
        new_bias = ((0.0 if bias is None else bias.float()) - mean.float()) * scale + (0.0 if beta is None else beta.float())
        new_weight = (weight.float() * scale[:, None, None, None]).to(weight.dtype).detach()
        new_bias = new_bias.to(weight.dtype).detach()
        window = Window("conv", conv.window.kernel, conv.window.stride, conv.window.padding, conv.window.dilation, 0.0,
                        {**conv.window.params, "weight": new_weight, "bias": new_bias})
        args = (conv.args[0], new_weight, new_bias, window.stride, window.padding, window.dilation,
                window.params["groups"])
        nodes[u] = Node(F.conv2d, args, {}, conv.inputs, node.clean, "window", window)
        nodes[k] = Node(_same, (Ref(u),), {}, [u], node.clean, "pointwise")
    return Graph(nodes, graph.output)
