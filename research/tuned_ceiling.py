"""How far a learned optimizer can get against tuned Adam if only its step size were tuned
per task: the ceiling of any rate adaptivity over the schedule and directions its weights
already make.

For each family, the learned optimizer's update is multiplied by a constant ``c`` and ``c``
is tuned exactly as Adam's rate is (``search_grid``: the lowest mean final loss on the tuning
seeds, a sqrt(2) grid from 1/16 to 16 extended while the best is at an end). Then ``--runs``
paired runs on the reported seeds at ``c = 1`` (the weights as shipped) and at the tuned
``c``, each minus tuned Adam (its rate from ``--cache``, tuned there if missing), with the
suite's verdict (ahead / behind: more than 2 s.e., paired). If the tuned ``c`` still leaves
the optimizer behind Adam on a family, no learned per-task rate on top of these weights can
put it ahead there: the shape of its steps (schedule, momenta) has to change.

    python research/tuned_ceiling.py --optimizers hyperadam,l2o_scale \\
        --cache research/tuning_cache_validation.json --out runs/ceiling.json
"""

import argparse
import json
import math
import time

import numpy as np
import optax

from hyperadam_optax.evaluation import (
    paired_comparison,
    parse_optimizers,
    run_protocol,
    search_grid,
    suite_tasks,
    tune_learning_rate,
)
from hyperadam_optax.tasks.data import mnist_data
from hyperadam_optax.tasks.registry import REPORT_FAMILIES, VALIDATION_FAMILIES, get_task

#: Step factors tried first: sqrt(2) apart from 1/16 to 16.
FACTOR_GRID = tuple(float(2.0 ** (k / 2)) for k in range(-8, 9))


def scaled(make):
    """``c -> make()`` with its updates times ``c`` (a traced scalar)."""
    return lambda c: optax.chain(make(), optax.scale(c))


def cell(comparison: tuple[float, float, str], factor: float | None = None) -> str:
    """``mean ± s.e. verdict`` of one paired comparison, with the tuned factor if any."""
    d, se, verdict = comparison
    return f"{d:+.4f} ± {se:.4f} {verdict}" + (f" (x{factor:.3g})" if factor else "")


def counts(comparison: dict, families) -> str:
    verdicts = [comparison[f][2] for f in families if f in comparison]
    return " / ".join(str(verdicts.count(v)) for v in ("ahead", "level", "behind"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--optimizers", required=True,
                   help="learned optimizers as `evaluate` names them (hyperadam, NAME:PATH.npz)")
    p.add_argument("--tasks", default=",".join(VALIDATION_FAMILIES))
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--steps", type=int, default=200,
                   help="steps per run (a long-horizon family runs its own)")
    p.add_argument("--tune-runs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="Adam's tuning cache (JSON)")
    p.add_argument("--out", default=None, help="write the numbers here (JSON)")
    args = p.parse_args(argv)

    entries = parse_optimizers(args.optimizers.split(","))
    if any(e.make is None for e in entries):
        raise SystemExit("--optimizers: learned optimizers only (Adam is the reference)")
    tasks = args.tasks.split(",")
    unknown = sorted(set(tasks) - set(VALIDATION_FAMILIES))
    if unknown:
        raise SystemExit(f"--tasks: {unknown} are not validation families "
                         f"({', '.join(VALIDATION_FAMILIES)})")
    train = mnist_data(None, "train")[0]
    families = suite_tasks("validation", (train.x, train.y))
    results, factors, rows = {}, {}, []
    for task in tasks:
        family, steps = families[task], get_task(task).horizon or args.steps
        lr = tune_learning_rate("adam", family, steps=steps, runs=args.tune_runs,
                                seed=args.seed, cache_path=args.cache)
        results[task] = {"adam": run_protocol(lambda _h, lr=lr: optax.adam(lr), family,
                                              steps=steps, runs=args.runs, seed=args.seed)}
        for entry in entries:
            start = time.time()
            best, _ = search_grid(scaled(entry.make), family, steps=steps, runs=args.tune_runs,
                                  seed=args.seed, grid=FACTOR_GRID)
            shipped, tuned = run_protocol(scaled(entry.make), family, steps=steps,
                                          runs=args.runs, seed=args.seed, hypers=(1.0, best))
            results[task][entry.label] = shipped
            results[task][entry.label + " tuned"] = tuned
            factors.setdefault(entry.label, {})[task] = best
            now, then = (paired_comparison({task: results[task]}, label, "adam")[task]
                         for label in (entry.label, entry.label + " tuned"))
            print(f"{task}: {entry.label}: {cell(now)}; step tuned: {cell(then, best)} "
                  f"({time.time() - start:.0f} s)", flush=True)
    print("\nMinus tuned Adam, paired over", args.runs, "runs (report families:",
          ", ".join(f for f in tasks if f in REPORT_FAMILIES) + ")\n")
    print("| optimizer | " + " | ".join(tasks) + " | report: ahead / level / behind "
          "| selection |")
    print("|---|" + "---:|" * len(tasks) + "---|---|")
    report = [t for t in tasks if t in REPORT_FAMILIES]
    selection = [t for t in tasks if t not in REPORT_FAMILIES]
    for entry in entries:
        for label, tuned in ((entry.label, None), (entry.label + " tuned", factors[entry.label])):
            c = paired_comparison(results, label, "adam")
            cells = [cell(c[t], tuned and tuned[t]) for t in tasks]
            rows.append({"optimizer": label, "comparison": c, "factors": tuned})
            print(f"| {label} | " + " | ".join(cells) + f" | {counts(c, report)} "
                  f"| {counts(c, selection)} |")
    geo = {e.label: math.exp(np.mean([math.log(v) for v in factors[e.label].values()]))
           for e in entries}
    print("\ngeometric mean of the tuned factors:",
          ", ".join(f"{k} {v:.3g}" for k, v in geo.items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows,
                       "final_losses": {t: {k: r.final_loss.tolist() for k, r in v.items()}
                                        for t, v in results.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
