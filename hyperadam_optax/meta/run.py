"""A meta-training run: :func:`meta_train` validates the request, then the loop and the card.
The pieces it is set up from are :mod:`~hyperadam_optax.meta.setup`; the run directory and
its crash safety :mod:`~hyperadam_optax.meta.run_dir`; the plot :mod:`~hyperadam_optax.meta.plots`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable

import jax
import numpy as np

try:
    import fcntl
except ImportError:  # not on Windows: runs there take no lock
    fcntl = None

from hyperadam_optax.io.files import (
    read_json,
    save_meta_params,
)
from hyperadam_optax.meta.choices import OptimizerChoice, RunOptions, TaskChoice, Tasks
from hyperadam_optax.meta.config import MetaTrainConfig
from hyperadam_optax.meta.ensemble import make_ensemble_evaluator
from hyperadam_optax.meta.learned import LearnedOptimizer
from hyperadam_optax.meta.meta_step import init_meta_state, make_meta_step
from hyperadam_optax.meta.plots import plot_metrics
from hyperadam_optax.meta.processes import from_writer, is_writer, to_host, writer_outcome
from hyperadam_optax.meta.run_dir import (
    RunFiles,
    RunProgress,
    _write_json,
    claim_run_dir,
    locked_run_dir,
    remove_partial_files,
    restore,
    save_checkpoint,
)
from hyperadam_optax.meta.setup import (
    _git_commit,
    _sha256,
    initial_meta_params,
    with_recipe_defaults,
)
from hyperadam_optax.meta.sharding import shard_meta_state
from hyperadam_optax.meta.trainable import field_scales_tree, trainable_mask
from hyperadam_optax.meta.validation import VALIDATION_SEED, make_evaluator


class NonFiniteMetaStepsError(RuntimeError):
    """Most recent meta-steps had a non-finite meta-gradient (skipped, not applied)."""


#: At each checkpoint, a run stops with :class:`NonFiniteMetaStepsError` if more than half of
#: its last ``SKIP_WINDOW`` meta-steps were skipped as non-finite: it is not training.
SKIP_WINDOW = 100


def skipped_too_many(history: list[dict]) -> bool:
    """Whether over half of the last :data:`SKIP_WINDOW` meta-step rows were not finite."""
    recent = [r["finite"] for r in history if "finite" in r][-SKIP_WINDOW:]
    return bool(recent) and sum(1 for finite in recent if not finite) > len(recent) / 2


def check_skipped(history: list[dict]) -> None:
    """Raise :class:`NonFiniteMetaStepsError` if over half of the last :data:`SKIP_WINDOW`
    meta-step rows of ``history`` were not finite."""
    recent = [r["finite"] for r in history if "finite" in r][-SKIP_WINDOW:]
    skipped = sum(1 for finite in recent if not finite)
    if skipped_too_many(history):
        raise NonFiniteMetaStepsError(
            f"{skipped} of the last {len(recent)} meta-steps had a non-finite meta-gradient and "
            "were skipped: the run is not training (a smaller --sigma, --meta-lr or --clip-norm, "
            "or another --meta-loss may help); stopped at its checkpoint, which --resume continues")


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
    previous = read_json(files.card, "run file")
    return previous.get("commands", [previous.get("command")])


def meta_train(optimizer: OptimizerChoice | str = "hyperadam",
               tasks: TaskChoice | str | None = None, config: MetaTrainConfig | None = None,
               run: RunOptions | None = None, *, log=print) -> dict:
    """Run (or resume) meta-training; returns the card (also written to ``card.json``).

    Args:
      optimizer: the learned optimizer, its initialisation and alias options
        (:class:`~hyperadam_optax.meta.choices.OptimizerChoice`; a name: its authors'
        initialisation and default options).
      tasks: what it trains on, one family drawn per meta-step (a single family is an
        ensemble of one), and what scores its checkpoints
        (:class:`~hyperadam_optax.meta.choices.TaskChoice`; a name: that task or ensemble;
        None: the optimizer's paper's problem). Several validation families are scored as
        the mean over families of the log of each one's score.
      config: how the meta-gradient is estimated and applied (:class:`MetaTrainConfig`;
        ``meta_lr=None`` and ``meta_loss=None`` are the optimizer's paper's).
      run: the run directory and its bookkeeping
        (:class:`~hyperadam_optax.meta.choices.RunOptions`).
      log: where progress lines go.

    Every refusal comes before the run directory is touched.
    """
    if isinstance(optimizer, str):
        optimizer = OptimizerChoice(optimizer)
    if tasks is None or isinstance(tasks, str):
        tasks = TaskChoice(tasks)
    run = run or RunOptions()
    for name, value, kind in (("optimizer", optimizer, OptimizerChoice),
                              ("tasks", tasks, TaskChoice), ("run", run, RunOptions),
                              ("config", config or MetaTrainConfig(), MetaTrainConfig)):
        if not isinstance(value, kind):
            raise ValueError(f"{name} must be a {kind.__name__}, got {type(value).__name__}")
    learned = optimizer.resolve()
    start_from = None
    if optimizer.init_from is not None:
        start_from = initial_meta_params(optimizer.init_from, learned, optimizer.options)
    first = start_from if start_from is not None else jax.eval_shape(
        learned.init_meta_params, jax.random.PRNGKey(0))  # what the run starts from
    if optimizer.options:  # the alias's own rules, e.g. HyperAdam's sign agreement vs θ_p
        learned.make(first)
    if config is not None:  # names and blocks of those meta-parameters
        trainable_mask(first, config.trainable)
        field_scales_tree(first, config.field_scales)
    config = with_recipe_defaults(config or MetaTrainConfig(), learned)
    built = tasks.build(learned.default_task)
    identity = {**optimizer.identity(), "seed": run.seed,
                **tasks.identity(learned.default_task, built.data), **config.identity()}
    if optimizer.init_from is not None:
        identity["init_from_sha256"] = _sha256(optimizer.init_from)
    if config.num_slots % jax.device_count():
        raise ValueError(f"{config.num_slots_flag} ({config.num_slots}) must be a multiple of "
                         f"the number of devices ({jax.device_count()}): its task slots are "
                         "sharded over them")
    with contextlib.ExitStack() as held:
        return _run(held, RunFiles(run.out_dir), learned, built, config, tasks, run, identity,
                    log=log, start_from=start_from)


def _set_up(held: contextlib.ExitStack, files: RunFiles, initial, identity: dict,
            options: RunOptions, log) -> RunProgress:
    """Process 0 (the only one with files): the lock (held by ``held``), the claim, the
    restore; every process: the progress to continue from (process 0's, shared)."""
    progress, error = RunProgress(initial), None
    if is_writer():
        try:
            if options.resume and not os.path.exists(files.config):
                raise FileNotFoundError(f"nothing to resume at {files.out_dir}: it holds no "
                                        "meta-training run (no config.json); leave out "
                                        "--resume to start one there")
            held.enter_context(locked_run_dir(files.out_dir))
            claim_run_dir(files, identity, options.resume)
            for path in remove_partial_files(files):
                log(f"removed {path}, a file a killed run left half-written")
            progress = restore(files, initial, options.resume, identity, log)
            if progress.start >= options.meta_steps:
                raise ValueError(f"{files.out_dir} is already at meta-step {progress.start}; "
                                 f"ask for more than --meta-steps {options.meta_steps} to "
                                 "continue it (nothing was changed)")
        except Exception as e:  # the others must not wait for a run that will not start
            error = e
    writer_outcome(error)
    if error is not None:
        raise error
    where = from_writer({"start": np.asarray(progress.start),
                         "restored": np.asarray(progress.restored)})
    progress.start, progress.restored = int(where["start"]), bool(where["restored"])
    if progress.restored:  # process 0 read it; the others receive it
        state = progress.state if is_writer() else jax.tree.map(
            lambda x: np.zeros(x.shape, x.dtype), initial)
        progress.state = shard_meta_state(from_writer(state))
    return progress


def _run(held: contextlib.ExitStack, files: RunFiles, learned: LearnedOptimizer, built: Tasks,
         config: MetaTrainConfig, tasks: TaskChoice, options: RunOptions, identity: dict,
         *, log, start_from=None) -> dict:
    """:func:`meta_train` once its request is checked: the same program on every process;
    only process 0 touches the run directory (:mod:`~hyperadam_optax.meta.processes`)."""
    families = list(built.training.values())
    initial = init_meta_state(jax.random.PRNGKey(options.seed), learned, families, config,
                              start_from)
    run = _set_up(held, files, initial, identity, options, log)
    writer = is_writer()
    evaluators = [make_evaluator(learned, family, num_tasks=tasks.validation_tasks,
                                 steps=config.trajectory, seed=VALIDATION_SEED,
                                 metric=tasks.validation_metric)
                  for family in built.validation.values()]
    evaluate = evaluators[0] if len(evaluators) == 1 else make_ensemble_evaluator(evaluators)
    meta_step = make_meta_step(learned, families, config)
    commands = [*(_previous_commands(files, run.start) if writer else []), options.command]
    commit = _git_commit()
    seed = options.seed

    def write_card(step: int, wall: float, status: str) -> dict:
        card = _card(run, identity, commands, meta_steps=step, wall=wall, seed=seed,
                     status=status, commit=commit)
        if writer:
            _write_json(files.card, card)
        return card

    write_card(run.start, _wall_before(run), "running")  # the command survives a kill
    last = {"step": run.start, "wall": _wall_before(run)}

    def on_checkpoint(step: int, wall: float) -> None:
        last.update(step=step, wall=wall)
        write_card(step, wall, "running")

    meta_steps = options.meta_steps
    try:
        wall = _train_loop(files, run, meta_step, evaluate, identity, meta_steps=meta_steps,
                           checkpoint_every=options.checkpoint_every, keep=options.keep,
                           bar=_progress_bar(options.progress and writer, meta_steps,
                                             run.start, learned.name, log),
                           on_checkpoint=on_checkpoint)
    except NonFiniteMetaStepsError as e:
        write_card(last["step"], last["wall"], f"stopped: {e}")
        raise
    card = _card(run, identity, commands, meta_steps=meta_steps, wall=wall, seed=seed,
                 status="finished", commit=commit)
    meta_params = to_host(run.state.meta_params)
    if not writer:
        return card
    save_meta_params(files.meta_params, meta_params, card)  # before the card says finished
    _write_json(files.card, card)
    try:
        plot_metrics(run.history, files.plot)
    except ModuleNotFoundError:
        log("matplotlib is not installed: no meta_loss.png (pip install 'hyperadam-optax[plot]')")
    log(f"done: {meta_steps} meta-steps, final validation loss {card['final_validation_loss']:.4f}, "
        f"best {run.best['validation_loss']:.4f} at step {run.best['step']}; results in "
        f"{files.out_dir}")
    return card


def _card(run: RunProgress, identity: dict, commands: list, *, meta_steps: int, wall: float,
          seed: int, status: str, commit: str | None) -> dict:
    """How the run's meta-parameters were made: commands, config, meta-steps done, status
    (``running`` until the last checkpoint is written, then ``finished``; ``stopped: why``
    if it stopped itself), wall time, seed,
    commit, best and final validation, JAX version and devices."""
    vals = [r["validation_loss"] for r in run.history if "validation_loss" in r]
    return {
        "command": commands[-1],
        "commands": commands,
        **({"make_kwargs": identity["make_kwargs"]} if "make_kwargs" in identity else {}),
        "config": identity,
        "meta_steps": meta_steps,
        "status": status,
        "skipped_meta_steps": int(run.state.skipped),
        "wall_time_s": round(wall, 1),
        "seed": seed,
        "commit": commit,
        "best": run.best,
        "final_validation_loss": vals[-1] if vals else None,
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }


def _wall_before(run: RunProgress) -> float:
    """Wall time of the meta-steps done before this process (0 for a new run)."""
    return max([r.get("wall_s", 0.0) for r in run.history] or [0.0])


def _train_loop(files: RunFiles, run: RunProgress, meta_step: Callable, evaluate: Callable,
                identity: dict, *, meta_steps: int, checkpoint_every: int, keep: int,
                bar, on_checkpoint: Callable[[int, float], object]) -> float:
    """Meta-steps ``run.start + 1 .. meta_steps``, a JSONL row each, a validation row and a
    checkpoint every ``checkpoint_every`` steps and at the end (and at step 0 of a new run),
    ``on_checkpoint(step, wall)`` after each. Every process runs it; process 0 alone writes
    (and decides, for all, whether too many meta-steps were skipped). Returns the run's total
    wall time (earlier sessions included)."""
    t_start = time.perf_counter()
    wall_before = _wall_before(run)
    writer = is_writer()
    with open(files.metrics, "a") if writer else contextlib.nullcontext() as metrics_file:
        def append(row):
            run.history.append(row)
            if writer:
                metrics_file.write(json.dumps(row) + "\n")
                metrics_file.flush()

        def validate_and_checkpoint(step):
            val = float(evaluate(run.state.meta_params))
            append({"step": step, "validation_loss": val})
            state = to_host(run.state)  # gathered from every process's devices
            if writer:
                save_checkpoint(files, run, step, val, identity, keep, state)
            on_checkpoint(step, wall_before + time.perf_counter() - t_start)
            if bool(from_writer(np.asarray(writer and skipped_too_many(run.history)))):
                if writer:
                    check_skipped(run.history)  # raises, with the counts
                raise NonFiniteMetaStepsError("process 0 stopped the run: most recent "
                                              "meta-steps were not finite (its error says more)")
            return val

        if not run.restored:
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


