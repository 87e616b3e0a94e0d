"""A meta-training run on disk: progress bar, JSONL metrics, atomic checkpoints, resume.

Layout of ``out_dir`` (:class:`RunFiles`)::

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
from collections.abc import Callable

import jax
import numpy as np

from hyperadam_optax.io.files import atomic_write, load_pytree, save_meta_params, save_pytree
from hyperadam_optax.meta.learned import LearnedOptimizer, learned_optimizer
from hyperadam_optax.meta.meta_step import MetaTrainConfig, init_meta_state, make_meta_step
from hyperadam_optax.meta.sharding import shard_meta_state
from hyperadam_optax.meta.validation import VALIDATION_METRICS, VALIDATION_SEED, make_evaluator
from hyperadam_optax.tasks.data import mnist_data
from hyperadam_optax.tasks.registry import get_task


class RunConfigMismatchError(ValueError):
    """``out_dir`` holds a run with a different configuration."""


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """The paths of a run directory (module docstring)."""

    out_dir: str

    def _path(self, *parts: str) -> str:
        return os.path.join(self.out_dir, *parts)

    checkpoints = property(lambda self: self._path("checkpoints"))
    config = property(lambda self: self._path("config.json"))
    metrics = property(lambda self: self._path("metrics.jsonl"))
    card = property(lambda self: self._path("card.json"))
    meta_params = property(lambda self: self._path("meta_params.npz"))
    best_meta_params = property(lambda self: self._path("best_meta_params.npz"))
    best_checkpoint = property(lambda self: self._path("checkpoints", "best.npz"))
    plot = property(lambda self: self._path("meta_loss.png"))

    def checkpoint(self, step: int) -> str:
        return os.path.join(self.checkpoints, f"ckpt_{step:08d}.npz")

    def checkpoint_steps(self) -> list[int]:
        """The steps of the ``ckpt_*.npz`` files, ascending."""
        steps = []
        for path in glob.glob(os.path.join(self.checkpoints, "ckpt_*.npz")):
            try:
                steps.append(int(os.path.basename(path)[5:-4]))
            except ValueError:
                continue
        return sorted(steps)


def _git_commit() -> str | None:
    """The commit of the checkout this package runs from (None outside a git checkout)."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_config(*, optimizer: str, task: str, init: str, config: MetaTrainConfig, seed: int,
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


def _write_json(path: str, obj) -> None:
    text = json.dumps(obj, indent=2).encode()
    atomic_write(path, lambda f: f.write(text))


def claim_run_dir(files: RunFiles, identity: dict, resume: bool) -> None:
    """Write ``config.json``; refuse a used directory without ``resume``, or a different
    configuration with it (nothing is changed then)."""
    if os.path.exists(files.config):
        with open(files.config) as f:
            existing = json.load(f)
        if not resume:
            raise FileExistsError(f"{files.out_dir} already holds a meta-training run; pass "
                                  "--resume to continue it or choose another --out-dir (nothing "
                                  "was changed)")
        diff = {k: (existing.get(k), identity.get(k)) for k in set(existing) | set(identity)
                if existing.get(k) != identity.get(k)}
        if diff:
            detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}"
                               for k, (a, b) in sorted(diff.items()))
            raise RunConfigMismatchError(f"{files.out_dir} holds a run with a different "
                                         f"configuration ({detail}); nothing was changed")
    os.makedirs(files.checkpoints, exist_ok=True)
    _write_json(files.config, identity)


@dataclasses.dataclass
class RunProgress:
    """Where a run stands: the meta-state, its step, the metric rows and the best checkpoint."""

    state: object
    start: int = 0
    history: list = dataclasses.field(default_factory=list)
    best: dict = dataclasses.field(
        default_factory=lambda: {"validation_loss": float("inf"), "step": None})


def restore(files: RunFiles, state, resume: bool, log) -> RunProgress:
    """The progress to continue from: the latest checkpoint with its metric rows and best
    validation (``resume``), else ``state`` at step 0. Rewrites ``metrics.jsonl`` to the kept
    rows."""
    steps = files.checkpoint_steps()
    progress = RunProgress(state)
    if resume and steps:
        progress.start = steps[-1]
        progress.state = shard_meta_state(load_pytree(files.checkpoint(progress.start), state))
        progress.history = [r for r in read_metrics(files.metrics) if r["step"] <= progress.start]
        vals = [r for r in progress.history if "validation_loss" in r]
        if vals:
            b = min(vals, key=lambda r: r["validation_loss"])
            progress.best = {"validation_loss": b["validation_loss"], "step": b["step"]}
        log(f"resuming {files.out_dir} from meta-step {progress.start}")
    lines = "".join(json.dumps(r) + "\n" for r in progress.history).encode()
    atomic_write(files.metrics, lambda f: f.write(lines))
    return progress


def save_checkpoint(files: RunFiles, progress: RunProgress, step: int, validation_loss: float,
                    identity: dict, keep: int) -> None:
    """``ckpt_<step>.npz``; ``best.npz`` and ``best_meta_params.npz`` if the validation loss
    is the lowest so far; only the last ``keep`` checkpoints stay."""
    path = files.checkpoint(step)
    save_pytree(path, progress.state)
    if validation_loss < progress.best["validation_loss"]:
        progress.best.update(validation_loss=validation_loss, step=step)
        with open(path, "rb") as src:
            atomic_write(files.best_checkpoint, lambda f: shutil.copyfileobj(src, f))
        save_meta_params(files.best_meta_params, progress.state.meta_params,
                         {"step": step, "validation_loss": validation_loss, **identity})
    for old in files.checkpoint_steps()[:-keep]:
        os.unlink(files.checkpoint(old))


def _progress_bar(enabled: bool, total: int, initial: int, name: str, log):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ModuleNotFoundError:
        log("tqdm is not installed: no progress bar (pip install 'hyperadam-optax[progress]')")
        return None
    return tqdm(total=total, initial=initial, desc=f"meta-train {name}", unit="step",
                file=sys.stderr, dynamic_ncols=True)


def _previous_commands(files: RunFiles, start: int) -> list:
    """Every command that contributed meta-steps to this run so far, in order."""
    if start == 0 or not os.path.exists(files.card):
        return []
    with open(files.card) as f:
        previous = json.load(f)
    return previous.get("commands", [previous.get("command")])


def resolve_optimizer(optimizer: str, init: str, warm: dict) -> LearnedOptimizer:
    """The registry's optimizer with its initialisation; the warm-start arguments apply to
    HyperAdam's Adam warm start only."""
    given = {k: v for k, v in warm.items() if v is not None}
    learned = learned_optimizer(optimizer, init=init, **given)
    if given and (learned.name != "hyperadam" or init != "adam"):
        raise ValueError(f"{' and '.join(given)} apply to HyperAdam's Adam warm start only "
                         "(optimizer 'hyperadam', init 'adam')")
    jax.eval_shape(learned.init_meta_params, jax.random.PRNGKey(0))  # bad init fails here
    return learned


def with_recipe_defaults(config: MetaTrainConfig, learned: LearnedOptimizer) -> MetaTrainConfig:
    """``meta_lr=None`` and ``meta_loss=None`` become the optimizer's paper's."""
    if config.meta_lr is None:
        config = dataclasses.replace(config, meta_lr=learned.default_meta_lr)
    if config.meta_loss is None:
        config = dataclasses.replace(config, meta_loss=learned.meta_loss)
    return config


def task_data(task: str, data_dir: str | None):
    """``((x, y) or None, description)`` of the training data of ``task``."""
    if not get_task(task).needs_data:
        return None, "none"
    d, description = mnist_data(data_dir, "train")
    return (d.x, d.y), description


def meta_train(*, optimizer: str = "hyperadam", task: str | None = None, init: str = "paper",
               warm_start_step: float | None = None,
               warm_start_betas: tuple[float, float] | None = None,
               warm_start_decay: tuple[float, float] | None = None,
               config: MetaTrainConfig | None = None,
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
    (:func:`~hyperadam_optax.meta.validation.make_evaluator`).
    """
    if meta_steps < 1 or checkpoint_every < 1 or keep < 1:
        raise ValueError("meta_steps, checkpoint_every and keep must be positive")
    if validation_metric not in VALIDATION_METRICS:
        raise ValueError(f"validation_metric must be one of {VALIDATION_METRICS}, "
                         f"got {validation_metric!r}")
    warm = {"warm_start_step": warm_start_step, "warm_start_betas": warm_start_betas,
            "warm_start_decay": warm_start_decay}
    learned = resolve_optimizer(optimizer, init, warm)
    task = task or learned.default_task
    config = with_recipe_defaults(config or MetaTrainConfig(), learned)
    data, data_desc = task_data(task, data_dir)
    family = get_task(task).build(data)
    identity = run_config(optimizer=learned.name, task=task, init=init, config=config, seed=seed,
                          data=data_desc, **warm, validation_metric=validation_metric)
    files = RunFiles(out_dir)
    claim_run_dir(files, identity, resume)

    run = restore(files, init_meta_state(jax.random.PRNGKey(seed), learned, family, config),
                  resume, log)
    meta_step = make_meta_step(learned, family, config)
    evaluate = make_evaluator(learned, family, num_tasks=validation_tasks,
                              steps=config.trajectory, seed=VALIDATION_SEED,
                              metric=validation_metric)
    commands = [*_previous_commands(files, run.start), command]
    wall = _train_loop(files, run, meta_step, evaluate, identity, meta_steps=meta_steps,
                       checkpoint_every=checkpoint_every, keep=keep,
                       bar=_progress_bar(progress, meta_steps, run.start, learned.name, log))
    card = _card(run, identity, commands, meta_steps=meta_steps, wall=wall, seed=seed)
    save_meta_params(files.meta_params, run.state.meta_params, card)
    _write_json(files.card, card)
    try:
        plot_metrics(run.history, files.plot)
    except ModuleNotFoundError:
        log("matplotlib is not installed: no meta_loss.png (pip install 'hyperadam-optax[plot]')")
    log(f"done: {meta_steps} meta-steps, final validation loss {card['final_validation_loss']:.4f}, "
        f"best {run.best['validation_loss']:.4f} at step {run.best['step']}; results in {out_dir}")
    return card


def _card(run: RunProgress, identity: dict, commands: list, *, meta_steps: int, wall: float,
          seed: int) -> dict:
    """How the run's meta-parameters were made: commands, config, steps, wall time, seed,
    commit, best and final validation, JAX version and devices."""
    return {
        "command": commands[-1],
        "commands": commands,
        "config": identity,
        "meta_steps": meta_steps,
        "skipped_meta_steps": int(run.state.skipped),
        "wall_time_s": round(wall, 1),
        "seed": seed,
        "commit": _git_commit(),
        "best": run.best,
        "final_validation_loss": next(r["validation_loss"] for r in reversed(run.history)
                                      if "validation_loss" in r),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }


def _train_loop(files: RunFiles, run: RunProgress, meta_step: Callable, evaluate: Callable,
                identity: dict, *, meta_steps: int, checkpoint_every: int, keep: int,
                bar) -> float:
    """Meta-steps ``run.start + 1 .. meta_steps``, a JSONL row each, a validation row and a
    checkpoint every ``checkpoint_every`` steps and at the end (and at step 0 of a new run).
    Returns the run's total wall time (earlier sessions included)."""
    t_start = time.perf_counter()
    wall_before = max([r.get("wall_s", 0.0) for r in run.history] or [0.0])
    with open(files.metrics, "a") as metrics_file:
        def append(row):
            run.history.append(row)
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()

        def validate_and_checkpoint(step):
            val = float(evaluate(run.state.meta_params))
            append({"step": step, "validation_loss": val})
            save_checkpoint(files, run, step, val, identity, keep)
            return val

        if run.start == 0:
            validate_and_checkpoint(0)
        t_last = time.perf_counter()
        for step in range(run.start + 1, meta_steps + 1):
            run.state, metrics = meta_step(run.state)
            metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
            now = time.perf_counter()
            row = {"step": step, **metrics, "steps_per_s": 1.0 / (now - t_last),
                   "wall_s": wall_before + now - t_start}
            t_last = now
            append(row)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(meta_loss=f"{metrics['meta_loss']:.4f}",
                                steps_s=f"{row['steps_per_s']:.2f}", refresh=False)
            if step % checkpoint_every == 0 or step == meta_steps:
                val = validate_and_checkpoint(step)
                if bar is not None:
                    bar.write(f"meta-step {step}: validation loss {val:.4f} "
                              f"(best {run.best['validation_loss']:.4f} at {run.best['step']})")
    if bar is not None:
        bar.close()
    return wall_before + time.perf_counter() - t_start


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
