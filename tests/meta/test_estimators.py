"""The meta-gradient estimators against the exact whole-trajectory meta-gradient.

A learning-rate meta-parameter (SGD with rate ``exp(θ)``) on one fixed, noise-free quadratic:
the exact gradient of the trajectory's mean loss is backpropagation through the whole
trajectory (second order, float64). PES summed over a trajectory's truncations and ES over
whole trajectories agree with it within their standard errors; truncated BPTT with short
truncations does not (its known short-horizon bias); ES/PES variance falls as 1/particles.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hyperadam_optax import meta, tasks
from hyperadam_optax.meta.estimators import es, pes, tbptt
from hyperadam_optax.meta.truncation import fresh_slot

TRAJECTORY, UNROLL = 20, 2


def _problem():
    base = tasks.random_quadratics(3, cond=4.0)
    family = tasks.TaskFamily(
        "fixed-quadratic", sample_task=lambda k: base.sample_task(jax.random.PRNGKey(7)),
        init=lambda k, t: base.init(jax.random.PRNGKey(8), t),
        sample_batch=base.sample_batch, loss=base.loss)
    opt = meta.LearnedOptimizer("log-lr", lambda k: {"log_lr": jnp.log(jnp.float64(0.02))},
                                lambda theta: optax.sgd(jnp.exp(theta["log_lr"])))
    config = meta.MetaTrainConfig(unroll=UNROLL, trajectory=TRAJECTORY, meta_loss="mean",
                                  estimator="pes", num_particles=8, sigma=0.01, remat=False)
    return family, opt, config, opt.init_meta_params(None)


def _backprop(config, **changes):
    """The BPTT config of the same problem: exact (second-order) gradients, no ES settings."""
    return dataclasses.replace(config, **{"estimator": "tbptt", "second_order": True,
                                          "num_particles": 8, "sigma": 0.01, **changes})


def _exact(family, opt, config, theta):
    full = _backprop(config, unroll=TRAJECTORY, estimator="full")
    slot = fresh_slot(opt, family, theta, jax.random.PRNGKey(0), 0)
    return jax.grad(lambda t: tbptt.truncated_unroll(opt, family, full, t, slot)[0])(theta)[
        "log_lr"]


def _pes_trajectory_estimates(family, opt, config, theta, reps):
    """Per repetition: the mean over one trajectory's truncations of the PES estimates."""
    n = TRAJECTORY // UNROLL

    def one(key):
        k_init, k_off, k_run = jax.random.split(key, 3)
        slots = pes.init_slots(k_init, k_off, opt, family, config, theta, spread=False)
        total = 0.0
        for t in range(n):
            _, g, slots, _ = pes.gradient(opt, family, config, theta, slots,
                                          jax.random.fold_in(k_run, t))
            total = total + g["log_lr"]
        return total / n

    return np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(1), reps)))


def test_pes_is_unbiased_and_truncated_bptt_is_not(x64):
    family, opt, config, theta = _problem()
    exact = float(_exact(family, opt, config, theta))
    est = _pes_trajectory_estimates(family, opt, config, theta, reps=64)
    mean, se = est.mean(), est.std(ddof=1) / np.sqrt(len(est))
    assert se < 0.1 * abs(exact)  # the comparison has power
    assert abs(mean - exact) < 3 * se, (mean, se, exact)
    # Truncated BPTT over the same trajectory: mean of its per-truncation gradients.
    slot, total = fresh_slot(opt, family, theta, jax.random.PRNGKey(0), 0), 0.0
    tb = _backprop(config)
    for _ in range(TRAJECTORY // UNROLL):
        g, (_, slot) = jax.grad(lambda t, s=slot: tbptt.truncated_unroll(
            opt, family, tb, t, s), has_aux=True)(theta)
        total += float(g["log_lr"])
    truncated = total / (TRAJECTORY // UNROLL)
    assert abs(truncated - exact) > 10 * se and abs(truncated - exact) > 0.2 * abs(exact), (
        truncated, exact)


def test_es_over_whole_trajectories_is_unbiased(x64):
    family, opt, config, theta = _problem()
    config = dataclasses.replace(config, estimator="es", unroll=TRAJECTORY)
    exact = float(_exact(family, opt, config, theta))

    def one(key):
        k_init, k_off, k_run = jax.random.split(key, 3)
        slots = es.init_slots(k_init, k_off, opt, family, config, theta)
        return es.gradient(opt, family, config, theta, slots, k_run)[1]["log_lr"]

    est = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(2), 64)))
    mean, se = est.mean(), est.std(ddof=1) / np.sqrt(len(est))
    assert se < 0.1 * abs(exact) and abs(mean - exact) < 3 * se, (mean, se, exact)


@pytest.mark.parametrize("name", ["es", "pes"])
def test_variance_falls_as_one_over_particles(name, x64):
    family, opt, config, theta = _problem()
    module = {"es": es, "pes": pes}[name]
    if name == "es":
        config = dataclasses.replace(config, estimator="es", unroll=TRAJECTORY)
    variances = {}
    for particles in (4, 16):
        c = dataclasses.replace(config, num_particles=particles)

        def one(key, c=c):
            k_init, k_off, k_run = jax.random.split(key, 3)
            slots = module.init_slots(k_init, k_off, opt, family, c, theta)
            return module.gradient(opt, family, c, theta, slots, k_run)[1]["log_lr"]

        est = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(3), 200))
        variances[particles] = float(np.var(np.asarray(est), ddof=1))
    assert 2.5 < variances[4] / variances[16] < 6.5, variances


@pytest.mark.parametrize("estimator", ["full", "es", "pes"])
def test_meta_training_with_each_estimator_lowers_the_meta_loss(estimator):
    """The estimators plug into the jitted meta-step: an SGD rate too small at the start is
    raised, and the validation loss falls."""
    family = tasks.random_quadratics(3, cond=4.0)
    opt = meta.LearnedOptimizer("log-lr", lambda k: {"log_lr": jnp.log(jnp.float32(0.01))},
                                lambda theta: optax.sgd(jnp.exp(theta["log_lr"])))
    unroll = TRAJECTORY if estimator in ("full", "es") else UNROLL
    slots = ({"num_tasks": 4} if estimator == "full" else  # each estimator's own settings
             {"num_particles": 8, "sigma": 0.05})
    config = meta.MetaTrainConfig(unroll=unroll, trajectory=TRAJECTORY, meta_loss="mean",
                                  estimator=estimator, meta_lr=0.05, clip_norm=None, **slots)
    state = meta.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
    evaluate = meta.make_evaluator(opt, family, num_tasks=16, steps=TRAJECTORY, seed=5)
    before = float(evaluate(state.meta_params))
    step = meta.make_meta_step(opt, family, config)
    for _ in range(30):
        state, metrics = step(state)
        assert bool(metrics["finite"])
    assert float(state.meta_params["log_lr"]) > np.log(0.01) + 0.3
    assert float(evaluate(state.meta_params)) < 0.8 * before
