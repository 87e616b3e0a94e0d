"""The plot of a meta-training run: meta-loss per meta-step and validation loss."""

from __future__ import annotations

import numpy as np


def metrics_figure(history: list[dict]):
    """A matplotlib ``Figure`` of the run's metrics rows: the meta-loss per meta-step (with
    a running mean over about a fiftieth of the run) and the validation loss."""
    # The object-oriented API: no pyplot, so the caller's backend (e.g. a notebook's
    # inline one) is never switched.
    from matplotlib.figure import Figure

    train = [(r["step"], r["meta_loss"]) for r in history if "meta_loss" in r]
    val = [(r["step"], r["validation_loss"]) for r in history if "validation_loss" in r]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    if train:
        s, v = map(np.asarray, zip(*train))
        ax.plot(s, v, alpha=0.3, label="meta-loss (per meta-step)")
        w = max(1, len(v) // 50)
        if w > 1:
            ax.plot(s[w - 1:], np.convolve(v, np.ones(w) / w, mode="valid"),
                    label=f"meta-loss (running mean of {w})")
    if val:
        s, v = zip(*val)
        ax.plot(s, v, "o-", label="validation loss")
    ax.set_xlabel("meta-step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_metrics(history: list[dict], path: str) -> None:
    """:func:`metrics_figure` written to ``path`` (PNG, 770 x 495 pixels)."""
    metrics_figure(history).savefig(path, dpi=110)
