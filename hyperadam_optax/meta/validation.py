"""Validation during meta-training: fixed tasks scored the same way at every checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from hyperadam_optax.meta.learned import LearnedOptimizer
from hyperadam_optax.meta.unroll import final_loss, flat_leaves, train
from hyperadam_optax.tasks.base import TaskFamily

PyTree = Any

VALIDATION_METRICS = ("mean", "final")
#: Seed of the fixed validation tasks that choose checkpoints; never a reported test run's.
VALIDATION_SEED = 20190127


def make_evaluator(optimizer: LearnedOptimizer, family: TaskFamily, *, num_tasks: int,
                   steps: int, seed: int, metric: str = "mean") -> Callable[[PyTree], jax.Array]:
    """``meta_params -> score`` over ``steps`` optimizee steps on fixed tasks (no grad).

    ``metric``: ``"mean"`` minibatch loss over the run, or ``"final"``, the evaluation
    protocol's score (the final parameters' loss over the minibatches the run saw, as in the
    paper's tables), each averaged over the tasks. The tasks, initialisations and minibatches
    are fixed by ``seed``, so two meta-parameter sets are compared on the same trajectories
    (used to pick the best checkpoint).
    """
    if metric not in VALIDATION_METRICS:
        raise ValueError(f"metric must be one of {VALIDATION_METRICS}, got {metric!r}")
    keys = jax.random.split(jax.random.PRNGKey(seed), num_tasks)

    def run(meta_params, key):
        losses, final, task, step_keys = train(flat_leaves(optimizer.make(meta_params)),
                                               family, key, steps)
        if metric == "final":
            return final_loss(family, final, task, step_keys)
        return jnp.mean(losses)

    @jax.jit
    def evaluate(meta_params):
        return jnp.mean(jax.vmap(run, in_axes=(None, 0))(meta_params, keys))

    return evaluate
