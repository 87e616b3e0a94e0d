"""What a meta-training run is set up from, besides :class:`~hyperadam_optax.meta.config.
MetaTrainConfig` (how the meta-gradient is estimated and applied): the learned optimizer
(:class:`OptimizerChoice`), the tasks it trains and is scored on (:class:`TaskChoice`), and
the run's bookkeeping (:class:`RunOptions`). Each checks itself when made, so a bad request
is refused before a run directory is touched; none names an optimizer or a task.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

import jax

from hyperadam_optax.meta.learned import LearnedOptimizer, learned_optimizer
from hyperadam_optax.meta.validation import VALIDATION_METRICS
from hyperadam_optax.optimizers.registry import get_optimizer
from hyperadam_optax.tasks.base import TaskFamily
from hyperadam_optax.tasks.registry import (
    REPORT_FAMILIES,
    build_families,
    ensemble_members,
    get_task,
)


def _json_value(value):
    return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass(frozen=True)
class OptimizerChoice:
    """A registered learned optimizer and where its meta-parameters start.

    Attributes:
      name: a name of the optimizer registry (an alias is read as its canonical name).
      init: how ``init_meta_params`` starts (its spec's ``inits``; ``"paper"``: its authors').
      init_options: other arguments of its ``init_meta_params`` (e.g. HyperAdam's
        ``warm_start_step``); None values count as not given.
      options: arguments of its alias (e.g. HyperAdam's ``normalization``), kept only where
        they differ from the alias's defaults, so spelling out a default is the same run.
      init_from: start from the meta-parameters in this file (``save_meta_params`` or a
        meta-training checkpoint) instead of ``init``; its SHA-256 joins the run's identity.
    """

    name: str = "hyperadam"
    init: str = "paper"
    init_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    init_from: str | None = None

    def __post_init__(self):
        spec = get_optimizer(self.name)
        object.__setattr__(self, "name", spec.name)
        if self.init not in spec.inits:
            raise ValueError(f"init {self.init!r} is not an initialisation of {spec.name}; "
                             f"expected one of {spec.inits}")
        init_options = {k: v for k, v in dict(self.init_options).items() if v is not None}
        unknown = sorted(set(init_options) - spec.init_arguments())
        if unknown:
            raise ValueError(f"{' and '.join(unknown)} are not initialisation options of "
                             f"{spec.name} (it takes {sorted(spec.init_arguments())})")
        defaults = spec.alias_arguments()
        options = {k: v for k, v in dict(self.options).items() if v is not None}
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise ValueError(f"{unknown}: not arguments of {spec.name} (it takes "
                             f"{sorted(defaults)})")
        object.__setattr__(self, "init_options", init_options)
        object.__setattr__(self, "options", {k: v for k, v in options.items()
                                             if defaults[k] != v})
        if self.init_from is not None and not isinstance(self.init_from, str):
            raise ValueError(f"init_from must be a path or None, got {self.init_from!r}")

    def resolve(self) -> LearnedOptimizer:
        """The optimizer as meta-training sees it; its initialiser's own rules (e.g.
        HyperAdam's warm start needing ``init="adam"``) refuse bad values here. The alias's
        rules need the weights the run starts from: ``meta_train`` checks them."""
        learned = learned_optimizer(self.name, init=self.init, make_kwargs=self.options,
                                    **self.init_options)
        jax.eval_shape(learned.init_meta_params, jax.random.PRNGKey(0))
        return learned

    def identity(self) -> dict:
        """Its fields of the run's identity (``config.json``)."""
        out = {"optimizer": self.name, "init": self.init,
               **{k: _json_value(v) for k, v in self.init_options.items()}}
        if self.options:
            out["make_kwargs"] = dict(self.options)
        return out


@dataclasses.dataclass(frozen=True)
class Tasks:
    """The families a run trains on (one drawn per meta-step; one family is an ensemble of
    one) and the ones that score its checkpoints."""

    training: dict[str, TaskFamily]
    validation: dict[str, TaskFamily]
    data: str


@dataclasses.dataclass(frozen=True)
class TaskChoice:
    """What a run trains on and how its checkpoints are scored.

    Attributes:
      task: a task of ``TASKS``, an ensemble of ``ENSEMBLES`` or tasks separated by commas
        (one family drawn per meta-step); None: the optimizer's paper's problem.
      validate_on: the families that score checkpoints instead of the training ones
        (``"selection"``, or tasks separated by commas; never a report family); several are
        scored as the mean log of each one's score.
      validation_tasks: fixed tasks per validation family.
      validation_metric: ``"mean"`` loss over the trajectory, or ``"final"``, the evaluation
        protocol's loss of the final parameters
        (:func:`~hyperadam_optax.meta.validation.make_evaluator`).
      data_dir: full MNIST (``mnist.npz`` or IDX files) for the tasks that read MNIST;
        default: the embedded images. Refused when no task of the run reads MNIST.
    """

    task: str | None = None
    validate_on: str | None = None
    validation_tasks: int = 4
    validation_metric: str = "mean"
    data_dir: str | None = None

    def __post_init__(self):
        if self.task == "":
            raise ValueError("--task is empty; leave it out for the optimizer's paper's task")
        if self.validate_on is not None:
            reported = [n for n in ensemble_members(self.validate_on) if n in REPORT_FAMILIES]
            if reported:
                raise ValueError(f"--validate-on {self.validate_on}: {reported} are report "
                                 "families, only ever reported, never used to choose a "
                                 "checkpoint; choose on 'selection'")
        if not isinstance(self.validation_tasks, numbers.Integral) or self.validation_tasks < 1:
            raise ValueError(f"validation_tasks must be a positive int, got "
                             f"{self.validation_tasks!r}")
        if self.validation_metric not in VALIDATION_METRICS:
            raise ValueError(f"validation_metric must be one of {VALIDATION_METRICS}, got "
                             f"{self.validation_metric!r}")

    def names(self, default_task: str) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
        """The training task names and the validation ones (None: the training ones)."""
        training = ensemble_members(self.task or default_task)
        return training, (None if self.validate_on is None
                          else ensemble_members(self.validate_on))

    def build(self, default_task: str) -> Tasks:
        """The families, built once (MNIST loaded only if a family reads it)."""
        training, validation = self.names(default_task)
        scored = training + (validation or ())
        if self.data_dir is not None and not any(get_task(n).needs_data for n in scored):
            raise ValueError(f"--data-dir {self.data_dir}: no task of this run trains on MNIST "
                             f"({', '.join(dict.fromkeys(scored))}); leave it out")
        families, data = build_families(",".join(training), self.data_dir)
        validation_families = families
        if validation is not None:
            validation_families, _ = build_families(",".join(validation), self.data_dir)
        return Tasks(families, validation_families, data)

    def identity(self, default_task: str, data: str) -> dict:
        """Its fields of the run's identity (a changed ensemble or validation cannot resume)."""
        training, validation = self.names(default_task)
        out = {"task": self.task or default_task, "data": data,
               "validation_tasks": self.validation_tasks}
        if self.validation_metric != "mean":  # recorded only when not the default
            out["validation_metric"] = self.validation_metric
        if len(training) > 1:
            out["ensemble"] = list(training)
        if validation is not None:
            out["validate_on"] = list(validation)
        return out


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The run's directory and bookkeeping.

    Attributes:
      out_dir: the run directory (config, metrics, checkpoints, card, meta-parameters).
      meta_steps: meta-steps to reach (a resumed run continues up to this count).
      seed: the run's seed, in ``[0, 2**32)``.
      resume: continue the run in ``out_dir`` (its identity must be this request's).
      checkpoint_every: meta-steps between validations and checkpoints.
      keep: the last checkpoints kept (the best is kept apart).
      progress: a tqdm progress bar.
      command: the command line recorded in the card (None: called from Python).
    """

    out_dir: str = "runs/meta-train"
    meta_steps: int = 1000
    seed: int = 0
    resume: bool = False
    checkpoint_every: int = 100
    keep: int = 3
    progress: bool = True
    command: str | None = None

    def __post_init__(self):
        for name in ("meta_steps", "checkpoint_every", "keep"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.seed, numbers.Integral) or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an int in [0, 2**32), got {self.seed!r} (larger "
                             "seeds would alias)")
        for name in ("resume", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
