"""Adam's decay rates and learning rate on HyperAdam's VALIDATION tasks (not a reported table).

How the shipped HyperAdam's warm start (``--warm-start-betas``, ``--warm-start-step``) was
chosen: the protocol's score (final parameters' loss over the minibatches seen, 100 steps)
of Adam on the base MNIST MLP (4,000 training images), 32 runs with the validation seed
``VALIDATION_SEED``, for a grid of ``(b1, b2)`` and rates. Prints a markdown table;
``--meta-params`` also scores HyperAdam meta-parameter files (``.npz``), ``--warm-start``
HyperAdam's Adam warm start, both at the default rate; ``--seed`` other tasks than validation's,
``--no-adam`` skips the Adam grid.

    python research/warm_start_probe.py [--meta-params runs/x/best_meta_params.npz ...]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax

import hyperadam_optax as ha
from hyperadam_optax.evaluation import run_protocol
from hyperadam_optax.meta import VALIDATION_SEED
from hyperadam_optax.tasks import mnist_mlp
from hyperadam_optax.tasks.data import mnist_5k_split

BETAS = [(0.9, 0.999), (0.9, 0.99), (0.9, 0.95), (0.8, 0.999), (0.8, 0.95), (0.8, 0.9),
         (0.7, 0.9), (0.5, 0.9)]
RATES = [2.0 ** -6, 2.0 ** -5.5, 2.0 ** -5, 2.0 ** -4.5, 2.0 ** -4]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=VALIDATION_SEED)
    parser.add_argument("--no-adam", action="store_true", help="skip the Adam grid")
    parser.add_argument("--meta-params", nargs="*", default=[],
                        help="HyperAdam meta-parameter files to score as well")
    parser.add_argument("--warm-start", nargs="*", default=[], metavar="B1,B2,STEP",
                        help="HyperAdam's Adam warm start(s) to score as well")
    args = parser.parse_args(argv)
    train = mnist_5k_split()[0]
    family = mnist_mlp(train.x, train.y)
    candidates = {path: ha.load_meta_params(path) for path in args.meta_params}
    for text in args.warm_start:
        b1, b2, step = (float(v) for v in text.split(","))
        candidates[f"warm start {text}"] = ha.init_meta_params(
            jax.random.key(0), 20, "adam", warm_start_step=step, warm_start_betas=(b1, b2))
    for name, theta in candidates.items():
        result = run_protocol(lambda _, theta=theta: ha.hyperadam(meta_params=theta), family,
                              steps=args.steps, runs=args.runs, seed=args.seed)
        print(f"HyperAdam {name}: {result.mean:.4f} ± {result.stderr:.4f}", flush=True)
    if args.no_adam:
        return
    print("| b1, b2 | " + " | ".join(f"lr {r:.4g}" for r in RATES) + " |")
    print("|---|" + "---:|" * len(RATES))
    for b1, b2 in BETAS:
        results = run_protocol(lambda lr, b1=b1, b2=b2: optax.adam(lr, b1=b1, b2=b2), family,
                               steps=args.steps, runs=args.runs, seed=args.seed,
                               hypers=RATES)
        cells = [f"{np.mean(r.final_loss):.4f}" for r in results]
        print(f"| {b1}, {b2} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
