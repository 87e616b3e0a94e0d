"""The learning rate a tuned baseline wants on each family of an ensemble (and the validation
families): where the training distribution pulls a learned optimizer's step size.

For each family, ``tune_learning_rate`` (the evaluation suite's tuner: sqrt(2) grid, tuning
seeds) picks the baseline's rate with the lowest mean final loss after ``--steps`` steps;
the table prints it with the ratio to the start's peak rate (HyperAdam's hand-set warm start:
8.8388 x 0.005 = 0.0442, falling to a quarter over 100 steps, which is
``adam-0.8-0.9-decay``).

    python research/tuned_rates.py --ensemble l2o-set-nets --cache runs/rates/cache.json
"""

import argparse
import math

from hyperadam_optax.evaluation.baselines import tune_learning_rate
from hyperadam_optax.tasks.registry import build_families, ensemble_members

START_PEAK = 8.8388 * 0.005


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ensemble", default="l2o-set-nets",
                   help="an ensemble, 'validation' or comma-separated tasks")
    p.add_argument("--baseline", default="adam-0.8-0.9-decay")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None)
    args = p.parse_args(argv)

    families, _ = build_families(args.ensemble)
    print(f"| family | tuned {args.baseline} rate ({args.steps} steps) | "
          f"rate / {START_PEAK:.3g} |")
    print("|---|---:|---:|")
    logs = []
    for name in ensemble_members(args.ensemble):
        family = families[name]
        rate = tune_learning_rate(args.baseline, family, steps=args.steps, runs=args.runs,
                                  seed=args.seed, cache_path=args.cache)
        logs.append(math.log(rate / START_PEAK))
        print(f"| {name} | {rate:.4g} | {rate / START_PEAK:.3g} |", flush=True)
    print(f"| geometric mean | | {math.exp(sum(logs) / len(logs)):.3g} |")


if __name__ == "__main__":
    main()
