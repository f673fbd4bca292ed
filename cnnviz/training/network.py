"""A configurable small CNN for training in the app: width, depth, activation, initialisation,
batch norm, dropout, and the lecture's structural regularisers (DropConnect, fractional max pooling,
stochastic depth on a residual variant).

The default (width 16, depth 2, two convolutions per block, ReLU, max pooling) is the layout of the
bundled ``SmallCNN`` (TinyVGG), with the same layer names (``features.0`` ... ``classifier.1``), so
every page addresses it the same way. Every random choice (initialisation, dropout masks, fractional
pooling regions, dropped residual blocks) draws from a ``torch.Generator`` attached to the network
(``attach_generator``), never from torch's global generator.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module] | None] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
"""Activations the trainable CNN offers, name -> module class."""

INITS = ("default", "kaiming", "xavier", "normal")
"""Initialisations: PyTorch's default, Kaiming/MSRA normal, Xavier/Glorot normal, N(0, σ²)."""

POOLS = ("max", "avg", "fractional")


@dataclass(frozen=True)
class NetConfig:
    """The architecture of the trainable small CNN.

    Attributes:
        width: channels of the first block; each further block doubles them.
        depth: blocks, each ending in a pooling that shrinks the feature maps (1 to 4).
        convs_per_block: 3×3 convolutions per block (plain variant).
        activation: a key of ``ACTIVATIONS``.
        init: a key of ``INITS``; ``init_std`` is σ for ``"normal"``.
        batch_norm: a BatchNorm2d after every convolution.
        dropout: probability of dropping a unit before the last linear layer (0: no dropout).
        pool: "max", "avg" or "fractional" (fractional max pooling, ratio 1/√2; Graham, 2014).
        residual: each block is a convolution followed by a residual unit (conv-act-conv + identity).
        stochastic_depth: residual only; the last block's unit is skipped with this probability in
            training, earlier ones linearly less often (Huang et al., 2016).
        dropconnect: probability of dropping each weight of the last linear layer in training
            (Wan et al., 2013).
    """

    width: int = 16
    depth: int = 2
    convs_per_block: int = 2
    activation: str = "relu"
    init: str = "kaiming"
    init_std: float = 0.01
    batch_norm: bool = False
    dropout: float = 0.0
    pool: str = "max"
    residual: bool = False
    stochastic_depth: float = 0.0
    dropconnect: float = 0.0

    def check(self) -> None:
        """Raise ``ValueError`` with a plain message for an impossible architecture."""
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}.")
        if self.init not in INITS:
            raise ValueError(f"Unknown initialisation {self.init!r}; choose one of {', '.join(INITS)}.")
        if self.pool not in POOLS:
            raise ValueError(f"Unknown pooling {self.pool!r}; choose one of {', '.join(POOLS)}.")
        if not 1 <= self.depth <= 4 or not 1 <= self.width <= 256 or not 1 <= self.convs_per_block <= 4:
            raise ValueError("Depth must be 1 to 4 blocks, width 1 to 256 channels, 1 to 4 convolutions per block.")
        for name in ("dropout", "stochastic_depth", "dropconnect"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name.replace('_', ' ')} must be a probability in [0, 1).")
        if self.stochastic_depth and not self.residual:
            raise ValueError("Stochastic depth drops residual units: switch on the residual variant.")


class _Random:
    """Mixin: a module whose training-time randomness draws from ``self.generator`` (None: global)."""

    generator: torch.Generator | None = None


class Dropout(_Random, nn.Module):
    """Inverted dropout with its own generator: in training, zero each unit with probability ``p``
    and scale the rest by 1/(1-p); identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropConnectLinear(_Random, nn.Linear):
    """A linear layer that, in training, zeros each weight with probability ``p`` (and scales the
    kept ones by 1/(1-p)); the full weights in eval mode (Wan et al., 2013)."""

    def __init__(self, in_features: int, out_features: int, p: float):
        super().__init__(in_features, out_features)
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return super().forward(x)
        keep = torch.empty_like(self.weight).bernoulli_(1.0 - self.p, generator=self.generator)
        return F.linear(x, self.weight * keep / (1.0 - self.p), self.bias)


class FractionalMaxPool(_Random, nn.Module):
    """Fractional max pooling (Graham, 2014): 2×2 max pools over pseudo-random regions that shrink
    the map by ``ratio`` (1/√2) instead of 1/2. Regions are random in training and fixed in eval."""

    def __init__(self, ratio: float = 1 / math.sqrt(2)):
        super().__init__()
        self.ratio = float(ratio)

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        if self.training:
            samples = torch.rand(n, c, 2, generator=self.generator, dtype=x.dtype, device=x.device)
        else:
            samples = torch.full((n, c, 2), 0.5, dtype=x.dtype, device=x.device)
        return F.fractional_max_pool2d(x, 2, output_ratio=(self.ratio, self.ratio), _random_samples=samples)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio:.3f}"


class Residual(_Random, nn.Module):
    """``activation(x + branch(x))``; with stochastic depth, in training the branch is skipped for
    the whole batch with probability ``drop``, and at test time it is scaled by 1 - ``drop``."""

    def __init__(self, branch: nn.Module, activation: nn.Module, drop: float = 0.0):
        super().__init__()
        self.branch, self.activation, self.drop = branch, activation, float(drop)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.drop > 0.0:
            if float(torch.rand((), generator=self.generator)) < self.drop:
                return self.activation(x)
            return self.activation(x + self.branch(x))
        return self.activation(x + (1.0 - self.drop) * self.branch(x))

    def extra_repr(self) -> str:
        return f"drop={self.drop}" if self.drop else ""


def _activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


def _conv_unit(cin: int, cout: int, config: NetConfig, activate: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1)]
    if config.batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    if activate:
        layers.append(_activation(config.activation))
    return layers


def _pool(config: NetConfig) -> nn.Module:
    if config.pool == "fractional":
        return FractionalMaxPool()
    return nn.MaxPool2d(2) if config.pool == "max" else nn.AvgPool2d(2)


class TrainableCNN(nn.Module):
    """The configurable small CNN: ``features`` (blocks) then ``classifier`` (flatten, [dropout], linear).

    Input (N, in_channels, size, size) -> logits (N, num_classes).
    """

    def __init__(self, config: NetConfig, in_channels: int = 1, num_classes: int = 10, size: int = 32):
        super().__init__()
        config.check()
        self.config = config
        layers: list[nn.Module] = []
        channels = in_channels
        for block in range(config.depth):
            out = config.width * 2**block
            if config.residual:
                branch = nn.Sequential(*_conv_unit(out, out, config), *_conv_unit(out, out, config, activate=False))
                drop = config.stochastic_depth * (block + 1) / config.depth
                layers += [*_conv_unit(channels, out, config), Residual(branch, _activation(config.activation), drop)]
            else:
                for i in range(config.convs_per_block):
                    layers += _conv_unit(channels if i == 0 else out, out, config)
            layers.append(_pool(config))
            channels = out
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            self.features.eval()
            flat = self.features(torch.zeros(1, in_channels, size, size)).numel()
            self.features.train()
        head: list[nn.Module] = [nn.Flatten()]
        if config.dropout:
            head.append(Dropout(config.dropout))
        head.append(DropConnectLinear(flat, num_classes, config.dropconnect) if config.dropconnect
                    else nn.Linear(flat, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def attach_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Make every random module of ``model`` (dropout, DropConnect, fractional pooling, stochastic
    depth) draw from ``generator``."""
    for module in model.modules():
        if isinstance(module, _Random):
            module.generator = generator


def _gain_name(activation: str) -> tuple[str, float]:
    if activation == "leaky_relu":
        return "leaky_relu", 0.01
    if activation in ("tanh", "sigmoid"):
        return activation, 0.0
    if activation == "selu":
        return "linear", 0.0  # LeCun normal, which SELU's self-normalisation assumes
    return "relu", 0.0


def initialize(model: nn.Module, init: str, activation: str = "relu", std: float = 0.01,
               generator: torch.Generator | None = None) -> None:
    """Re-initialise every convolution and linear layer of ``model`` in place, from ``generator``.

    Args:
        init: "default" (PyTorch's: Kaiming-uniform with a=√5, bias U(±1/√fan_in)), "kaiming"
            (He et al., 2015: N(0, gain²/fan_in), gain √2 for ReLU), "xavier" (Glorot & Bengio, 2010:
            N(0, 2/(fan_in + fan_out))) or "normal" (N(0, std²)). With "kaiming" and "xavier" the output
            layer starts at N(0, 0.01²), so the first predictions are nearly uniform and the initial loss is
            about log(C) (Karpathy, 2019). Biases are 0 except for "default".
        activation: picks the Kaiming gain.
    """
    if init not in INITS:
        raise ValueError(f"Unknown initialisation {init!r}; choose one of {', '.join(INITS)}.")
    nonlinearity, slope = _gain_name(activation)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        for module in layers:
            weight, bias = module.weight, module.bias
            if module is layers[-1] and init in ("kaiming", "xavier"):
                # the output layer starts small: nearly uniform first predictions, initial loss ≈ log(C)
                nn.init.normal_(weight, 0.0, 0.01, generator=generator)
                if bias is not None:
                    bias.zero_()
                continue
            if init == "default":
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
                if bias is not None:
                    fan_in = weight[0].numel()
                    nn.init.uniform_(bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=generator)
                continue
            if init == "kaiming":
                nn.init.kaiming_normal_(weight, a=slope, nonlinearity=nonlinearity, generator=generator)
            elif init == "xavier":
                nn.init.xavier_normal_(weight, generator=generator)
            else:
                nn.init.normal_(weight, 0.0, std, generator=generator)
            if bias is not None:
                bias.zero_()


def build_network(config: NetConfig, in_channels: int = 1, num_classes: int = 10, size: int = 32,
                  generator: torch.Generator | None = None) -> TrainableCNN:
    """The small CNN for ``config``, initialised from ``generator`` and attached to it (train mode).

    Raises:
        ValueError: for an impossible architecture (see ``NetConfig.check``).
    """
    model = TrainableCNN(config, in_channels, num_classes, size)
    initialize(model, config.init, config.activation, config.init_std, generator)
    attach_generator(model, generator)
    return model


def relu_layers(model: nn.Module) -> list[str]:
    """Names of the ReLU modules of ``model``, in order (for counting dead units)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.ReLU)]


def private_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` without the hooks another thread may have on the shared original."""
    clone = copy.deepcopy(module)
    for m in clone.modules():
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                     "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called"):
            hooks = getattr(m, name, None)
            if hooks is not None:
                hooks.clear()
    return clone
