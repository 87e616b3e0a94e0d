"""One truncation of one task slot: the piece every meta-gradient estimator is built from.

A slot (:class:`TaskSlot`) is one optimizee trajectory in progress: its task, parameters,
optimizer state, step and PRNG key. :func:`truncation` advances it by ``config.unroll``
optimizee steps with the learned optimizer built from some meta-parameters
(:func:`~hyperadam_optax.meta.unroll.unroll`) and scores them with the meta-loss; whether
and how the result is differentiated, perturbed or restarted is the estimator's business.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hyperadam_optax.meta.config import META_LOSSES, MetaTrainConfig
from hyperadam_optax.meta.learned import LearnedOptimizer
from hyperadam_optax.meta.unroll import final_loss, flat_leaves, unroll
from hyperadam_optax.tasks.base import TaskFamily

PyTree = Any


class TaskSlot(NamedTuple):
    """One task slot's trajectory (batched over the slots in ``MetaState.slots``)."""

    task: PyTree
    params: PyTree
    opt_state: PyTree
    step: jax.Array  # optimizee steps done in the current trajectory
    first_loss: jax.Array  # f_0 of the trajectory (for the log-ratio meta-loss)
    key: jax.Array


def fresh_slot(optimizer: LearnedOptimizer, family: TaskFamily, meta_params: PyTree,
               key: jax.Array, step) -> TaskSlot:
    """A new task with its initial parameters and optimizer state, at trajectory ``step``."""
    k_task, k_init, k_next = jax.random.split(key, 3)
    task = family.sample_task(k_task)
    params = family.init(k_init, task)
    opt_state = flat_leaves(optimizer.make(meta_params)).init(params)
    return TaskSlot(task, params, opt_state, jnp.asarray(step, jnp.int32),
                    jnp.asarray(jnp.nan, jnp.float32), k_next)


def spread_slots(key_slots: jax.Array, key_offsets: jax.Array, optimizer: LearnedOptimizer,
                 family: TaskFamily, config: MetaTrainConfig, meta_params: PyTree,
                 count: int) -> TaskSlot:
    """``count`` fresh slots spread evenly over the truncations of a trajectory (slot i at
    truncation ``i mod (trajectory / unroll)``, in a random order), so every meta-step mixes
    early and late steps in the same proportions."""
    n_trunc = config.trajectory // config.unroll
    offsets = config.unroll * (jax.random.permutation(key_offsets, count) % n_trunc)
    return jax.vmap(lambda k, s: fresh_slot(optimizer, family, meta_params, k, s))(
        jax.random.split(key_slots, count), offsets)


def start_step(config: MetaTrainConfig, key: jax.Array):
    """The trajectory step a new task starts at: 0, or, with ``config.min_trajectory``,
    ``trajectory - H`` for a horizon ``H`` drawn log-uniformly from ``[min_trajectory,
    trajectory]`` and rounded down to a multiple of ``unroll`` (the slot then restarts after
    ``H`` steps, its step counting up to ``trajectory`` as always)."""
    if config.min_trajectory is None:
        return 0
    log_h = jax.random.uniform(jax.random.fold_in(key, 1), (), minval=math.log(
        config.min_trajectory), maxval=math.log(config.trajectory + 1))
    h = jnp.clip(jnp.floor(jnp.exp(log_h) / config.unroll) * config.unroll,
                 config.min_trajectory // config.unroll * config.unroll, config.trajectory)
    return (config.trajectory - h).astype(jnp.int32)


def all_finite(tree) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else True


def meta_loss(kind: str, losses: jax.Array, first_loss: jax.Array, final,
              ends_trajectory: jax.Array, late: jax.Array) -> jax.Array:
    """The truncation's meta-loss of ``kind`` (:class:`MetaTrainConfig`); ``final()`` computes
    the protocol's final loss only when asked for; ``ends_trajectory``: this truncation's
    last step is its trajectory's last; ``late``: which of ``losses`` were taken in the
    trajectory's second half."""
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
    if kind == "log_ratio_late":
        return jnp.mean(jnp.where(late, jnp.log(losses / (first_loss + 1e-6) + 1e-6), 0.0))
    if kind == "log_final":
        return jnp.where(ends_trajectory, jnp.log(final() / (first_loss + 1e-6) + 1e-6), 0.0)
    raise ValueError(f"meta_loss must be one of {META_LOSSES}, got {kind!r}")


class Truncation(NamedTuple):
    """What :func:`truncation` returns: the meta-loss, the pre-update losses, the slot
    carried on (gradient not cut) and a fresh slot to restart with."""

    meta_loss: jax.Array
    losses: jax.Array
    carried: TaskSlot
    fresh: TaskSlot


def truncation(optimizer: LearnedOptimizer, family: TaskFamily, config: MetaTrainConfig,
               meta_params: PyTree, slot: TaskSlot) -> Truncation:
    """``config.unroll`` optimizee steps of ``slot`` with the optimizer made from
    ``meta_params``, scored by ``config.meta_loss`` (or the optimizer's default)."""
    tx = flat_leaves(optimizer.make(meta_params))
    keys = jax.random.split(slot.key, config.unroll + 2)
    (params, opt_state), losses = unroll(tx, family, slot.task, slot.params, slot.opt_state,
                                         keys[: config.unroll],
                                         first_order=not config.second_order, remat=config.remat)
    starts = (slot.step == 0) | jnp.isnan(slot.first_loss)  # NaN: a slot started mid-way
    first_loss = jnp.where(starts, jax.lax.stop_gradient(losses[0]), slot.first_loss)
    loss = meta_loss(config.meta_loss or optimizer.meta_loss, losses, first_loss,
                     lambda: final_loss(family, params, slot.task, keys[: config.unroll]),
                     slot.step + config.unroll >= config.trajectory,
                     2 * (slot.step + jnp.arange(config.unroll)) >= config.trajectory)
    carried = TaskSlot(slot.task, params, opt_state, slot.step + config.unroll, first_loss,
                       keys[-1])
    fresh = fresh_slot(optimizer, family, jax.lax.stop_gradient(meta_params), keys[-2],
                       start_step(config, keys[-2]))
    return Truncation(loss, losses, carried, fresh)


def needs_restart(config: MetaTrainConfig, carried: TaskSlot) -> jax.Array:
    """The trajectory ended, or its parameters became non-finite."""
    return (carried.step >= config.trajectory) | ~all_finite(carried.params)


def choose(restart: jax.Array, fresh: TaskSlot, carried: TaskSlot) -> TaskSlot:
    return jax.tree.map(lambda a, b: jnp.where(restart, a, b), fresh, carried)
