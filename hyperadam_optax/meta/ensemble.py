"""Meta-training on a task ensemble: several families, one sampled per meta-step.

Tasks of different shapes cannot share one ``vmap``, so each family keeps its own task slots
(``MetaState.slots`` is a tuple, one entry per family) and its own compiled meta-step
(:func:`~hyperadam_optax.meta.meta_step.make_meta_step` with ``slot_index``); the
meta-parameters and the outer optimizer are shared. The family of meta-step ``t`` is drawn
uniformly from the run's key and ``t``, so a resumed run draws the same sequence. Families
are compiled on first use; with JAX's persistent compilation cache
(:func:`enable_compilation_cache`) a resumed run does not compile them again.

A meta-loss that is comparable across families (the log-ratio one, L2O-Scale's) matters here:
with raw losses the family with the largest loss scale would dominate the meta-gradient.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from hyperadam_optax.meta.config import MetaTrainConfig
from hyperadam_optax.meta.estimators import ESTIMATORS
from hyperadam_optax.meta.learned import LearnedOptimizer
from hyperadam_optax.meta.meta_step import MetaState, make_meta_step, outer_optimizer
from hyperadam_optax.meta.sharding import shard_meta_state
from hyperadam_optax.tasks.base import TaskFamily

PyTree = Any

#: Folded into the meta-step's key to draw the family (the estimators use the key unfolded).
_FAMILY_SALT = 0x5EED


def init_ensemble_meta_state(key: jax.Array, optimizer: LearnedOptimizer,
                             families: Sequence[TaskFamily], config: MetaTrainConfig,
                             meta_params: PyTree | None = None) -> MetaState:
    """As :func:`~hyperadam_optax.meta.meta_step.init_meta_state`, with one set of slots per
    family (``slots[i]`` for ``families[i]``)."""
    k_meta, k_run, *k_families = jax.random.split(key, 2 + len(families))
    if meta_params is None:
        meta_params = optimizer.init_meta_params(k_meta)
    estimator = ESTIMATORS[config.estimator]
    slots = tuple(estimator.init_slots(*jax.random.split(k, 2), optimizer, family, config,
                                       meta_params) for k, family in zip(k_families, families))
    state = MetaState(meta_params, outer_optimizer(config).init(meta_params), slots,
                      jnp.zeros([], jnp.int32), jnp.zeros([], jnp.int32), k_run)
    return shard_meta_state(state)


def family_of_step(key: jax.Array, step, num_families: int) -> jax.Array:
    """The family index of the meta-step after ``step`` steps: uniform, fixed by the run."""
    key = jax.random.fold_in(jax.random.fold_in(key, step), _FAMILY_SALT)
    return jax.random.randint(key, (), 0, num_families)


def make_ensemble_meta_step(optimizer: LearnedOptimizer, families: Sequence[TaskFamily],
                            config: MetaTrainConfig
                            ) -> Callable[[MetaState], tuple[MetaState, dict]]:
    """``state -> (state, metrics)``: the meta-step of the family drawn for this step (each
    family's compiled once, on first use); ``metrics["family"]`` is its index."""
    steps = [make_meta_step(optimizer, family, config, slot_index=i)
             for i, family in enumerate(families)]
    draw = jax.jit(family_of_step, static_argnums=2)

    def meta_step(state: MetaState):
        i = int(draw(state.key, state.step, len(families)))
        state, metrics = steps[i](state)
        return state, {**metrics, "family": i}

    return meta_step


def make_ensemble_evaluator(evaluators: Sequence[Callable[[PyTree], jax.Array]]
                            ) -> Callable[[PyTree], jax.Array]:
    """The mean over families of ``log(score)``: a validation score comparable across
    families whose losses differ in scale (a family improving by a factor counts the same
    whatever its loss's units)."""

    def evaluate(meta_params):
        return jnp.mean(jnp.stack([jnp.log(ev(meta_params) + 1e-12) for ev in evaluators]))

    return evaluate


def enable_compilation_cache(path: str | None = None) -> str:
    """Turn on JAX's persistent compilation cache (``path``, else ``$HYPERADAM_OPTAX_CACHE``,
    else ``~/.cache/hyperadam_optax/jax``), so a resumed run reuses its compiled programs;
    returns the directory."""
    path = path or os.environ.get("HYPERADAM_OPTAX_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "hyperadam_optax", "jax")
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    return path
