"""Close a meta-training run stopped by hand: its latest (or a named) checkpoint becomes
``RUN/meta_params_N.npz`` with the run's metadata, and its card says why it stopped.

The checkpoints (``RUN/checkpoints/``) are not committed; this file is what a later session
continues from (``--init-from RUN/meta_params_N.npz``). Stop the run's process first
(``pkill -f "out-dir RUN$"``): a run still writing checkpoints would move past N.

    python research/stop_run.py research/runs/NAME --reason "by hand: ..." [--step N]
"""
from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import re

from hyperadam_optax.io import load_meta_params, load_weights_or_checkpoint, save_meta_params


def checkpoint_steps(run: pathlib.Path) -> dict[int, pathlib.Path]:
    """The run's checkpoints by meta-step (``checkpoints/ckpt_%08d.npz``)."""
    found = {}
    for path in (run / "checkpoints").glob("ckpt_*.npz"):
        match = re.fullmatch(r"ckpt_(\d+)\.npz", path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def stop_run(run: pathlib.Path, reason: str, step: int | None = None) -> tuple[pathlib.Path, str]:
    """Write ``run/meta_params_{step}.npz`` from checkpoint ``step`` (default: the latest)
    and set ``card.json``'s ``status``; returns the written path and the status."""
    steps = checkpoint_steps(run)
    if not steps:
        raise SystemExit(f"{run}: no checkpoints/ckpt_*.npz to stop at")
    step = max(steps) if step is None else step
    if step not in steps:
        raise SystemExit(f"{run}: no checkpoint at meta-step {step}; have {sorted(steps)}")
    optimizer = json.loads((run / "config.json").read_text())["optimizer"]
    meta_params, _ = load_weights_or_checkpoint(steps[step], optimizer)
    # The run's metadata (make_kwargs, optimizer, ...) as its best file records it, with
    # this file's own meta-step and no validation score (this step's was not measured).
    _, metadata = load_meta_params(run / "best_meta_params.npz", with_metadata=True)
    metadata = {k: v for k, v in metadata.items() if k not in ("step", "validation_loss")}
    metadata["step"] = step
    out = run / f"meta_params_{step}.npz"
    save_meta_params(out, meta_params, metadata)
    card_path = run / "card.json"
    card = json.loads(card_path.read_text())
    card["status"] = (
        f"stopped {reason} at meta-step {step:,} ({datetime.date.today().isoformat()}); its "
        f"meta-parameters there are {out.name} (checkpoints are not committed): "
        f"continue with the command below and --init-from {out}")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return out, card["status"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=pathlib.Path, help="the run's directory (research/runs/NAME)")
    parser.add_argument("--reason", required=True,
                        help='why it stopped, read after "stopped" in the card (e.g. "by hand: flat")')
    parser.add_argument("--step", type=int, default=None,
                        help="the checkpoint's meta-step (default: the latest)")
    args = parser.parse_args(argv)
    out, status = stop_run(args.run, args.reason, args.step)
    print(out)
    print(status)


if __name__ == "__main__":
    main()
