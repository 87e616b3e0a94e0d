"""Choose HyperAdam's decaying warm start on VALIDATION tasks only (no reported table).

The warm start ``init_meta_params(..., "adam", warm_start_step=S, warm_start_betas=(b1, b2),
warm_start_decay=(H, F))`` is Adam(b1, b2) whose rate ``0.005 · Σρ_t`` falls from ``0.005 S``
to ``0.005 S F`` over about H steps. This script reads that schedule off the warm start's
own LSTM clock and scores Adam with it (the same updates, much faster than HyperAdam; the
test suite checks the equality) by the protocol's score (final parameters' loss over the
minibatches seen, 100 steps, 32 runs, seed ``VALIDATION_SEED``) on the MNIST MLP with
activations the paper does not report (softplus, SiLU, GELU, leaky ReLU 0.1) and the sigmoid
MLP's validation runs. Prints one row per (H, F) and the mean over tasks per step S;
the chosen warm start is the lowest mean. ``--constant`` adds tuned constant-rate Adam rows;
``--meta-params`` scores HyperAdam meta-parameter files or meta-training checkpoints (at the
default rate) on the same tasks instead of the grid (how the shipped checkpoint was chosen
among a run's checkpoints); ``--seed`` scores on other runs than validation's.

    python research/decay_probe.py
    python research/decay_probe.py --meta-params runs/ha-decay-long/checkpoints/ckpt_*.npz
"""

from __future__ import annotations

import argparse
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

import hyperadam_optax as ha
from hyperadam_optax.evaluation import run_protocol
from hyperadam_optax.io import meta_params_from_checkpoint
from hyperadam_optax.meta import VALIDATION_SEED
from hyperadam_optax.tasks import VALIDATION_ACTIVATIONS as ACTIVATIONS
from hyperadam_optax.tasks import mnist_mlp
from hyperadam_optax.tasks.data import mnist_5k_split

STEPS = (2.0 ** -5 / 0.005, 2.0 ** -4.5 / 0.005, 2.0 ** -4 / 0.005)  # rates 2^-5, 2^-4.5, 2^-4
HORIZONS = (100, 150, 200)
FLOORS = (0.15, 0.25, 0.4)


def step_sizes(meta_params: ha.HyperAdamParams, steps: int) -> np.ndarray:
    """``Σ_j ρ_t^j`` for t = 1..steps of a warm start with ``warm_start_scale=0``: HyperAdam's
    direction on one coordinate whose gradient is always 1 (every candidate m̂ is then 1, and
    the LSTM, whose input kernels are zero, ignores the gradient)."""
    tx = ha.scale_by_hyperadam(meta_params)
    ones = jnp.ones(())

    def body(state, _):
        direction, state = tx.update(ones, state)
        return state, direction

    _, rho = jax.lax.scan(body, tx.init(ones), None, length=steps)
    return np.asarray(rho)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--seed", type=int, default=VALIDATION_SEED,
                        help="seed of the runs (default: the validation seed)")
    parser.add_argument("--betas", default="0.8,0.9", help="Adam's decay rates b1,b2")
    parser.add_argument("--meta-params", nargs="*", default=[],
                        help="score these HyperAdam meta-parameter files (.npz, or meta-"
                             "training checkpoints) instead of the warm-start grid")
    parser.add_argument("--constant", action="store_true",
                        help="also score constant-rate Adam(b1, b2) and Adam(0.9, 0.999)")
    args = parser.parse_args(argv)
    b1, b2 = (float(v) for v in args.betas.split(","))
    train = mnist_5k_split()[0]
    families = {a: mnist_mlp(train.x, train.y, activation=a) for a in ACTIVATIONS}

    def score(make):
        """(tasks, len(STEPS)) protocol scores of ``make(step) -> optax transformation``."""
        return np.array([[np.mean(r.final_loss) for r in run_protocol(
            make, fam, steps=100, runs=args.runs, seed=args.seed,
            hypers=list(STEPS))] for fam in families.values()])

    if args.meta_params:
        print("| meta-parameters | mean | " + " | ".join(ACTIVATIONS) + " |")
        print("|---|" + "---:|" * (1 + len(ACTIVATIONS)))
        for path in args.meta_params:
            theta = (meta_params_from_checkpoint(path) if os.path.basename(path).startswith("ckpt_")
                     else ha.load_meta_params(path))
            scores = [run_protocol(lambda _, t=theta: ha.hyperadam(meta_params=t), fam, steps=100,
                                   runs=args.runs, seed=args.seed).mean
                      for fam in families.values()]
            print(f"| {path} | {np.mean(scores):.4f} | "
                  + " | ".join(f"{x:.4f}" for x in scores) + " |", flush=True)
        return

    def row(label, table):
        best = int(np.argmin(table.mean(0)))
        print(f"| {label} | " + " | ".join(f"{m:.4f}" for m in table.mean(0)) + " | "
              + " | ".join(f"{x:.4f}" for x in table[:, best]) + " |", flush=True)

    print("| rate schedule (H: horizon, F: floor) | "
          + " | ".join(f"mean, 2^{np.log2(0.005 * s):g}" for s in STEPS) + " | "
          + " | ".join(f"{a} at best" for a in ACTIVATIONS) + " |")
    print("|---|" + "---:|" * (len(STEPS) + len(ACTIVATIONS)))
    if args.constant:
        for c1, c2 in ((b1, b2), (0.9, 0.999)):
            row(f"constant Adam({c1}, {c2})",
                score(lambda s, c1=c1, c2=c2: optax.adam(0.005 * s, b1=c1, b2=c2)))
    for horizon, floor in itertools.product(HORIZONS, FLOORS):
        theta = ha.init_meta_params(jax.random.key(0), 20, "adam", warm_start_scale=0.0,
                                    warm_start_step=1.0, warm_start_betas=(b1, b2),
                                    warm_start_decay=(horizon, floor))
        shape = step_sizes(theta, 100)  # Σρ_t of the warm start with step 1

        def make(step, shape=shape):
            return optax.adam(lambda count: 0.005 * step * jnp.asarray(shape)[count],
                              b1=b1, b2=b2)
        row(f"decay H {horizon}, F {floor}", score(make))


if __name__ == "__main__":
    main()
