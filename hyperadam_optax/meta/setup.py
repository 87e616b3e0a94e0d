"""Setting up a meta-training run: the optimizer with its initialisation and alias
arguments, the starting meta-parameters, the paper's defaults, the training data, and the
run's identity (``config.json``)."""

from __future__ import annotations

import dataclasses
import inspect
import os

import jax
import numpy as np

from hyperadam_optax.io.files import load_weights_or_checkpoint, make_kwargs_of
from hyperadam_optax.meta.config import MetaTrainConfig
from hyperadam_optax.meta.learned import LearnedOptimizer, learned_optimizer
from hyperadam_optax.optimizers.registry import get_optimizer
from hyperadam_optax.tasks.data import mnist_data
from hyperadam_optax.tasks.registry import ensemble_members, get_task


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

