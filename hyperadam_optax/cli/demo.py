"""The quickstart demo: the paper's base MLP on embedded real MNIST, HyperAdam vs Adam."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperadam_optax.evaluation.protocol import run_protocol
from hyperadam_optax.io.pretrained import hyperadam, pretrained_card
from hyperadam_optax.tasks.data import mnist_data
from hyperadam_optax.tasks.mlp import mnist_mlp

#: Adam's rate tuned by the authors for the sigmoid MLP (2^-5, reference notes).
ADAM_LR = 2.0**-5


def training_curves(tx: optax.GradientTransformation, x: jax.Array, y: jax.Array, *,
                    steps: int, runs: int, seed: int, activation: str = "sigmoid") -> np.ndarray:
    """Minibatch losses ``(runs, steps)`` of the 784-20-10 MLP (batch 128) trained by ``tx``:
    the evaluation protocol's runs (one compiled program, paired seeds)."""
    family = mnist_mlp(x, y, activation=activation)
    return run_protocol(lambda _: tx, family, steps=steps, runs=runs, seed=seed).curve


def demo_optimizers(hyperadam_lr: float, adam_lr: float) -> dict:
    """``{label: transform}``: HyperAdam with the shipped meta-parameters, and Adam."""
    return {
        f"HyperAdam (pretrained), lr {hyperadam_lr:g}": hyperadam(hyperadam_lr),
        f"Adam, lr {adam_lr:g}": optax.adam(adam_lr),
    }


def run_demo(steps: int = 200, runs: int = 10, seed: int = 0, out: str | None = "demo.png",
             hyperadam_lr: float = 0.005, adam_lr: float = ADAM_LR,
             log: Callable[[str], None] = print) -> dict[str, np.ndarray]:
    """Train with each optimizer, print a loss table, save a loss-curve PNG to ``out``."""
    data = mnist_data(None, "train")[0]
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    log(f"MLP 784-20-10 sigmoid, batch 128, on the embedded real MNIST ({x.shape[0]} training "
        f"images); {runs} runs x {steps} steps per optimizer, seed {seed}.")
    card = pretrained_card("hyperadam")
    log(f"HyperAdam's shipped meta-parameters: meta-step {card['chosen_checkpoint']['meta_step']} "
        f"of `{card['command']}`.")
    curves = {}
    optimizers = demo_optimizers(hyperadam_lr, adam_lr)
    try:
        from tqdm.auto import tqdm

        items = tqdm(optimizers.items(), desc="optimizers", file=sys.stderr)
    except ModuleNotFoundError:
        items = optimizers.items()
    for label, tx in items:
        curves[label] = training_curves(tx, x, y, steps=steps, runs=runs, seed=seed)
    log(loss_table(curves))
    if out:
        plot_curves(curves, out)
        log(f"loss curves saved to {os.path.abspath(out)}")
    return curves


def loss_table(curves: dict[str, np.ndarray]) -> str:
    """Markdown table of the mean minibatch loss (± standard error over runs)."""
    steps = next(iter(curves.values())).shape[1]
    marks = sorted({1, *(s for s in (10, 50, 100, 200, 500, 1000) if s < steps), steps})
    header = "| optimizer | " + " | ".join(f"step {s}" for s in marks) + " |"
    lines = [header, "|---" * (len(marks) + 1) + "|"]
    for label, c in curves.items():
        cells = []
        for s in marks:
            window = c[:, max(0, s - 10):s].mean(axis=1)  # smooth minibatch noise
            cells.append(f"{window.mean():.3f} ± {window.std(ddof=1) / np.sqrt(len(window)):.3f}"
                         if len(window) > 1 else f"{window.mean():.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    note = "(mean over runs of the minibatch loss averaged over the 10 steps up to each mark)"
    diverged = [f"{label}: {n} of {len(c)} runs" for label, c in curves.items()
                if (n := int(np.sum(~np.isfinite(c[:, -1]) | (c[:, -10:].mean(axis=1) > c[:, 0]))))]
    if diverged:
        note += ("\nDIVERGED (loss not finite, or its last 10 steps above its first): "
                 + "; ".join(diverged))
    return "\n".join([*lines, note])


def plot_curves(curves: dict[str, np.ndarray], path: str) -> None:
    # The object-oriented API: no pyplot, so the caller's backend (e.g. a notebook's
    # inline one) is never switched.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for label, c in curves.items():
        mean = c.mean(axis=0)
        se = c.std(axis=0, ddof=1) / np.sqrt(c.shape[0]) if c.shape[0] > 1 else 0 * mean
        t = np.arange(1, c.shape[1] + 1)
        ax.plot(t, mean, label=label)
        ax.fill_between(t, mean - se, mean + se, alpha=0.25)
    ax.set_xlabel("step")
    ax.set_ylabel("minibatch loss")
    ax.set_yscale("log")
    ax.set_title("MLP 784-20-10 (sigmoid) on MNIST-5k")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
