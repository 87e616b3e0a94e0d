"""Does HyperAdam adapt its step to the task? Traces of β_t, γ_t and ρ_t on validation tasks.

The paper's claim (Sec. 3): the learned optimizer chooses, per step, the decay rates β_t, γ_t
of its J Adam-like candidates and their weights ρ_t from what it sees. If it does, the traces
differ between tasks by more than they differ between runs of one task. For each weight file
and each task this script traces ``--runs`` runs (:func:`trace_hyperadam`) and summarises each
run by three numbers over the steps: the mean over candidates of β_t, of γ_t, and the total
weight Σ_j ρ_t,j (the step size in units of α, for unit-RMS moments). It prints, per pair of
tasks, the difference of the run means with its standard error, and draws the mean traces
(± one standard deviation over runs) to ``--figure``.

    python research/adaptivity.py --figure docs/figures/adaptivity.png \
        --meta-params shipped=hyperadam_optax/pretrained/hyperadam.npz
"""

from __future__ import annotations

import argparse
import itertools

import jax
import numpy as np

from hyperadam_optax.evaluation import trace_hyperadam
from hyperadam_optax.io import load_meta_params, make_kwargs_of
from hyperadam_optax.tasks.data import mnist_data
from hyperadam_optax.tasks.registry import get_task

QUANTITIES = ("beta", "gamma", "sum_rho")


def summarise(trace: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-step curves (steps,) of the three quantities."""
    return {"beta": trace["beta"].mean(axis=1), "gamma": trace["gamma"].mean(axis=1),
            "sum_rho": trace["rho"].sum(axis=1), "loss": trace["loss"]}


def build_family(task: str):
    """The registry's family ``task``, on the embedded MNIST training split if it needs data."""
    spec = get_task(task)
    if not spec.needs_data:
        return spec.build(None)
    train = mnist_data(None, "train")[0]
    return spec.build((train.x, train.y))


def load_weights(path):
    """``(meta_params, alias arguments)`` of a weight file (e.g. its ``normalization``)."""
    meta_params, metadata = load_meta_params(path, with_metadata=True)
    return meta_params, make_kwargs_of(metadata)


def trace_runs(meta_params, kwargs, family, runs: int, steps: int, seed: int):
    keys = jax.random.split(jax.random.key(seed), runs)
    curves = [summarise(trace_hyperadam(meta_params, family, k, steps, **kwargs)) for k in keys]
    return {q: np.stack([c[q] for c in curves]) for q in (*QUANTITIES, "loss")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--meta-params", nargs="+", required=True, metavar="LABEL=PATH")
    p.add_argument("--tasks", default="val-digits-tanh-wide,val-digits-linear,"
                                      "val-noisy-quadratic")
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--figure", default=None)
    args = p.parse_args(argv)
    tasks = args.tasks.split(",")
    weights = dict(item.split("=", 1) for item in args.meta_params)
    families = {t: build_family(t) for t in tasks}
    loaded = {label: load_weights(path) for label, path in weights.items()}  # each file once
    traces = {(label, t): trace_runs(*loaded[label], families[t], args.runs, args.steps,
                                     args.seed)
              for label in weights for t in tasks}

    marks = (1, min(50, args.steps), args.steps)
    print("| weights | task | mean β_t | mean γ_t | mean Σρ_t | Σρ_t at steps "
          f"{' / '.join(map(str, marks))} |")
    print("|---|---|---:|---:|---:|---|")
    for (label, t), tr in traces.items():
        per_run = {q: tr[q].mean(axis=1) for q in QUANTITIES}
        cells = [f"{per_run[q].mean():.4f} ± {per_run[q].std(ddof=1) / np.sqrt(args.runs):.4f}"
                 for q in QUANTITIES]
        at = " / ".join(f"{tr['sum_rho'][:, i - 1].mean():.3f}" for i in marks)
        print(f"| {label} | {t} | {' | '.join(cells)} | {at} |")
    print()
    print("| weights | tasks A - B | Δ mean β_t (z) | Δ mean γ_t (z) | Δ mean Σρ_t (z) |")
    print("|---|---|---:|---:|---:|")
    for label in weights:
        for a, b in itertools.combinations(tasks, 2):
            cells = []
            for q in QUANTITIES:
                xa, xb = traces[(label, a)][q].mean(axis=1), traces[(label, b)][q].mean(axis=1)
                diff = xa.mean() - xb.mean()
                se = np.sqrt(xa.var(ddof=1) / len(xa) + xb.var(ddof=1) / len(xb))
                z = f"{diff / se:+.1f}" if se > 0 else ("identical" if diff == 0 else "+inf")
                cells.append(f"{diff:+.4f} ({z})")
            print(f"| {label} | {a} - {b} | {' | '.join(cells)} |")

    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(len(weights), 4, figsize=(16, 3.4 * len(weights)),
                                 squeeze=False)
        titles = {"loss": "minibatch loss", "beta": "mean β_t", "gamma": "mean γ_t",
                  "sum_rho": "Σ_j ρ_t,j"}
        for row, label in zip(axes, weights):
            for ax, q in zip(row, ("loss", *QUANTITIES)):
                for t in tasks:
                    c = traces[(label, t)][q]
                    x = np.arange(1, c.shape[1] + 1)
                    m, s = c.mean(axis=0), c.std(axis=0)
                    ax.plot(x, m, label=t, lw=1)
                    ax.fill_between(x, m - s, m + s, alpha=0.2)
                if q == "loss":
                    ax.set_yscale("log")
                ax.set_title(f"{label}: {titles[q]}")
                ax.set_xlabel("step")
            row[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=90)
        print(f"\nwrote {args.figure}")


if __name__ == "__main__":
    main()
