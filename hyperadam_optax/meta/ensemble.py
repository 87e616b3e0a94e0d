"""Meta-training on a task ensemble: several families, one sampled per meta-step.

Tasks of different shapes cannot share one ``vmap``, so each family keeps its own task slots
(``MetaState.slots`` is a tuple, one entry per family) and its own compiled meta-step
(:func:`~hyperadam_optax.meta.meta_step.family_meta_step`); the meta-parameters and the
outer optimizer are shared. A single family is an ensemble of one. The family of meta-step
``t`` is drawn uniformly from the run's key and ``t`` (:func:`family_of_step`), so a resumed
run draws the same sequence. Families are compiled on first use; the CLI turns on JAX's
persistent compilation cache, so a resumed run does not compile them again.

A meta-loss that is comparable across families (the log-ratio one, L2O-Scale's) matters here:
with raw losses the family with the largest loss scale would dominate the meta-gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

#: Folded into the meta-step's key to draw the family (the estimators use the key unfolded).
_FAMILY_SALT = 0x5EED


def family_of_step(key: jax.Array, step, num_families: int) -> jax.Array:
    """The family index of the meta-step after ``step`` steps: uniform, fixed by the run."""
    key = jax.random.fold_in(jax.random.fold_in(key, step), _FAMILY_SALT)
    return jax.random.randint(key, (), 0, num_families)


def make_ensemble_evaluator(evaluators: Sequence[Callable[[PyTree], jax.Array]]
                            ) -> Callable[[PyTree], jax.Array]:
    """The mean over families of ``log(score)``: a validation score comparable across
    families whose losses differ in scale (a family improving by a factor counts the same
    whatever its loss's units)."""

    def evaluate(meta_params):
        return jnp.mean(jnp.stack([jnp.log(ev(meta_params) + 1e-12) for ev in evaluators]))

    return evaluate
