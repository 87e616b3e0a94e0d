"""Meta-training as one jitted program: a meta-gradient estimate and the outer update.

One meta-step (:func:`make_meta_step`) draws the family of this step (a single family is an
ensemble of one, :mod:`~hyperadam_optax.meta.ensemble`) and asks the configured estimator
(:mod:`hyperadam_optax.meta.estimators`: truncated BPTT by default, as in the authors' code;
full BPTT, ES or PES) for a meta-gradient over its task slots (``vmap``-ped; sharded over a
device mesh axis when several devices exist), each slot running truncations of ``unroll``
optimizee steps (``lax.scan``) with the learned optimizer built from the meta-parameters,
and applies the outer optimizer, all in one compiled function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hyperadam_optax.meta.config import META_LOSSES, MetaTrainConfig
from hyperadam_optax.meta.ensemble import family_of_step
from hyperadam_optax.meta.estimators import ESTIMATORS
from hyperadam_optax.meta.estimators.tbptt import truncated_unroll
from hyperadam_optax.meta.learned import LearnedOptimizer
from hyperadam_optax.meta.sharding import cpu_compiler_options, shard_meta_state
from hyperadam_optax.meta.trainable import (
    field_scales_tree,
    frozen_to_zero,
    scale_fields,
    trainable_mask,
)
from hyperadam_optax.meta.truncation import TaskSlot, all_finite
from hyperadam_optax.tasks.base import TaskFamily

PyTree = Any

__all__ = ["META_LOSSES", "MetaState", "MetaTrainConfig", "TaskSlot", "family_meta_step",
           "init_meta_state", "make_meta_step", "outer_optimizer", "truncated_unroll"]


class MetaState(NamedTuple):
    """Everything a meta-training run needs to continue exactly (checkpointed)."""

    meta_params: PyTree
    outer_state: PyTree
    slots: tuple  # per family, the estimator's task slots (TaskSlot for tbptt, full and es)
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


def _families(families: TaskFamily | Sequence[TaskFamily]) -> tuple[TaskFamily, ...]:
    return (families,) if isinstance(families, TaskFamily) else tuple(families)


def init_meta_state(key: jax.Array, optimizer: LearnedOptimizer,
                    families: TaskFamily | Sequence[TaskFamily], config: MetaTrainConfig,
                    meta_params: PyTree | None = None) -> MetaState:
    """Initial meta-state: the meta-parameters (``optimizer.init_meta_params`` unless given),
    the outer optimizer's state and, for each family (a single family is an ensemble of
    one), the estimator's slots (spread over the truncations of a trajectory, so every
    meta-step mixes early and late steps): ``slots[i]`` for ``families[i]``."""
    families = _families(families)
    k_meta, k_run, *k_families = jax.random.split(key, 2 + len(families))
    if meta_params is None:
        meta_params = optimizer.init_meta_params(k_meta)
    estimator = ESTIMATORS[config.estimator]
    slots = tuple(estimator.init_slots(*jax.random.split(k, 2), optimizer, family, config,
                                       meta_params) for k, family in zip(k_families, families))
    state = MetaState(meta_params, outer_optimizer(config).init(meta_params), slots,
                      jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32), k_run)
    return shard_meta_state(state)


def make_meta_step(optimizer: LearnedOptimizer, families: TaskFamily | Sequence[TaskFamily],
                   config: MetaTrainConfig) -> Callable[[MetaState], tuple[MetaState, dict]]:
    """The meta-step ``state -> (state, metrics)``: of a single family, one jitted program;
    of several, the program of the family drawn for this meta-step
    (:func:`~hyperadam_optax.meta.ensemble.family_of_step`, fixed by the run's key, so a
    resumed run draws the same sequence), each compiled on first use.

    Metrics: ``meta_loss`` (mean over slots), ``grad_norm`` (before clipping), ``finite``
    (whether the meta-gradient was applied), ``restarts`` (slots that began a new task),
    ``family`` (the index drawn). Non-finite meta-gradients are never applied: the
    meta-parameters and outer state are kept and ``skipped`` is incremented. ES and PES
    draw their noise from the run's key folded with the meta-step, so a resumed run draws
    the same noise.
    """
    families = _families(families)
    steps = [family_meta_step(optimizer, family, config, i) for i, family in enumerate(families)]
    if len(steps) == 1:
        return steps[0]
    draw = jax.jit(family_of_step, static_argnums=2)

    def meta_step(state: MetaState):
        return steps[int(draw(state.key, state.step, len(steps)))](state)

    return meta_step


def family_meta_step(optimizer: LearnedOptimizer, family: TaskFamily, config: MetaTrainConfig,
                     index: int) -> Callable[[MetaState], tuple[MetaState, dict]]:
    """The jitted meta-step on ``family``, whose slots are ``state.slots[index]`` (the others
    pass through untouched)."""
    outer = outer_optimizer(config)
    estimator = ESTIMATORS[config.estimator]

    def meta_step(state: MetaState):
        key = jax.random.fold_in(state.key, state.step)
        loss, grads, slots, restarts = estimator.gradient(optimizer, family, config,
                                                          state.meta_params, state.slots[index],
                                                          key)
        slots = tuple(slots if i == index else s for i, s in enumerate(state.slots))
        grads = frozen_to_zero(grads, trainable_mask(state.meta_params, config.trainable))
        # With field_scales the outer optimizer trains φ in θ = θ_0 + factor · φ.
        scales = field_scales_tree(state.meta_params, config.field_scales)
        grads = scale_fields(grads, scales)
        finite = all_finite(grads) & jnp.isfinite(loss)
        safe_grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
        updates, outer_state = outer.update(safe_grads, state.outer_state, state.meta_params)
        new_params = optax.apply_updates(state.meta_params, scale_fields(updates, scales))
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        new_state = MetaState(keep(new_params, state.meta_params),
                              keep(outer_state, state.outer_state), slots, state.step + 1,
                              state.skipped + (~finite).astype(jnp.int32), state.key)
        metrics = {"meta_loss": loss, "grad_norm": optax.tree.norm(grads), "finite": finite,
                   "restarts": restarts, "family": jnp.asarray(index, jnp.int32)}
        return new_state, metrics

    return jax.jit(meta_step, donate_argnums=0, compiler_options=cpu_compiler_options())
