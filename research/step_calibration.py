"""Take the common push out of meta-trained HyperAdam weights: rescale their step to the start's.

A readout trained on a task ensemble learns two things at once: how the step should differ
between tasks (adaptivity) and a common factor that moves every task's step the same way
(the "common push" of research/record.md). This script keeps the first and undoes the
second. On each family of ``--ensemble`` (training families, never the validation ones) it
traces ``--runs`` runs of both weight files (:func:`trace_hyperadam`) and compares their
total weight ``S = Σ_t Σ_j ρ_t,j`` (the summed step in units of α). The factor

    c = exp(mean_f log(S_start,f / S_weights,f))

is the geometric mean over families of the ratio, and the written file is ``weights`` with
the WeightCell scaled by it, ``θ_q ← c θ_q``, ``b_q ← c b_q``: since ``ρ = ELU(s θ_q + b_q)``
is linear in a positive argument, every positive weight ρ_t,j scales by exactly ``c``, so
the new weights take the start's step on average over the ensemble and keep the trained
weights' ratios between tasks (and their β_t, γ_t). The table printed shows the per-family
ratios before and after.

    python research/step_calibration.py research/runs/ha-sign-agreement/best_meta_params.npz \
        --start research/starts/hyperadam-sign-agreement.npz --out runs/calibrated.npz
"""

from __future__ import annotations

import argparse
import shlex
import sys

import numpy as np
from adaptivity import build_family, load_weights, trace_runs  # research/, this directory

from hyperadam_optax.io import save_meta_params
from hyperadam_optax.tasks.registry import ensemble_members


def total_weight(meta_params, kwargs, family, runs: int, steps: int, seed: int) -> float:
    """Mean over runs of ``Σ_t Σ_j ρ_t,j`` (the ρ of each step averaged over coordinates)."""
    return float(trace_runs(meta_params, kwargs, family, runs, steps, seed)["sum_rho"]
                 .sum(axis=1).mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights")
    p.add_argument("--start", required=True)
    p.add_argument("--ensemble", default="l2o-set-nets")
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    members = ensemble_members(args.ensemble)
    if any(name.startswith("val-") for name in members):
        p.error(f"--ensemble {args.ensemble} holds validation families; calibrate on "
                "training families only")
    start, trained = load_weights(args.start), load_weights(args.weights)
    print("| family | Σρ start | Σρ trained | ratio trained / start |")
    print("|---|---:|---:|---:|")
    log_ratios = []
    for name in members:
        family = build_family(name)
        s0 = total_weight(*start, family, args.runs, args.steps, args.seed)
        s1 = total_weight(*trained, family, args.runs, args.steps, args.seed)
        log_ratios.append(np.log(s1 / s0))
        print(f"| {name} | {s0:.3f} | {s1:.3f} | {s1 / s0:.3f} |", flush=True)
    c = float(np.exp(-np.mean(log_ratios)))
    print(f"\ngeometric mean ratio {1 / c:.4f}: c = {c:.4f}; ratios after scaling from "
          f"{np.exp(min(log_ratios)) * c:.3f} to {np.exp(max(log_ratios)) * c:.3f}")
    theta, kwargs = trained
    scaled = theta._replace(theta_q=theta.theta_q * c, b_q=theta.b_q * c)
    command = "python research/step_calibration.py " + shlex.join(sys.argv[1:])
    save_meta_params(args.out, scaled, {"make_kwargs": kwargs, "made_by": command,
                                        "step_scale": c})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
