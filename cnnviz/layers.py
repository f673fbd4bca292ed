"""What a model is made of: layer names and a layer table from one forward pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from .device import module_device
from .hooks import forward_hooks


def layer_names(model: nn.Module, leaves_only: bool = False) -> list[str]:
    """Names of the model's submodules in definition order (the root excluded).

    Args:
        leaves_only: keep only modules without children (convs, ReLUs, ...).
    """
    return [
        name
        for name, module in model.named_modules()
        if name and (not leaves_only or not any(True for _ in module.children()))
    ]


@dataclass(frozen=True)
class LayerRow:
    name: str
    type: str
    output_shape: tuple[int, ...] | None
    parameters: int
    depth: int


def layer_table(model: nn.Module, input_size: tuple[int, int, int]) -> list[LayerRow]:
    """Every submodule with its type, output shape and parameter count.

    One forward pass of a zero input of ``input_size`` (C, H, W) measures the output shapes
    (batch dimension included). A module that is not called has ``output_shape`` None; a module
    called several times reports its last call. Parameters are counted with the module's children.
    """
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            if isinstance(output, Tensor):
                shapes[name] = tuple(output.shape)

        return hook

    names = layer_names(model)
    with forward_hooks(model, {name: record(name) for name in names}), torch.inference_mode():
        model(torch.zeros(1, *input_size, device=module_device(model)))
    modules = dict(model.named_modules())
    return [
        LayerRow(
            name=name,
            type=type(modules[name]).__name__,
            output_shape=shapes.get(name),
            parameters=sum(p.numel() for p in modules[name].parameters()),
            depth=name.count("."),
        )
        for name in names
    ]


def spatial_layers(rows: Sequence[LayerRow], containers: bool = True) -> dict[str, int]:
    """Layers whose output is a stack of feature maps (N, C, H, W), in order: name -> channels.

    Args:
        rows: a ``layer_table``.
        containers: keep ``Sequential`` containers (their output is their last child's).
    """
    return {
        row.name: row.output_shape[1]
        for row in rows
        if row.output_shape and len(row.output_shape) == 4 and (containers or row.type != "Sequential")
    }
