"""Resource bounds: a computation asked for more than its bound is refused at once with a plain
ValueError naming the bound (``ui.run_or_explain`` shows it), before any work is done."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnviz.attribution import averaged_gradients as ag
from cnnviz.features import MAX_TSNE_ITER, embed_2d
from cnnviz.training.loop import MAX_BATCH_SIZE, MAX_EPOCHS, TrainConfig


class _Counting(nn.Module):
    """A tiny classifier that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 4 * 4, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("call, words", [
    (lambda m, x: ag.smoothgrad(m, x, 0, samples=ag.MAX_SAMPLES + 1), f"1 to {ag.MAX_SAMPLES} samples"),
    (lambda m, x: ag.smoothgrad(m, x, 0, samples=0), f"1 to {ag.MAX_SAMPLES} samples"),
    (lambda m, x: ag.integrated_gradients(m, x, 0, steps=ag.MAX_STEPS + 1), f"1 to {ag.MAX_STEPS} steps"),
])
def test_averaged_gradients_refuse_beyond_their_bound_before_any_pass(call, words):
    model, x = _Counting().eval(), torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match=words):
        call(model, x)
    assert model.calls == 0


def test_averaged_gradients_run_at_their_bound():
    model, x = _Counting().eval(), torch.rand(1, 3, 4, 4)
    ag.integrated_gradients(model, x, 0, steps=ag.MAX_STEPS, batch_size=1001)
    assert model.calls == 1  # 1001 path points in one batch


def test_tsne_iterations_are_bounded(monkeypatch):
    import sklearn.manifold

    def never(*args, **kwargs):
        raise AssertionError("t-SNE started")

    monkeypatch.setattr(sklearn.manifold, "TSNE", never)
    points = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    with pytest.raises(ValueError, match=f"250 to {MAX_TSNE_ITER} iterations"):
        embed_2d(points, "tsne", perplexity=5, max_iter=MAX_TSNE_ITER + 1)
    with pytest.raises(AssertionError, match="t-SNE started"):  # within the bound it does start
        embed_2d(points, "tsne", perplexity=5, max_iter=MAX_TSNE_ITER)


@pytest.mark.parametrize("kwargs", [{"epochs": MAX_EPOCHS + 1}, {"batch_size": MAX_BATCH_SIZE + 1}])
def test_training_runs_are_bounded(kwargs):
    with pytest.raises(ValueError, match=f"at most {MAX_EPOCHS} epochs"):
        TrainConfig(**kwargs).check()
    TrainConfig(epochs=MAX_EPOCHS, batch_size=MAX_BATCH_SIZE).check()  # the bounds themselves are allowed
