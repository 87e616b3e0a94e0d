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

import contextlib
import dataclasses
import glob
import inspect
import json
import numbers
import os
import shutil
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
    atomic_write,
    ensure_writable_dir,
    load_pytree,
    load_weights_or_checkpoint,
    make_kwargs_of,
    read_json,
    read_leaves,
    save_meta_params,
    save_pytree,
)
from hyperadam_optax.meta.config import MetaTrainConfig
from hyperadam_optax.meta.ensemble import (
    enable_compilation_cache,
    init_ensemble_meta_state,
    make_ensemble_evaluator,
    make_ensemble_meta_step,
)
from hyperadam_optax.meta.learned import LearnedOptimizer, learned_optimizer
from hyperadam_optax.meta.meta_step import init_meta_state, make_meta_step
from hyperadam_optax.meta.sharding import shard_meta_state
from hyperadam_optax.meta.trainable import trainable_mask
from hyperadam_optax.meta.validation import VALIDATION_METRICS, VALIDATION_SEED, make_evaluator
from hyperadam_optax.optimizers.registry import get_optimizer
from hyperadam_optax.tasks.data import mnist_data
from hyperadam_optax.tasks.registry import REPORT_FAMILIES, ensemble_members, get_task


class RunConfigMismatchError(ValueError):
    """``out_dir`` holds a run with a different configuration."""


class NonFiniteMetaStepsError(RuntimeError):
    """Most recent meta-steps had a non-finite meta-gradient (skipped, not applied)."""


#: At each checkpoint, a run stops with :class:`NonFiniteMetaStepsError` if more than half of
#: its last ``SKIP_WINDOW`` meta-steps were skipped as non-finite: it is not training.
SKIP_WINDOW = 100


def check_skipped(history: list[dict]) -> None:
    """Raise :class:`NonFiniteMetaStepsError` if over half of the last :data:`SKIP_WINDOW`
    meta-step rows of ``history`` were not finite."""
    recent = [r["finite"] for r in history if "finite" in r][-SKIP_WINDOW:]
    skipped = sum(1 for finite in recent if not finite)
    if recent and skipped > len(recent) / 2:
        raise NonFiniteMetaStepsError(
            f"{skipped} of the last {len(recent)} meta-steps had a non-finite meta-gradient and "
            "were skipped: the run is not training (a smaller --sigma, --meta-lr or --clip-norm, "
            "or another --meta-loss may help); stopped at its checkpoint, which --resume continues")


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
               warm_start_clock: str | None = None,
               validation_metric: str = "mean", validation_tasks: int = 4) -> dict:
    """The fields that define a run: resuming with any of them changed is refused (the
    validation tasks too: "best" compares losses measured on the same tasks).

    ``task_chunk`` is left out: it only schedules the same computation, so a run may resume
    on other hardware; the sums over slots then run in another order, so a run resumed with
    another ``task_chunk`` is equal to an uninterrupted one up to float rounding, not
    bit-for-bit. ``validation_metric`` is recorded only when it is not the default
    ``"mean"``; so are ``warm_start_betas``, ``warm_start_decay`` and ``warm_start_clock``
    only when given."""
    fields = {k: list(v) if isinstance(v, tuple) else v
              for k, v in dataclasses.asdict(config).items() if k != "task_chunk"
              and not (k in ("min_trajectory", "trainable") and v is None)
              and not (k == "normalize_task_gradients" and not v)}  # old runs stand
    extra = {} if validation_metric == "mean" else {"validation_metric": validation_metric}
    if warm_start_betas is not None:
        extra["warm_start_betas"] = list(warm_start_betas)
    if warm_start_decay is not None:
        extra["warm_start_decay"] = list(warm_start_decay)
    if warm_start_clock is not None:
        extra["warm_start_clock"] = warm_start_clock
    return {"optimizer": optimizer, "task": task, "init": init, "warm_start_step": warm_start_step,
            "seed": seed, "data": data, **fields, "validation_tasks": validation_tasks, **extra}


def read_metrics(path: str, log=None) -> list[dict]:
    """The rows of a run's ``metrics.jsonl``. A line that is not a JSON object (cut by a
    kill, or corrupted) is skipped, and ``log`` is told which; the rows after it are kept."""
    if not os.path.exists(path):
        return []
    rows, bad = [], []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
            elif line.strip():
                bad.append(number)
    if bad and log is not None:
        log(f"warning: skipped unreadable lines {bad} of {path}")
    return rows


def _write_json(path: str, obj) -> None:
    text = json.dumps(obj, indent=2).encode()
    atomic_write(path, lambda f: f.write(text))


class RunDirLockedError(FileExistsError):
    """Another process is meta-training into the same ``out_dir``."""


@contextlib.contextmanager
def locked_run_dir(out_dir: str):
    """Hold an exclusive lock on ``out_dir`` (``out_dir/.lock``) for a run's whole life.

    A second run into the same directory is refused at once, naming the holder's pid. The
    lock is the operating system's (``fcntl.flock``), so a killed process never leaves a
    stale lock behind. (Without ``fcntl``, e.g. on Windows, no lock is taken.)
    """
    ensure_writable_dir(out_dir)
    fd = os.open(os.path.join(out_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise RunDirLockedError(
                    f"{out_dir} is in use by another meta-train process (pid {holder}); wait "
                    "for it to finish or choose another --out-dir (nothing was changed)"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def claim_run_dir(files: RunFiles, identity: dict, resume: bool) -> None:
    """Write ``config.json``; refuse a used directory without ``resume``, or a different
    configuration with it (nothing is changed then). A directory whose run never wrote a
    checkpoint (it failed while starting) is not in use: it is claimed afresh."""
    existing = read_json(files.config, "run file") if os.path.exists(files.config) else None
    if existing is not None and not files.checkpoint_steps():
        existing = None  # a run that failed before its first checkpoint holds nothing to keep
    if existing is not None:
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


def remove_partial_files(files: RunFiles) -> list[str]:
    """Delete the temporary files a kill left mid-write (``.tmp-*``; every finished file was
    renamed into place). Only safe while holding the run directory's lock."""
    removed = []
    for directory in (files.out_dir, files.checkpoints):
        for path in glob.glob(os.path.join(directory, ".tmp-*")):
            os.unlink(path)
            removed.append(path)
    return removed


@dataclasses.dataclass
class RunProgress:
    """Where a run stands: the meta-state, its step, the metric rows and the best checkpoint."""

    state: object
    start: int = 0
    restored: bool = False
    history: list = dataclasses.field(default_factory=list)
    best: dict = dataclasses.field(
        default_factory=lambda: {"validation_loss": float("inf"), "step": None})


def _load_latest_checkpoint(files: RunFiles, template, log) -> tuple[int, object] | None:
    """The newest intact checkpoint ``(step, state)``; a corrupt one is skipped with a
    warning (the one before it is used)."""
    for step in reversed(files.checkpoint_steps()):
        try:
            return step, load_pytree(files.checkpoint(step), template)
        except ValueError as e:
            log(f"warning: skipping unreadable checkpoint {files.checkpoint(step)} ({e}); "
                "falling back to the one before it")
    return None


def _repair_best(files: RunFiles, progress: RunProgress, identity: dict, log) -> None:
    """Make ``best.npz`` and ``best_meta_params.npz`` the checkpoint of the best validation
    row on disk (a kill between writing ``ckpt_N`` and copying it to ``best.npz`` leaves an
    older best behind)."""
    step = progress.best["step"]
    if step is None or not os.path.exists(files.checkpoint(step)):
        return
    try:
        best_step = int(read_leaves(files.best_checkpoint)[".step"])
    except (ValueError, KeyError):
        best_step = None
    if best_step != step:
        log(f"repairing {files.best_checkpoint}: it held meta-step {best_step}, the best "
            f"validation is at meta-step {step}")
        state = load_pytree(files.checkpoint(step), progress.state)
        _write_best(files, files.checkpoint(step), state, step,
                    progress.best["validation_loss"], identity)


def restore(files: RunFiles, state, resume: bool, identity: dict, log) -> RunProgress:
    """The progress to continue from: the latest intact checkpoint with its metric rows and
    best validation (``resume``; best files repaired if a kill left them stale), else
    ``state`` at step 0. Rewrites ``metrics.jsonl`` to the kept rows."""
    progress = RunProgress(state)
    latest = _load_latest_checkpoint(files, state, log) if resume else None
    if latest is not None:
        progress.start, loaded = latest
        progress.state, progress.restored = shard_meta_state(loaded), True
        progress.history = [r for r in read_metrics(files.metrics, log)
                            if r["step"] <= progress.start]
        vals = [r for r in progress.history if "validation_loss" in r]
        if vals:
            b = min(vals, key=lambda r: r["validation_loss"])
            progress.best = {"validation_loss": b["validation_loss"], "step": b["step"]}
        _repair_best(files, progress, identity, log)
        log(f"resuming {files.out_dir} from meta-step {progress.start}")
    lines = "".join(json.dumps(r) + "\n" for r in progress.history).encode()
    atomic_write(files.metrics, lambda f: f.write(lines))
    return progress


def _write_best(files: RunFiles, checkpoint: str, state, step: int, validation_loss: float,
                identity: dict) -> None:
    with open(checkpoint, "rb") as src:
        atomic_write(files.best_checkpoint, lambda f: shutil.copyfileobj(src, f))
    save_meta_params(files.best_meta_params, state.meta_params,
                     {"step": step, "validation_loss": validation_loss, **identity})


def save_checkpoint(files: RunFiles, progress: RunProgress, step: int, validation_loss: float,
                    identity: dict, keep: int) -> None:
    """``ckpt_<step>.npz``; ``best.npz`` and ``best_meta_params.npz`` if the validation loss
    is the lowest so far; only the last ``keep`` checkpoints stay."""
    path = files.checkpoint(step)
    save_pytree(path, progress.state)
    if validation_loss < progress.best["validation_loss"]:
        progress.best.update(validation_loss=validation_loss, step=step)
        _write_best(files, path, progress.state, step, validation_loss, identity)
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
    previous = read_json(files.card, "run file")
    return previous.get("commands", [previous.get("command")])


def resolve_optimizer(optimizer: str, init: str, warm: dict,
                      make_kwargs: dict | None = None) -> LearnedOptimizer:
    """The registry's optimizer with its initialisation: ``warm``, options of its
    ``init_*_meta_params`` (None: not given; an option it does not take is refused, its own
    rules, e.g. HyperAdam's warm start needing ``init="adam"``, are its own). ``make_kwargs``:
    arguments of its alias (:func:`alias_arguments`), bad values refused here."""
    given = {k: v for k, v in warm.items() if v is not None}
    spec = get_optimizer(optimizer)
    unknown = sorted(set(given) - set(inspect.signature(spec.init_meta_params).parameters))
    if unknown:
        raise ValueError(f"{' and '.join(unknown)} are not initialisation options of "
                         f"{spec.name}")
    learned = learned_optimizer(optimizer, init=init, make_kwargs=make_kwargs, **given)
    template = jax.eval_shape(learned.init_meta_params, jax.random.PRNGKey(0))  # bad init fails
    if make_kwargs:
        learned.make(template)  # bad values fail here
    return learned


def alias_arguments(optimizer: str, given: dict) -> dict:
    """The alias arguments given (not None) that differ from the alias's defaults, so a run
    made with the defaults spelled out is the same run as one without them; names the alias
    does not take are refused."""
    spec = get_optimizer(optimizer)
    parameters = inspect.signature(spec.make).parameters
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - set(parameters))
    if unknown:
        raise ValueError(f"{unknown}: not arguments of {spec.name}")
    return {k: v for k, v in given.items() if parameters[k].default != v}


def initial_meta_params(path: str, learned: LearnedOptimizer, make_kwargs: dict | None = None):
    """Meta-parameters to start from: a file of ``save_meta_params`` or a meta-training
    checkpoint; they must be the optimizer's kind with shapes it accepts (not necessarily
    its default init's: e.g. HyperAdam reading the sign agreement), and a file's
    ``make_kwargs`` (e.g. HyperAdam's ``normalization``) those of the run."""
    template = jax.eval_shape(learned.init_meta_params, jax.random.PRNGKey(0))
    try:
        theta, metadata = load_weights_or_checkpoint(path, learned.name)
    except ValueError as e:
        raise ValueError(f"--init-from {e}") from None
    if type(theta) is not type(template):
        raise ValueError(f"--init-from {path} holds {type(theta).__name__}, not the "
                         f"{type(template).__name__} of {learned.name}")
    if metadata is not None and make_kwargs_of(metadata) != (make_kwargs or {}):
        raise ValueError(f"--init-from {path}: its weights were made for "
                         f"{make_kwargs_of(metadata) or 'the default arguments'}, this run uses "
                         f"{make_kwargs or 'the default arguments'} (hyperadam_optax."
                         "contrib.global_rms_equivalent converts HyperAdam weights to global_rms)")
    found = {k: tuple(np.shape(v)) for k, v in theta._asdict().items()}
    expected = get_optimizer(learned.name).expected_shapes(found)
    if found != expected:
        raise ValueError(f"--init-from {path}: shapes {found} are not those of a "
                         f"{learned.name} (expected {expected})")
    return jax.tree.map(lambda x, t: x.astype(t.dtype), theta, template)


def _sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def with_recipe_defaults(config: MetaTrainConfig, learned: LearnedOptimizer) -> MetaTrainConfig:
    """``meta_lr=None`` and ``meta_loss=None`` become the optimizer's paper's."""
    if config.meta_lr is None:
        config = dataclasses.replace(config, meta_lr=learned.default_meta_lr)
    if config.meta_loss is None:
        config = dataclasses.replace(config, meta_loss=learned.meta_loss)
    return config


def task_data(task: str, data_dir: str | None):
    """``((x, y) or None, description)`` of the training data of ``task`` (a task, an
    ensemble or a comma-separated list of tasks)."""
    if not any(get_task(name).needs_data for name in ensemble_members(task)):
        return None, "none"
    d, description = mnist_data(data_dir, "train")
    return (d.x, d.y), description


def meta_train(*, optimizer: str = "hyperadam", task: str | None = None, init: str = "paper",
               warm_start_step: float | None = None,
               warm_start_betas: tuple[float, float] | None = None,
               warm_start_decay: tuple[float, float] | None = None,
               warm_start_clock: str | None = None,
               normalization: str | None = None,
               init_from: str | None = None,
               config: MetaTrainConfig | None = None,
               meta_steps: int = 1000, seed: int = 0,
               out_dir: str = "runs/meta-train", data_dir: str | None = None,
               resume: bool = False, checkpoint_every: int = 100, keep: int = 3,
               validation_tasks: int = 4, validation_metric: str = "mean",
               validate_on: str | None = None,
               progress: bool = True, command: str | None = None, log=print) -> dict:
    """Run (or resume) meta-training; returns the card (also written to ``card.json``).

    ``task``: a task of ``TASKS``, an ensemble of ``ENSEMBLES`` or comma-separated tasks; an
    ensemble draws one family per meta-step (:mod:`~hyperadam_optax.meta.ensemble`), its
    validation score is the mean over families of the log of each one's, and it turns on
    the persistent compilation cache. ``validate_on``: the families that score checkpoints
    instead of the training ones (``"selection"``: the selection families no training
    ensemble contains, or tasks separated by commas), scored the same way.

    ``task=None`` is the optimizer's paper's training problem; ``config.meta_lr=None`` its
    paper's meta learning rate; ``config.meta_loss=None`` its paper's meta-loss.
    ``warm_start_step`` (HyperAdam with ``init="adam"`` only): the warm start is Adam at
    ``0.005 * warm_start_step`` with Adam's decay rates ``warm_start_betas`` (default
    ``(0.9, 0.999)``), decaying over time to ``floor`` times that rate over about ``horizon``
    steps if ``warm_start_decay = (horizon, floor)``, counted by a clock whose rate is a cell
    input or an input gate's logit (``warm_start_clock``, ``init_meta_params``).
    ``normalization`` (HyperAdam only): ``"global_l2"`` or ``"global_rms"``
    (``scale_by_hyperadam``); when given it joins the run's identity and the ``make_kwargs``
    of its files' metadata, which evaluation and ``--init-from`` read back.
    ``validation_metric`` scores the checkpoints (the lowest is kept as best): ``"mean"``
    loss over the trajectory, or ``"final"``, the evaluation protocol's loss of the final
    parameters
    (:func:`~hyperadam_optax.meta.validation.make_evaluator`). ``init_from``: start from the
    meta-parameters in this file (``save_meta_params`` or a checkpoint of a run) instead of
    ``init``; its SHA-256 joins the run's identity.
    """
    for name, value in (("meta_steps", meta_steps), ("checkpoint_every", checkpoint_every),
                        ("keep", keep), ("validation_tasks", validation_tasks)):
        if not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if validation_metric not in VALIDATION_METRICS:
        raise ValueError(f"validation_metric must be one of {VALIDATION_METRICS}, "
                         f"got {validation_metric!r}")
    warm = {"warm_start_step": warm_start_step, "warm_start_betas": warm_start_betas,
            "warm_start_decay": warm_start_decay, "warm_start_clock": warm_start_clock}
    make_kwargs = alias_arguments(optimizer, {"normalization": normalization})
    learned = resolve_optimizer(optimizer, init, warm, make_kwargs)
    start_from = None
    if init_from is not None:
        start_from = initial_meta_params(init_from, learned, make_kwargs)
    if config is not None:  # names and blocks of the meta-parameters this run starts from
        trainable_mask(start_from if start_from is not None
                       else jax.eval_shape(learned.init_meta_params, jax.random.PRNGKey(0)),
                       config.trainable)
    if task == "":
        raise ValueError("--task is empty; leave it out for the optimizer's paper's task")
    task = task or learned.default_task
    config = with_recipe_defaults(config or MetaTrainConfig(), learned)
    members = ensemble_members(task)
    scored = members + (ensemble_members(validate_on) if validate_on is not None else ())
    if data_dir is not None and not any(get_task(name).needs_data for name in scored):
        raise ValueError(f"--data-dir {data_dir}: no task of this run trains on MNIST "
                         f"({', '.join(dict.fromkeys(scored))}); leave it out")
    data, data_desc = task_data(task, data_dir)
    families = [get_task(name).build(data) for name in members]
    identity = run_config(optimizer=learned.name, task=task, init=init, config=config, seed=seed,
                          data=data_desc, **warm, validation_metric=validation_metric,
                          validation_tasks=validation_tasks)
    if make_kwargs:
        identity["make_kwargs"] = make_kwargs
    if len(members) > 1:
        identity["ensemble"] = list(members)  # a changed ensemble cannot resume this run
        enable_compilation_cache()
    validation_families = families
    if validate_on is not None:
        names = ensemble_members(validate_on)
        reported = [n for n in names if n in REPORT_FAMILIES]
        if reported:
            raise ValueError(f"--validate-on {validate_on}: {reported} are report families, "
                             "only ever reported, never used to choose a checkpoint; choose on "
                             "'selection'")
        identity["validate_on"] = list(names)
        val_data, _ = task_data(",".join(names), data_dir)
        validation_families = [get_task(name).build(val_data) for name in names]
    if init_from is not None:
        identity["init_from_sha256"] = _sha256(init_from)
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed} (larger seeds would alias)")
    if config.num_slots % jax.device_count():
        raise ValueError(f"{config.num_slots_flag} ({config.num_slots}) must be a multiple of "
                         f"the number of devices ({jax.device_count()}): its task slots are "
                         "sharded over them")
    if resume and not os.path.exists(RunFiles(out_dir).config):
        raise FileNotFoundError(f"nothing to resume at {out_dir}: it holds no meta-training run "
                                "(no config.json); leave out --resume to start one there")
    with locked_run_dir(out_dir):
        return _run_locked(RunFiles(out_dir), learned, families, validation_families, config,
                           identity,
                           resume=resume, seed=seed, meta_steps=meta_steps,
                           checkpoint_every=checkpoint_every, keep=keep,
                           validation_tasks=validation_tasks,
                           validation_metric=validation_metric, progress=progress,
                           command=command, log=log, start_from=start_from)


def _run_locked(files: RunFiles, learned: LearnedOptimizer, families, validation_families,
                config: MetaTrainConfig,
                identity: dict, *, resume: bool, seed: int, meta_steps: int,
                checkpoint_every: int, keep: int, validation_tasks: int, validation_metric: str,
                progress: bool, command: str | None, log, start_from=None) -> dict:
    """:func:`meta_train` once it holds the run directory's lock."""
    claim_run_dir(files, identity, resume)
    for path in remove_partial_files(files):
        log(f"removed {path}, a file a killed run left half-written")
    key = jax.random.PRNGKey(seed)
    if len(families) == 1:
        initial = init_meta_state(key, learned, families[0], config, start_from)
    else:
        initial = init_ensemble_meta_state(key, learned, families, config, start_from)
    run = restore(files, initial, resume, identity, log)
    if run.start >= meta_steps:
        raise ValueError(f"{files.out_dir} is already at meta-step {run.start}; ask for more "
                         f"than --meta-steps {meta_steps} to continue it (nothing was changed)")
    evaluators = [make_evaluator(learned, family, num_tasks=validation_tasks,
                                 steps=config.trajectory, seed=VALIDATION_SEED,
                                 metric=validation_metric) for family in validation_families]
    evaluate = evaluators[0] if len(evaluators) == 1 else make_ensemble_evaluator(evaluators)
    if len(families) == 1:
        meta_step = make_meta_step(learned, families[0], config)
    else:
        meta_step = make_ensemble_meta_step(learned, families, config)
    commands = [*_previous_commands(files, run.start), command]
    commit = _git_commit()

    def write_card(step: int, wall: float, status: str) -> dict:
        card = _card(run, identity, commands, meta_steps=step, wall=wall, seed=seed,
                     status=status, commit=commit)
        _write_json(files.card, card)
        return card

    write_card(run.start, _wall_before(run), "running")  # the command survives a kill
    last = {"step": run.start, "wall": _wall_before(run)}

    def on_checkpoint(step: int, wall: float) -> None:
        last.update(step=step, wall=wall)
        write_card(step, wall, "running")

    try:
        wall = _train_loop(files, run, meta_step, evaluate, identity, meta_steps=meta_steps,
                           checkpoint_every=checkpoint_every, keep=keep,
                           bar=_progress_bar(progress, meta_steps, run.start, learned.name, log),
                           on_checkpoint=on_checkpoint)
    except NonFiniteMetaStepsError as e:
        write_card(last["step"], last["wall"], f"stopped: {e}")
        raise
    card = _card(run, identity, commands, meta_steps=meta_steps, wall=wall, seed=seed,
                 status="finished", commit=commit)
    save_meta_params(files.meta_params, run.state.meta_params, card)
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
    ``on_checkpoint(step, wall)`` after each. Returns the run's total wall time (earlier
    sessions included)."""
    t_start = time.perf_counter()
    wall_before = _wall_before(run)
    with open(files.metrics, "a") as metrics_file:
        def append(row):
            run.history.append(row)
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()

        def validate_and_checkpoint(step):
            val = float(evaluate(run.state.meta_params))
            append({"step": step, "validation_loss": val})
            save_checkpoint(files, run, step, val, identity, keep)
            on_checkpoint(step, wall_before + time.perf_counter() - t_start)
            check_skipped(run.history)
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
