"""Paired differences of one optimizer against one named baseline, from evaluation JSON files.

The evaluation tables compare every optimizer with the BEST baseline of each task; the
HyperAdam target compares it with tuned Adam. Runs are paired by seed (run i of every
optimizer sees the same initialisation and minibatches), so the standard error is that of the
per-run differences. Prints a markdown row per file.

    python scripts/paired_vs.py runs/eval-v3/table1.json runs/eval-v3-t2/table2.json \
        --optimizer hyperadam --baseline adam
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from hyperadam_optax.evaluation import RunResult, paired_difference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluations", nargs="+", help="table JSON files of `evaluate`")
    parser.add_argument("--optimizer", default="hyperadam")
    parser.add_argument("--baseline", default="adam")
    args = parser.parse_args()
    for path in args.evaluations:
        with open(path) as f:
            rows = json.load(f)
        by = {(r["task"], r["optimizer"]): RunResult(np.asarray(r["final_losses"]), np.empty(0))
              for r in rows}
        cells, tasks = [], list(dict.fromkeys(r["task"] for r in rows))
        for task in tasks:
            missing = [n for n in (args.optimizer, args.baseline) if (task, n) not in by]
            if missing:
                raise SystemExit(f"{path}: no {', '.join(missing)} on {task}")
            d, se = paired_difference(by[task, args.optimizer], by[task, args.baseline])
            verdict = "ahead" if d < -2 * se else "behind" if d > 2 * se else "level"
            cells.append(f"{task}: {d:+.4f} ± {se:.4f} ({verdict})")
        print(f"| {path} | {args.optimizer} - {args.baseline} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
