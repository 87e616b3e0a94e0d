"""Score HyperAdam weight files on the validation families, as a meta-training run does.

Each file (``save_meta_params`` or a run's checkpoint) is scored with the evaluator of
``meta-train --validate-on validation --validation-tasks 8 --validation-metric final
--trajectory STEPS`` (``--steps``, default 200; ``--metric mean`` scores the mean loss over the
run instead of the final one): the mean over the five ``val-*`` families of the log of the
mean final loss of 8 fixed tasks (seed ``VALIDATION_SEED``), so a number here equals the
run's ``validation_loss`` for the same weights. ``--families ENSEMBLE`` scores other families
the same way (e.g. a run's training ensemble, ``l2o-set-digits``). ``--reset-from START
--reset PARTS`` first puts PARTS of each file back to START's values, an ablation that asks
how much of a change is theirs: a comma-separated list of ``clock`` (the four gate biases of
LSTM unit 0, the warm start's clock) and blocks named as ``meta-train --train-only`` names
them (``theta_q[1:]``). ``--shift b_u=2.2,b_r=4.6`` (repeatable) adds a constant to whole
fields of each file (e.g. the decay-rate biases: +2.2 moves σ(0) = 0.5 to 0.9), a probe of
where the meta-objective is lower than where a run got to; with ``--save OUT.npz`` the
shifted weights are written instead (a probe's start, ``research/starts/``).

    python research/validation_score.py research/runs/ha-input-path/meta_params_500.npz \
        --reset-from research/starts/hyperadam-input-path.npz --reset clock
"""

import argparse

import jax
import numpy as np

from hyperadam_optax.io import load_weights_or_checkpoint, make_kwargs_of, save_meta_params
from hyperadam_optax.meta.learned import learned_optimizer
from hyperadam_optax.meta.trainable import trainable_mask
from hyperadam_optax.meta.validation import VALIDATION_METRICS, VALIDATION_SEED, make_evaluator
from hyperadam_optax.optimizers.hyperadam import gate_columns
from hyperadam_optax.tasks.registry import build_families, ensemble_members


def load(path: str):
    """``(meta_params, the alias arguments its file records, or None for a checkpoint)``."""
    theta, metadata = load_weights_or_checkpoint(path)
    return theta, None if metadata is None else make_kwargs_of(metadata)


def reset_parts(theta, start, parts: str):
    """``theta`` with ``parts`` (``clock`` and/or ``--train-only`` blocks) set to ``start``'s."""
    shapes = [jax.tree.map(np.shape, t) for t in (theta, start)]
    if shapes[0] != shapes[1]:
        raise ValueError(f"--reset-from START has shapes {shapes[1]}, the file {shapes[0]}")
    names = [part.strip() for part in parts.split(",")]
    if "clock" in names:
        clock = gate_columns([0], theta.b_u.shape[0])
        theta = theta._replace(b_h=theta.b_h.at[clock].set(start.b_h[clock]))
    blocks = tuple(n for n in names if n != "clock")
    if blocks:
        mask = trainable_mask(theta, blocks)
        theta = jax.tree.map(lambda m, t, s: np.where(m, s, t), mask, theta, start)
    return theta


def shift_fields(theta, shifts: str):
    """``theta`` with ``FIELD=DELTA`` (comma-separated) added to those whole fields."""
    for item in shifts.split(","):
        field, _, delta = item.partition("=")
        field = field.strip()
        if field not in theta._fields:
            raise ValueError(f"--shift: unknown field {field!r}; expected FIELD=DELTA with "
                             f"FIELD one of {theta._fields}")
        theta = theta._replace(**{field: getattr(theta, field) + float(delta)})
    return theta


def save_shifted(path: str, shift: str, out: str) -> None:
    """Write ``path``'s weights with ``shift`` applied to ``out``, with its alias arguments and
    a note that says what was shifted (a probe's start, not meta-trained weights)."""
    theta, metadata = load_weights_or_checkpoint(path)
    metadata = {k: v for k, v in (metadata or {}).items() if k not in ("step", "validation_loss")}
    metadata["note"] = f"{path} with --shift {shift} by hand (research/validation_score.py)"
    save_meta_params(out, shift_fields(theta, shift), metadata)
    print(f"wrote {out}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+")
    p.add_argument("--normalization", default="global_rms",
                   help="for files that record no alias arguments (old checkpoints)")
    p.add_argument("--steps", type=int, default=200, help="the run's --trajectory")
    p.add_argument("--families", default="validation",
                   help="an ensemble or comma-separated tasks (default: the selection families)")
    p.add_argument("--metric", default="final", choices=VALIDATION_METRICS,
                   help="the run's --validation-metric")
    p.add_argument("--reset-from", default=None, metavar="START")
    p.add_argument("--reset", default=None, metavar="PARTS",
                   help="clock and/or blocks like theta_q[1:], comma-separated")
    p.add_argument("--shift", action="append", default=None, metavar="FIELD=DELTA,...",
                   help="add DELTA to whole fields of every file (after --reset); repeated: "
                        "each file is scored once per --shift")
    p.add_argument("--save", default=None, metavar="OUT.npz",
                   help="write the one file with its one --shift to OUT.npz instead of scoring")
    args = p.parse_args(argv)
    if (args.reset_from is None) != (args.reset is None):
        p.error("--reset-from and --reset go together")
    if args.save:
        if len(args.files) != 1 or len(args.shift or ()) != 1:
            p.error("--save writes one file: give one weight file and one --shift")
        save_shifted(args.files[0], args.shift[0], args.save)
        return
    names = ensemble_members(args.families)
    families, _ = build_families(",".join(names))
    start = load(args.reset_from)[0] if args.reset_from else None
    evaluators = {}
    for path in args.files:
        theta, make_kwargs = load(path)
        if make_kwargs is None:  # a file that records nothing; {} means the defaults
            make_kwargs = {"normalization": args.normalization}
        if start is not None:
            theta = reset_parts(theta, start, args.reset)
        key = tuple(sorted(make_kwargs.items()))
        if key not in evaluators:
            learned = learned_optimizer("hyperadam", make_kwargs=make_kwargs)
            evaluators[key] = [jax.jit(make_evaluator(
                learned, families[n], num_tasks=8, steps=args.steps, seed=VALIDATION_SEED,
                metric=args.metric)) for n in names]
        for shift in args.shift or [None]:
            shifted = shift_fields(theta, shift) if shift else theta
            scores = [float(e(shifted)) for e in evaluators[key]]
            print(f"{path}{f' shifted {shift}' if shift else ''}: "
                  f"{np.mean(np.log(scores)):.4f} (" + ", ".join(
                      f"{n} {s:.4g}" for n, s in zip(names, scores)) + ")", flush=True)


if __name__ == "__main__":
    main()
