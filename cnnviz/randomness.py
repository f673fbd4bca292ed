"""Seeded random draws that leave the process's global random generator alone.

A model's random weights come from ``torch.nn.init`` and from each layer's ``reset_parameters``,
which draw from torch's global generator. Seeding that generator (``torch.manual_seed``) while a
server runs would change the random numbers of every other thread, and two models built at once
would interleave their draws. Inside ``seeded(seed)`` every random draw made *in this thread*
gets a private ``torch.Generator`` instead: a thread-local ``TorchFunctionMode`` passes it as the
``generator`` argument. The draws come in the same order as they would from the global generator
seeded with ``seed``, so the weights are identical to those of ``torch.manual_seed(seed)``.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable, Iterator

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

_BUILTIN_DRAWS = {
    torch.rand, torch.randn, torch.randint, torch.randperm, torch.normal, torch.bernoulli, torch.multinomial,
    torch.poisson, torch.rand_like, torch.randn_like, torch.randint_like,
    Tensor.normal_, Tensor.uniform_, Tensor.random_, Tensor.bernoulli_, Tensor.bernoulli, Tensor.exponential_,
    Tensor.geometric_, Tensor.log_normal_, Tensor.cauchy_, Tensor.multinomial,
}
"""torch builtins that draw random numbers and take a ``generator`` keyword."""


def _takes_generator(func: Callable) -> bool:
    """True for a random draw that accepts ``generator=`` (``torch.nn.init.*``, ``torch.randn``, ...)."""
    try:
        return _takes_generator_cached(func)
    except TypeError:  # unhashable: no random draw is
        return False


@lru_cache(maxsize=512)
def _takes_generator_cached(func: Callable) -> bool:
    if func in _BUILTIN_DRAWS:
        return True
    try:
        return "generator" in inspect.signature(func).parameters
    except (TypeError, ValueError):  # a builtin without a Python signature: not a draw we know
        return False


class _PrivateGenerator(TorchFunctionMode):
    """Hands ``generator`` to every random draw in this thread that does not name its own."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.generator = generator

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = dict(kwargs or {})
        if kwargs.get("generator") is None and _takes_generator(func):
            kwargs["generator"] = self.generator
        return func(*args, **kwargs)


@contextmanager
def seeded(seed: int) -> Iterator[torch.Generator]:
    """Within the block, this thread's random draws come from a private generator seeded ``seed``.

    Other threads, and the global generator, are untouched. Example: ``with seeded(0): net = Net()``
    gives the weights that ``torch.manual_seed(0); net = Net()`` gives.

    Returns:
        (yields) the private generator.
    """
    generator = torch.Generator().manual_seed(int(seed))
    with _PrivateGenerator(generator):
        yield generator
