"""Persistent evolution strategies (Vicol, Metz & Sohl-Dickstein, ICML 2021).

P antithetic pairs, each on its own task. Each particle keeps its OWN optimizee state across
truncations (the + particle always ran with ``θ + ε``, the - particle with ``θ - ε``), and the
estimate uses the noise accumulated since its trajectory began:

    ξ_p ← ξ_p + ε_p,   g = 1/P Σ_p (L+_p - L-_p) / (2σ²) · ξ_p,

with ``L±_p`` the truncation's meta-loss. Summed over a trajectory's truncations it is an
unbiased estimate of the gradient of the (Gaussian-smoothed) whole-trajectory meta-loss,
unlike truncated BPTT. ``ξ`` resets when the pair's trajectory ends (or either particle's
parameters become non-finite): both particles restart on the same fresh task.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hyperadam_optax.meta.config import MetaTrainConfig
from hyperadam_optax.meta.estimators.perturb import antithetic_noise, shifted, weighted_mean
from hyperadam_optax.meta.learned import LearnedOptimizer
from hyperadam_optax.meta.trainable import field_scales_tree
from hyperadam_optax.meta.truncation import (
    TaskSlot,
    choose,
    needs_restart,
    spread_slots,
    truncation,
)
from hyperadam_optax.tasks.base import TaskFamily

PyTree = Any


class PESSlots(NamedTuple):
    """The pairs' particles (same task, step and keys; own parameters and optimizer state)
    and their accumulated noise ``ξ`` (leading axis: the pair)."""

    positive: TaskSlot
    negative: TaskSlot
    noise: PyTree


def init_slots(key_slots, key_offsets, optimizer: LearnedOptimizer, family: TaskFamily,
               config: MetaTrainConfig, meta_params: PyTree, *, spread: bool = True
               ) -> PESSlots:
    """One pair per slot, spread over the truncations of a trajectory (``spread=False``: all
    at its start)."""
    slots = spread_slots(key_slots, key_offsets, optimizer, family, config, meta_params,
                         config.num_particles)
    if not spread:
        slots = slots._replace(step=jnp.zeros_like(slots.step))
    zeros = jax.tree.map(lambda t: jnp.zeros((config.num_particles,) + t.shape, t.dtype),
                         meta_params)
    # Separate buffers for the two particles, so the meta-state can be donated to jit.
    return PESSlots(slots, jax.tree.map(jnp.copy, slots), zeros)


def gradient(optimizer: LearnedOptimizer, family: TaskFamily, config: MetaTrainConfig,
             meta_params: PyTree, slots: PESSlots, key: jax.Array):
    """``(mean meta-loss, estimate, slots after, restarts)``."""
    scales = field_scales_tree(meta_params, config.field_scales)
    noise = antithetic_noise(key, meta_params, config.num_particles, config.sigma,
                             config.trainable, scales)
    accumulated = jax.tree.map(jnp.add, slots.noise, noise)

    def run(theta, slot):
        return truncation(optimizer, family, config, theta, slot)

    pos = jax.vmap(run)(shifted(meta_params, noise, 1.0), slots.positive)
    neg = jax.vmap(run)(shifted(meta_params, noise, -1.0), slots.negative)
    weights = (pos.meta_loss - neg.meta_loss) / (2 * config.sigma**2)
    estimate = weighted_mean(weights, accumulated, scales)
    restart = jax.vmap(lambda a, b: needs_restart(config, a) | needs_restart(config, b))(
        pos.carried, neg.carried)

    def pick(fresh, carried):
        return jax.vmap(choose)(restart, fresh, carried)

    after = PESSlots(
        pick(pos.fresh, pos.carried), pick(pos.fresh, neg.carried),
        jax.tree.map(lambda x: jnp.where(restart.reshape((-1,) + (1,) * (x.ndim - 1)), 0.0, x),
                     accumulated))
    loss = jnp.mean(pos.meta_loss + neg.meta_loss) / 2
    return loss, estimate, after, jnp.sum(restart)
