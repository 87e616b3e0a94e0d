"""Antithetic evolution strategies over whole trajectories (``unroll == trajectory``).

For P pairs, each on its own fresh task: ``ε_p ~ N(0, σ² I)``, ``L±_p`` the trajectory's
meta-loss with meta-parameters ``θ ± ε_p`` (same task, initialisation and minibatches), and

    g = 1/P Σ_p (L+_p - L-_p) / (2σ²) · ε_p,

an unbiased estimate of the gradient of the Gaussian-smoothed meta-loss. Nothing is
differentiated, so the optimizee may be anything that runs; the variance grows with the
number of meta-parameters and falls as 1/P.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hyperadam_optax.meta.config import MetaTrainConfig
from hyperadam_optax.meta.estimators.perturb import antithetic_noise, shifted, weighted_mean
from hyperadam_optax.meta.learned import LearnedOptimizer
from hyperadam_optax.meta.trainable import field_scales_tree
from hyperadam_optax.meta.truncation import TaskSlot, spread_slots, truncation
from hyperadam_optax.tasks.base import TaskFamily

PyTree = Any


def init_slots(key_slots, key_offsets, optimizer: LearnedOptimizer, family: TaskFamily,
               config: MetaTrainConfig, meta_params: PyTree) -> TaskSlot:
    """One fresh slot per antithetic pair."""
    return spread_slots(key_slots, key_offsets, optimizer, family, config, meta_params,
                        config.num_particles)


def gradient(optimizer: LearnedOptimizer, family: TaskFamily, config: MetaTrainConfig,
             meta_params: PyTree, slots: TaskSlot, key: jax.Array):
    """``(mean meta-loss, estimate, slots after (fresh tasks), restarts)``."""
    scales = field_scales_tree(meta_params, config.field_scales)
    noise = antithetic_noise(key, meta_params, config.num_particles, config.sigma,
                             config.trainable, scales)

    def run(theta, slot):
        return truncation(optimizer, family, config, theta, slot)

    pos = jax.vmap(run)(shifted(meta_params, noise, 1.0), slots)
    neg = jax.vmap(run)(shifted(meta_params, noise, -1.0), slots)
    weights = (pos.meta_loss - neg.meta_loss) / (2 * config.sigma**2)
    loss = jnp.mean(pos.meta_loss + neg.meta_loss) / 2
    return loss, weighted_mean(weights, noise, scales), pos.fresh, jnp.asarray(config.num_particles)
