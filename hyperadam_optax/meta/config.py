"""Meta-training settings (:class:`MetaTrainConfig`), shared by every estimator."""

from __future__ import annotations

import dataclasses

from hyperadam_optax.meta.trainable import parse_entry, parse_scale

META_LOSSES = ("mean", "last", "sum", "log_ratio", "log_ratio_late", "final", "log_final")
#: Meta-gradient estimators (``hyperadam_optax.meta.estimators``).
ESTIMATORS = ("tbptt", "full", "es", "pes")
#: The estimators that perturb the meta-parameters (their slots are ``num_particles`` pairs).
EVOLUTION_STRATEGIES = ("es", "pes")
#: ES/PES perturbations larger than this are refused: the meta-parameters are of order 1, so
#: a larger sigma only measures noise (sigma = 1e30 made every meta-step non-finite).
MAX_SIGMA = 1.0
#: The options only some estimators read: ``field -> (estimators that read it, CLI flag)``.
#: Another estimator refuses a value other than the default (the CLI: any value given).
ESTIMATOR_OPTIONS = {
    "num_tasks": (("tbptt", "full"), "--num-tasks"),
    "task_chunk": (("tbptt", "full"), "--task-chunk"),
    "second_order": (("tbptt", "full"), "--second-order"),
    "normalize_task_gradients": (("tbptt", "full"), "--normalize-task-gradients"),
    "num_particles": (EVOLUTION_STRATEGIES, "--num-particles"),
    "sigma": (EVOLUTION_STRATEGIES, "--sigma"),
}


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """Meta-training settings (defaults: the HyperAdam authors' truncated BPTT).

    Attributes:
      estimator: the meta-gradient estimator (:mod:`hyperadam_optax.meta.estimators`):
        ``"tbptt"`` truncated backpropagation (the authors'), ``"full"`` backpropagation
        through whole trajectories (``unroll == trajectory``), ``"es"`` antithetic evolution
        strategies over whole trajectories, ``"pes"`` persistent evolution strategies over
        truncations (Vicol et al. 2021, unbiased for the whole trajectory).
      num_tasks: B, task slots per meta-step (``tbptt``, ``full``).
      num_particles: antithetic pairs per meta-step, each on its own task (``es``, ``pes``).
      sigma: standard deviation of the ES/PES perturbations of the meta-parameters.
      unroll: optimizee steps per truncation (20).
      trajectory: optimizee steps before a slot starts a new task (100 = 5 truncations).
      min_trajectory: if set, each new task's horizon is drawn log-uniformly from
        ``[min_trajectory, trajectory]`` (rounded down to a multiple of ``unroll``; L2O-Scale
        and Celo vary horizons so the optimizer cannot rely on one length); ``None``: every
        task runs ``trajectory`` steps.
      meta_loss: ``"mean"`` of the pre-update losses of a truncation, ``"last"`` loss,
        ``"sum"``, or ``"log_ratio"``: mean of ``log(f_t / (f_0 + 1e-6) + 1e-6)`` with f_0 the
        trajectory's first loss (Wichrowska et al. 2017), or ``"log_ratio_late"``: the same
        terms counted only for the steps of the trajectory's second half (``t >= trajectory /
        2``; 0 for the others), so the late losses users score are rewarded rather than a long
        fast phase, with half of the truncations still carrying a signal, or ``"final"``: the loss of the
        truncation's final parameters averaged over the minibatches it saw (the evaluation
        protocol's score, :func:`tasks.final_loss`, per truncation), or ``"log_final"``:
        ``log(final / (f_0 + 1e-6) + 1e-6)`` in the truncation that ends the trajectory and 0
        in the others, so the objective is the log of the loss users score (the final
        parameters' at the end of their run) rather than the area under the curve that
        ``"log_ratio"`` rewards (for PES, ES and full BPTT: truncated BPTT only sees it in
        the last truncation). ``None``: the optimizer's default.
      second_order: keep the optimizee gradient's dependence on the meta-parameters
        (default False: the gradient is a constant, as in the authors' code).
      meta_lr: the outer Adam's learning rate (``None``: the optimizer's default, resolved
        by ``meta.run.meta_train``).
      clip_norm: global-norm clipping of the meta-gradient (``None``: no clipping).
      cosine_decay_steps: if set, the outer rate follows a cosine from ``meta_lr`` down to
        ``meta_lr / 10`` over this many meta-steps (then stays there).
      remat: recompute each optimizee step in the backward pass instead of storing its
        intermediates (``jax.checkpoint``); less memory and, on CPU, faster.
      task_chunk: how many task slots are vmapped together; chunks run one after another
        (``lax.map``). ``None``: 1 on a single CPU device (each task's arrays stay in cache:
        benchmarks/meta_step.py), else all B in one vmap. Must divide B.
      trainable: the fields of the meta-parameters that train, whole or a block (e.g.
        ``("theta_q", "b_q")`` or ``("theta_q[1:]", "theta_h[:, 1:20]")``);
        the others keep their initial values and are not perturbed by ES/PES
        (:mod:`hyperadam_optax.meta.trainable`). ``None``: all.
      field_scales: fields or blocks of the meta-parameters with a factor each, e.g.
        ``("theta_p=0.02", "theta_u[:20]=0.02")``: their ES/PES perturbations and outer
        updates are multiplied by it (the run trains ``φ`` in ``θ = θ_0 + factor · φ``,
        :func:`~hyperadam_optax.meta.trainable.field_scales_tree`). ``None``: all 1.
      normalize_task_gradients: scale each task slot's meta-gradient, over the trainable
        entries, to norm 1 before the mean over slots (``tbptt`` and ``full``, whose
        per-task gradients are exact): every task gets one equal vote on the direction, so
        a task whose meta-loss is chaotic in the meta-parameters (large gradients of unstable
        direction, Metz et al. 2019) cannot outvote the smooth ones (measured in
        research/record.md). Default False: the mean of the raw gradients.
    """

    num_tasks: int = 8
    unroll: int = 20
    trajectory: int = 100
    meta_loss: str | None = None
    second_order: bool = False
    meta_lr: float | None = 1e-4
    clip_norm: float | None = 1.0
    cosine_decay_steps: int | None = None
    remat: bool = True
    task_chunk: int | None = None
    estimator: str = "tbptt"
    num_particles: int = 8
    sigma: float = 0.01
    min_trajectory: int | None = None
    trainable: tuple[str, ...] | None = None
    normalize_task_gradients: bool = False
    field_scales: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.estimator in ("full", "es") and self.unroll != self.trajectory:
            raise ValueError(f"estimator {self.estimator!r} unrolls whole trajectories: unroll "
                             f"({self.unroll}) must equal trajectory ({self.trajectory})")
        if not (isinstance(self.sigma, (int, float)) and 0 < self.sigma <= MAX_SIGMA):
            raise ValueError(f"sigma must be in (0, {MAX_SIGMA}] (the standard deviation of "
                             f"perturbations of meta-parameters of order 1), got {self.sigma!r}")
        for name in ("num_tasks", "unroll", "trajectory", "num_particles"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.task_chunk is not None and (not isinstance(self.task_chunk, int)
                                            or self.task_chunk < 1
                                            or self.num_tasks % self.task_chunk):
            raise ValueError(f"task_chunk must be None or a positive divisor of num_tasks "
                             f"({self.num_tasks}), got {self.task_chunk!r}")
        if self.trajectory % self.unroll:
            raise ValueError(f"trajectory ({self.trajectory}) must be a multiple of unroll "
                             f"({self.unroll})")
        if self.min_trajectory is not None and (
                not isinstance(self.min_trajectory, int)
                or not self.unroll <= self.min_trajectory <= self.trajectory):
            raise ValueError(f"min_trajectory must be None or an int in [unroll, trajectory] = "
                             f"[{self.unroll}, {self.trajectory}], got {self.min_trajectory!r}")
        for name, parse, what in (("trainable", parse_entry, "field names"),
                                  ("field_scales", parse_scale, "FIELD=FACTOR entries")):
            entries = getattr(self, name)
            if entries is not None and (not isinstance(entries, tuple) or not entries
                                        or not all(isinstance(n, str) for n in entries)):
                raise ValueError(f"{name} must be None or a non-empty tuple of {what}, got "
                                 f"{entries!r}")
            for entry in entries or ():
                parse(entry)
        for name in ("second_order", "remat", "normalize_task_gradients"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.clip_norm is not None and not (isinstance(self.clip_norm, (int, float))
                                               and 0 < self.clip_norm < float("inf")):
            raise ValueError(f"clip_norm must be None or positive and finite, got "
                             f"{self.clip_norm!r}")
        self._refuse_options_that_do_not_apply()
        if self.meta_loss is not None and self.meta_loss not in META_LOSSES:
            raise ValueError(f"meta_loss must be one of {META_LOSSES}, got {self.meta_loss!r}")
        if self.meta_lr is not None and not 0 < self.meta_lr <= 1:
            raise ValueError(f"meta_lr must be in (0, 1] (the outer Adam's step), got "
                             f"{self.meta_lr!r}")
        if self.cosine_decay_steps is not None and (
                not isinstance(self.cosine_decay_steps, int) or self.cosine_decay_steps < 1):
            raise ValueError("cosine_decay_steps must be None or a positive int, got "
                             f"{self.cosine_decay_steps!r}")

    def _refuse_options_that_do_not_apply(self) -> None:
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, (readers, flag) in ESTIMATOR_OPTIONS.items():
            if self.estimator not in readers and getattr(self, name) != defaults[name]:
                raise ValueError(f"{name} ({flag}) = {getattr(self, name)!r} does not apply to "
                                 f"estimator {self.estimator!r}; only {' and '.join(readers)} "
                                 "read it")

    def identity(self) -> dict:
        """Its fields of the run's identity (``config.json``): resuming with any of them
        changed is refused. ``task_chunk`` is left out: it only schedules the same
        computation, so a run may resume on other hardware (the sums over slots then run in
        another order: equal to an uninterrupted run up to float rounding, not bit-for-bit).
        ``min_trajectory``, ``trainable`` and ``field_scales`` are recorded only when set,
        ``normalize_task_gradients`` only when on, so older runs stand."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items() if k != "task_chunk"
                and not (k in ("min_trajectory", "trainable", "field_scales") and v is None)
                and not (k == "normalize_task_gradients" and not v)}

    @property
    def num_slots(self) -> int:
        """The task slots a meta-step runs (sharded over devices): ``num_particles`` for
        ES/PES, else ``num_tasks``."""
        return self.num_particles if self.estimator in EVOLUTION_STRATEGIES else self.num_tasks

    @property
    def num_slots_flag(self) -> str:
        return "--num-particles" if self.estimator in EVOLUTION_STRATEGIES else "--num-tasks"
