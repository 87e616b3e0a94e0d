"""Ship a meta-training run's chosen meta-parameters inside the package, with a JSON card.

    # 1. copy the checkpoint chosen by validation (best_meta_params.npz) and write the card
    python release/ship_pretrained.py weights --run runs/ha-ws3-cos --name hyperadam
    # 2. after `hyperadam-optax evaluate ... --optimizers ...,hyperadam`, add the scores
    python release/ship_pretrained.py scores --name hyperadam --label hyperadam \
        --evaluation runs/eval-pretrained/table1.json --command "hyperadam-optax evaluate ..."

Writes ``hyperadam_optax/pretrained/{name}.npz`` (``save_meta_params``, the card as its
metadata) and ``hyperadam_optax/pretrained/{name}.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib

import numpy as np

from hyperadam_optax.evaluation import BASELINES
from hyperadam_optax.io import (
    PRETRAINED,
    load_meta_params,
    meta_params_from_checkpoint,
    save_meta_params,
)

PRETRAINED_DIR = pathlib.Path(__file__).resolve().parents[1] / "hyperadam_optax" / "pretrained"


_METRICS = {"mean": "mean loss over the trajectory",
            "final": "the protocol's loss of the final parameters"}


def _write_card(name: str, card: dict, meta_params=None) -> None:
    """Write the card as ``{name}.json`` and as the metadata of ``{name}.npz``."""
    if meta_params is None:
        meta_params = load_meta_params(PRETRAINED_DIR / f"{name}.npz")
    save_meta_params(PRETRAINED_DIR / f"{name}.npz", meta_params, card)
    (PRETRAINED_DIR / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")


def _init_from(run_card: dict, init_from_runs: list[str] | None) -> dict:
    """Where a run started with ``--init-from`` took its meta-parameters: the earlier run's
    commands and chosen step, checked against the SHA-256 in the run's config, and so on back
    along ``init_from_runs`` (nearest first) while each started from another's file. A
    directory may hold a shipped card (``card.json`` with ``commands`` and
    ``chosen_checkpoint``) next to its weights as ``best_meta_params.npz``."""
    sha = run_card.get("config", {}).get("init_from_sha256")
    if sha is None:
        return {}
    if not init_from_runs:
        raise SystemExit("the run started from a file (--init-from): pass --init-from-run DIR, "
                         "the run whose best_meta_params.npz it was (nearest first, comma-"
                         "separated, for a chain)")
    path = os.path.join(init_from_runs[0], "best_meta_params.npz")
    with open(path, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != sha:
            raise SystemExit(f"{path} is not the file the run started from (SHA-256 differs)")
    with open(os.path.join(init_from_runs[0], "card.json")) as f:
        earlier = json.load(f)
    return {"init_from": {"run": init_from_runs[0], "file": "best_meta_params.npz", "sha256": sha,
                          "commands": earlier.get("commands", [earlier["command"]]),
                          "best": earlier.get("best", earlier.get("chosen_checkpoint")),
                          **_init_from(earlier, init_from_runs[1:])}}


def ship_weights(run: str, name: str, commit: str | None, checkpoint: int | None = None,
                 rule: str | None = None, scores: dict[int, float] | None = None,
                 init_from_run: str | None = None) -> None:
    """Ship the run's best checkpoint by its own validation, or ``checkpoint`` (a meta-step
    whose ``checkpoints/ckpt_*.npz`` is kept) chosen by ``rule`` as the lowest of ``scores``
    (meta-step -> score); rule and scores go on the card."""
    if checkpoint is not None and (not rule or not scores or checkpoint not in scores
                                   or scores[checkpoint] != min(scores.values())):
        raise SystemExit("--checkpoint needs --rule and --scores in which it scores lowest")
    with open(os.path.join(run, "card.json")) as f:
        run_card = json.load(f)  # written when the run finished
    commit = commit or run_card.get("commit")
    if not commit:
        raise SystemExit(f"{run}/card.json records no commit: pass --commit")
    metric = run_card["config"].get("validation_metric", "mean")
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    if checkpoint is None:
        meta_params, chosen = load_meta_params(os.path.join(run, "best_meta_params.npz"),
                                               with_metadata=True)
        families = run_card["config"].get("validate_on")
        where = (f"the validation families {', '.join(families)} (no training family, mean of "
                 "the log of each one's score)" if families else "the training family")
        rule = (f"lowest validation loss ({_METRICS[metric]} on fixed tasks of {where}, seed "
                "VALIDATION_SEED; no reported test task)")
    else:
        meta_params = meta_params_from_checkpoint(
            os.path.join(run, "checkpoints", f"ckpt_{checkpoint:08d}.npz"), name)
        chosen = {"step": checkpoint, "validation_loss": next(
            r["validation_loss"] for r in rows if r["step"] == checkpoint and "validation_loss" in r)}
    card = {
        "name": name,
        # The alias arguments the weights were made for (applied by hyperadam_optax.{name}).
        **({"make_kwargs": run_card["make_kwargs"]} if run_card.get("make_kwargs") else {}),
        "command": run_card["command"],
        # A run resumed after a kill or extended lists every command, in order.
        "commands": run_card.get("commands", [run_card["command"]]),
        "config": run_card["config"],
        "meta_steps": run_card["meta_steps"],
        "chosen_checkpoint": {"meta_step": chosen["step"],
                              "validation_loss": chosen["validation_loss"],
                              "rule": rule,
                              **({"scores": {str(k): v for k, v in scores.items()}}
                                 if checkpoint is not None else {})},
        "validation_curve": [[r["step"], r["validation_loss"]] for r in rows
                             if "validation_loss" in r],
        "skipped_meta_steps": run_card["skipped_meta_steps"],
        "wall_time_s": run_card["wall_time_s"],
        "seed": run_card["seed"],
        "commit": commit,
        "jax": run_card["jax"],
        "devices": run_card["devices"],
        **_init_from(run_card, init_from_run.split(",") if init_from_run else None),
        "evaluation": {},
    }
    PRETRAINED_DIR.mkdir(exist_ok=True)
    _write_card(name, card, meta_params)
    print(f"shipped {run} (meta-step {chosen['step']}) as {PRETRAINED_DIR / name}.npz/.json")


def add_scores(name: str, label: str, evaluation: list[str], command: str) -> None:
    card = json.loads((PRETRAINED_DIR / f"{name}.json").read_text())
    for path in evaluation:
        suite = pathlib.Path(path).stem
        with open(path) as f:
            rows = json.load(f)
        scores = {}
        for task in dict.fromkeys(r["task"] for r in rows):
            by_opt = {r["optimizer"]: r for r in rows if r["task"] == task}
            if label not in by_opt:
                raise SystemExit(f"{path}: no rows for optimizer {label!r} on {task}")
            ours = np.asarray(by_opt[label]["final_losses"])
            entry = {"mean": float(ours.mean()),
                     "stderr": float(ours.std(ddof=1) / np.sqrt(len(ours))), "runs": len(ours)}
            baselines = {o: r for o, r in by_opt.items() if o.split("@")[0] in BASELINES}
            if baselines:
                best = min(baselines, key=lambda o: baselines[o]["mean"])
                d = ours - np.asarray(baselines[best]["final_losses"])
                entry.update(best_baseline=best,
                             best_baseline_learning_rate=baselines[best]["learning_rate"],
                             paired_difference=float(d.mean()),
                             paired_difference_stderr=float(d.std(ddof=1) / np.sqrt(len(d))))
            scores[task] = entry
        card["evaluation"][suite] = {"command": command, "label": label, "scores": scores}
        print(f"{name}: {suite}: " + ", ".join(f"{t} {s['mean']:.4f}" for t, s in scores.items()))
    _write_card(name, card)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("weights")
    w.add_argument("--run", required=True)
    w.add_argument("--name", required=True, choices=PRETRAINED)
    w.add_argument("--checkpoint", type=int, default=None,
                   help="ship this meta-step's checkpoint instead of the run's best")
    w.add_argument("--rule", default=None, help="how --checkpoint was chosen (for the card)")
    w.add_argument("--scores", default=None, metavar="STEP:SCORE,...",
                   help="the scores of --rule per meta-step (--checkpoint must be the lowest)")
    w.add_argument("--init-from-run", default=None,
                   help="for a run started with --init-from: the run whose best weights it "
                        "took; for a chain, DIR1,DIR2,... nearest first")
    w.add_argument("--commit", default=None,
                   help="commit of the code the run used (default: the one its card records)")
    s = sub.add_parser("scores")
    s.add_argument("--name", required=True, choices=PRETRAINED)
    s.add_argument("--label", required=True, help="the optimizer's label in the evaluation")
    s.add_argument("--evaluation", nargs="+", required=True, help="{suite}.json files")
    s.add_argument("--command", required=True, help="the evaluate command that wrote them")
    args = parser.parse_args()
    if args.what == "weights":
        scores = None if args.scores is None else {
            int(k): float(v) for k, v in (item.split(":") for item in args.scores.split(","))}
        ship_weights(args.run, args.name, args.commit, args.checkpoint, args.rule, scores,
                     args.init_from_run)
    else:
        add_scores(args.name, args.label, args.evaluation, args.command)


if __name__ == "__main__":
    main()
