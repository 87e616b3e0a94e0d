"""Validation during meta-training scores checkpoints as the evaluation protocol does."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hyperadam_optax as ha
from hyperadam_optax import meta as mt
from hyperadam_optax import tasks


def _tiny_hyperadam(j=3, dtype=jnp.float32):
    return mt.LearnedOptimizer(
        "hyperadam", lambda k: ha.init_meta_params(k, j, "paper", dtype=dtype),
        lambda theta: ha.hyperadam(0.05, theta))


def test_final_metric_validation_is_the_evaluation_protocol():
    """``metric="final"`` scores exactly what the tables report (run_protocol's final loss on
    the same seeds); ``"mean"`` is the mean minibatch loss of the same runs."""
    from hyperadam_optax.evaluation import run_protocol

    opt = _tiny_hyperadam(j=3)
    family = tasks.random_quadratics(5, noise=0.1)
    theta = opt.init_meta_params(jax.random.PRNGKey(1))
    result = run_protocol(lambda _: opt.make(theta), family, steps=15, runs=6, seed=3)
    final = mt.make_evaluator(opt, family, num_tasks=6, steps=15, seed=3, metric="final")
    mean = mt.make_evaluator(opt, family, num_tasks=6, steps=15, seed=3)
    np.testing.assert_allclose(float(final(theta)), result.final_loss.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(mean(theta)), result.curve.mean(), rtol=1e-6)
    assert abs(float(final(theta)) - float(mean(theta))) > 1e-3
    with pytest.raises(ValueError, match="metric must be one of"):
        mt.make_evaluator(opt, family, num_tasks=2, steps=5, seed=0, metric="last")
