"""Meta-training as one jitted program: truncated BPTT over ``lax.scan``, vmapped tasks.

One meta-step (:func:`make_meta_step`) runs, for each of B task slots in parallel
(``vmap``; sharded over a device mesh axis when several devices exist), a truncation of
``unroll`` optimizee steps with the learned optimizer built from the meta-parameters,
differentiates the meta-loss with ``jax.grad`` and applies the outer optimizer, all in one
compiled function. Each slot carries its optimizee parameters and optimizer state across
truncations without gradient (truncated BPTT, as in the authors' code) and starts a new
task when its trajectory of ``trajectory`` steps ends; slots start at evenly spread offsets
so a meta-gradient mixes early and late steps.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hyperadam_optax.meta.learned import LearnedOptimizer
from hyperadam_optax.meta.sharding import cpu_compiler_options, resolve_task_chunk, shard_meta_state
from hyperadam_optax.meta.unroll import final_loss, flat_leaves, unroll
from hyperadam_optax.tasks.base import TaskFamily

PyTree = Any

META_LOSSES = ("mean", "last", "sum", "log_ratio", "final")


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """Truncated-BPTT settings (defaults: the HyperAdam authors' code).

    Attributes:
      num_tasks: B, task slots per meta-step.
      unroll: optimizee steps per truncation (20).
      trajectory: optimizee steps before a slot starts a new task (100 = 5 truncations).
      meta_loss: ``"mean"`` of the pre-update losses of a truncation, ``"last"`` loss,
        ``"sum"``, or ``"log_ratio"``: mean of ``log(f_t / (f_0 + 1e-6) + 1e-6)`` with f_0 the
        trajectory's first loss (Wichrowska et al. 2017), or ``"final"``: the loss of the
        truncation's final parameters averaged over the minibatches it saw (the evaluation
        protocol's score, :func:`tasks.final_loss`, per truncation). ``None``: the
        optimizer's default.
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

    def __post_init__(self):
        for name in ("num_tasks", "unroll", "trajectory"):
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
        if self.meta_loss is not None and self.meta_loss not in META_LOSSES:
            raise ValueError(f"meta_loss must be one of {META_LOSSES}, got {self.meta_loss!r}")
        if self.meta_lr is not None and not 0 < self.meta_lr <= 1:
            raise ValueError(f"meta_lr must be in (0, 1] (the outer Adam's step), got "
                             f"{self.meta_lr!r}")
        if self.cosine_decay_steps is not None and (
                not isinstance(self.cosine_decay_steps, int) or self.cosine_decay_steps < 1):
            raise ValueError("cosine_decay_steps must be None or a positive int, got "
                             f"{self.cosine_decay_steps!r}")


class TaskSlot(NamedTuple):
    """One task slot's trajectory (batched over B slots in :class:`MetaState`)."""

    task: PyTree
    params: PyTree
    opt_state: PyTree
    step: jax.Array  # optimizee steps done in the current trajectory
    first_loss: jax.Array  # f_0 of the trajectory (for the log-ratio meta-loss)
    key: jax.Array


class MetaState(NamedTuple):
    """Everything a meta-training run needs to continue exactly (checkpointed)."""

    meta_params: PyTree
    outer_state: PyTree
    slots: TaskSlot
    step: jax.Array  # meta-steps done
    skipped: jax.Array  # meta-steps whose meta-gradient was not finite (not applied)
    key: jax.Array


def outer_optimizer(config: MetaTrainConfig) -> optax.GradientTransformation:
    """Adam on the meta-parameters, after global-norm clipping of the meta-gradient."""
    if config.meta_lr is None:
        raise ValueError("MetaTrainConfig.meta_lr is None: set it (or use meta.run.meta_train)")
    rate = config.meta_lr
    if config.cosine_decay_steps is not None:
        rate = optax.cosine_decay_schedule(config.meta_lr, config.cosine_decay_steps, alpha=0.1)
    adam = optax.adam(rate)
    return adam if config.clip_norm is None else optax.chain(
        optax.clip_by_global_norm(config.clip_norm), adam)


def _fresh_slot(optimizer, family, meta_params, key, step):
    k_task, k_init, k_next = jax.random.split(key, 3)
    task = family.sample_task(k_task)
    params = family.init(k_init, task)
    opt_state = flat_leaves(optimizer.make(meta_params)).init(params)
    return TaskSlot(task, params, opt_state, jnp.asarray(step, jnp.int32),
                    jnp.asarray(jnp.nan, jnp.float32), k_next)


def init_meta_state(key: jax.Array, optimizer: LearnedOptimizer, family: TaskFamily,
                    config: MetaTrainConfig, meta_params: PyTree | None = None) -> MetaState:
    """Initial meta-state; slots start spread evenly over the truncations of a trajectory
    (slot i at truncation ``i mod (trajectory / unroll)``, in a random order), so every
    meta-step mixes early and late steps in the same proportions."""
    k_meta, k_slots, k_offsets, k_run = jax.random.split(key, 4)
    if meta_params is None:
        meta_params = optimizer.init_meta_params(k_meta)
    n_trunc = config.trajectory // config.unroll
    offsets = config.unroll * (jax.random.permutation(k_offsets, config.num_tasks) % n_trunc)
    slots = jax.vmap(lambda k, s: _fresh_slot(optimizer, family, meta_params, k, s))(
        jax.random.split(k_slots, config.num_tasks), offsets)
    state = MetaState(meta_params, outer_optimizer(config).init(meta_params), slots,
                      jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32), k_run)
    return shard_meta_state(state)


def _all_finite(tree) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True


def _meta_loss(kind: str, losses: jax.Array, first_loss: jax.Array, final) -> jax.Array:
    """The truncation's meta-loss of ``kind`` (:class:`MetaTrainConfig`); ``final()`` computes
    the protocol's final loss only when asked for."""
    if kind == "mean":
        return jnp.mean(losses)
    if kind == "last":
        return losses[-1]
    if kind == "sum":
        return jnp.sum(losses)
    if kind == "final":
        return final()
    if kind == "log_ratio":
        return jnp.mean(jnp.log(losses / (first_loss + 1e-6) + 1e-6))
    raise ValueError(f"meta_loss must be one of {META_LOSSES}, got {kind!r}")


def truncated_unroll(optimizer: LearnedOptimizer, family: TaskFamily, config: MetaTrainConfig,
                     meta_params: PyTree, slot: TaskSlot) -> tuple[jax.Array, tuple]:
    """One truncation of one slot: ``(meta_loss, (losses, slot_after))``.

    The losses are the pre-update losses ``f(w_{t-1})`` of the ``unroll`` steps. The
    returned slot's parameters and optimizer state are cut from the gradient (truncated
    BPTT); its trajectory is restarted on a new task when it ends or became non-finite.
    """
    tx = flat_leaves(optimizer.make(meta_params))
    keys = jax.random.split(slot.key, config.unroll + 2)
    (params, opt_state), losses = unroll(tx, family, slot.task, slot.params, slot.opt_state,
                                         keys[: config.unroll],
                                         first_order=not config.second_order, remat=config.remat)
    starts = (slot.step == 0) | jnp.isnan(slot.first_loss)  # NaN: a slot started mid-way
    first_loss = jnp.where(starts, jax.lax.stop_gradient(losses[0]), slot.first_loss)
    meta_loss = _meta_loss(config.meta_loss or optimizer.meta_loss, losses, first_loss,
                           lambda: final_loss(family, params, slot.task, keys[: config.unroll]))

    carried = jax.lax.stop_gradient(TaskSlot(slot.task, params, opt_state,
                                             slot.step + config.unroll, first_loss,
                                             keys[-1]))
    fresh = _fresh_slot(optimizer, family, jax.lax.stop_gradient(meta_params), keys[-2], 0)
    restart = (carried.step >= config.trajectory) | ~_all_finite(carried.params)
    slot_after = jax.tree.map(lambda a, b: jnp.where(restart, a, b), fresh, carried)
    return meta_loss, (losses, slot_after)


def make_meta_step(optimizer: LearnedOptimizer, family: TaskFamily, config: MetaTrainConfig
                   ) -> Callable[[MetaState], tuple[MetaState, dict]]:
    """The jitted meta-step ``state -> (state, metrics)``.

    Metrics: ``meta_loss`` (mean over slots), ``grad_norm`` (before clipping), ``finite``
    (whether the meta-gradient was applied), ``restarts`` (slots that began a new task).
    Non-finite meta-gradients are never applied: the meta-parameters and outer state are
    kept and ``skipped`` is incremented.
    """
    outer = outer_optimizer(config)
    chunk = resolve_task_chunk(config)

    def slot_loss(meta_params, slot):
        return truncated_unroll(optimizer, family, config, meta_params, slot)

    def chunk_loss(meta_params, slots):
        losses, aux = jax.vmap(slot_loss, in_axes=(None, 0))(meta_params, slots)
        return jnp.mean(losses), aux

    def loss_and_grad(meta_params, slots):
        """Mean meta-loss over the B slots, its gradient, and the slots' aux. Chunks of
        slots are differentiated one after another, each forward followed at once by its
        backward, so only one chunk's residuals are alive at a time."""
        if chunk == 1:
            body, xs = functools.partial(jax.value_and_grad(slot_loss, has_aux=True),
                                         meta_params), slots
        elif chunk == config.num_tasks:
            return jax.value_and_grad(chunk_loss, has_aux=True)(meta_params, slots)
        else:
            body = functools.partial(jax.value_and_grad(chunk_loss, has_aux=True), meta_params)
            xs = jax.tree.map(lambda x: x.reshape((-1, chunk) + x.shape[1:]), slots)
        (losses, aux), grads = jax.lax.map(body, xs)
        if chunk > 1:  # (B / chunk, chunk, ...) -> (B, ...)
            aux = jax.tree.map(lambda x: x.reshape((config.num_tasks,) + x.shape[2:]), aux)
        return (jnp.mean(losses), aux), jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)

    def meta_step(state: MetaState):
        (loss, (_, slots)), grads = loss_and_grad(state.meta_params, state.slots)
        finite = _all_finite(grads) & jnp.isfinite(loss)
        safe_grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
        updates, outer_state = outer.update(safe_grads, state.outer_state, state.meta_params)
        new_params = optax.apply_updates(state.meta_params, updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        restarts = jnp.sum(slots.step == 0)
        new_state = MetaState(keep(new_params, state.meta_params),
                              keep(outer_state, state.outer_state), slots, state.step + 1,
                              state.skipped + (~finite).astype(jnp.int32), state.key)
        metrics = {"meta_loss": loss, "grad_norm": optax.tree.norm(grads), "finite": finite,
                   "restarts": restarts}
        return new_state, metrics

    return jax.jit(meta_step, donate_argnums=0, compiler_options=cpu_compiler_options())


