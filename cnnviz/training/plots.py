"""Plotly figures of training runs (no Streamlit): the live curves, the LR finder, the search."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .loop import Record


def moving_average(values: Sequence[float], window: int = 20) -> np.ndarray:
    """Trailing mean over up to ``window`` values (the first ones average what there is)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def training_figure(records: Sequence[Record], title: str = "", max_points: int = 4000) -> go.Figure:
    """Four panels: loss per iteration (dots and moving average), train and validation accuracy per
    epoch, the learning rate, and the fraction of dead ReLU channels per layer."""
    its = [r for r in records if r.kind == "iteration"]
    eps = [r for r in records if r.kind == "epoch"]
    fig = make_subplots(rows=2, cols=2, subplot_titles=("Loss per iteration", "Accuracy per epoch",
                                                        "Learning rate", "Dead ReLU channels per layer"),
                        vertical_spacing=0.18, horizontal_spacing=0.08)
    if its:
        step = max(1, len(its) // max_points)
        x = [r.iteration for r in its]
        loss = [r.loss for r in its]
        fig.add_trace(go.Scattergl(x=x[::step], y=loss[::step], mode="markers", name="loss (mini-batch)",
                                   marker=dict(size=3, color="rgba(31,119,180,0.35)")), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=moving_average(loss, max(5, len(its) // 40 or 5)), mode="lines",
                                 name="moving average", line=dict(color="#1f77b4", width=2)), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=[r.lr for r in its], mode="lines", name="learning rate",
                                 line=dict(color="#9467bd"), showlegend=False), row=2, col=1)
        total = its[-1].total_iterations
        fig.update_xaxes(range=[0, max(total, x[-1]) * 1.02], row=1, col=1)
        fig.update_xaxes(range=[0, max(total, x[-1]) * 1.02], row=2, col=1)
    if eps:
        e = [r.epoch for r in eps]
        fig.add_trace(go.Scatter(x=e, y=[r.train_accuracy for r in eps], mode="lines+markers", name="train accuracy",
                                 line=dict(color="#ff7f0e")), row=1, col=2)
        fig.add_trace(go.Scatter(x=e, y=[r.val_accuracy for r in eps], mode="lines+markers",
                                 name="validation accuracy", line=dict(color="#2ca02c")), row=1, col=2)
        accs = [a for r in eps for a in (r.train_accuracy, r.val_accuracy) if a is not None]
        low = max(0.0, math.floor((min(accs) - 0.03) * 20) / 20) if accs else 0.0
        fig.update_yaxes(range=[low, 1.005], row=1, col=2)
        fig.update_xaxes(range=[0.5, max(e) + 0.5], row=1, col=2)
        fig.update_xaxes(range=[0.5, max(e) + 0.5], row=2, col=2)
        layers = list(eps[-1].dead_relu)
        for name in layers:
            fig.add_trace(go.Scatter(x=e, y=[r.dead_relu.get(name, math.nan) for r in eps], mode="lines+markers",
                                     name=f"dead: {name}"), row=2, col=2)
    fig.update_xaxes(title_text="iteration", row=1, col=1)
    fig.update_xaxes(title_text="epoch", dtick=1, row=1, col=2)
    fig.update_xaxes(title_text="iteration", row=2, col=1)
    fig.update_xaxes(title_text="epoch", dtick=1, row=2, col=2)
    fig.update_yaxes(title_text="cross-entropy", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", row=1, col=2)
    fig.update_yaxes(title_text="learning rate", exponentformat="power", row=2, col=1)
    fig.update_yaxes(title_text="fraction of channels", tickformat=".0%", range=[0, 1.02], row=2, col=2)
    fig.update_layout(height=560, title=title or None, margin=dict(l=10, r=10, t=60 if title else 40, b=10),
                      legend=dict(orientation="h", y=-0.12))
    return fig


def lr_finder_figure(lrs: Sequence[float], losses: Sequence[float], smoothed: Sequence[float],
                     suggestion: float) -> go.Figure:
    """Loss against learning rate on a log axis, with the suggested rate marked."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=lrs, y=losses, mode="markers", name="loss", marker=dict(size=4, opacity=0.4)))
    fig.add_trace(go.Scatter(x=lrs, y=smoothed, mode="lines", name="smoothed"))
    fig.add_vline(x=suggestion, line_dash="dash", line_color="green",
                  annotation_text=f"suggested {suggestion:.2g}", annotation_position="top left")
    top = float(np.nanpercentile(smoothed, 95)) if len(smoothed) else 1.0
    fig.update_layout(xaxis_type="log", xaxis_title="learning rate (log scale)", yaxis_title="loss",
                      yaxis_range=[0, max(top * 1.3, 0.1)], height=360, margin=dict(l=10, r=10, t=30, b=10),
                      legend=dict(orientation="h", y=-0.25))
    return fig


def search_figure(trials) -> go.Figure:
    """Validation accuracy of each trial at its (learning rate, weight decay), log axes."""
    fig = go.Figure()
    for stage, symbol in (("coarse", "circle"), ("fine", "diamond")):
        ts = [t for t in trials if t.stage == stage]
        if not ts:
            continue
        fig.add_trace(go.Scatter(
            x=[t.lr for t in ts], y=[t.weight_decay for t in ts], mode="markers", name=stage,
            marker=dict(size=14, symbol=symbol, color=[t.val_accuracy for t in ts], colorscale="Viridis", cmin=0,
                        cmax=1, showscale=stage == "coarse", colorbar=dict(title="val. acc.", tickformat=".0%"),
                        line=dict(width=1, color="black")),
            text=[f"{t.val_accuracy:.1%}" for t in ts], hovertemplate="lr %{x:.2g}, wd %{y:.2g}: %{text}"))
    fig.update_layout(xaxis_type="log", yaxis_type="log", xaxis_title="learning rate", yaxis_title="weight decay (L2)",
                      height=380, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.25))
    return fig
