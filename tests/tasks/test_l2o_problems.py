"""The L2O-Scale problem set and its wrappers: known values, clean losses under gradient
noise, sparse gradients, and every ensemble family jittable under vmap."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperadam_optax.tasks import l2o_problems as l2o
from hyperadam_optax.tasks.augment import log_objective, sparse_gradient
from hyperadam_optax.tasks.registry import ENSEMBLES, ensemble_members, get_task, make_task

MINIMA = {  # a minimiser and the minimum of each 2-D function (standard references)
    "rosenbrock": ((1.0, 1.0), 0.0),
    "ackley": ((0.0, 0.0), 0.0),
    "beale": ((3.0, 0.5), 0.0),
    "booth": ((1.0, 3.0), 0.0),
    "styblinski-tang": ((-2.903534, -2.903534), 80 - 2 * 39.16617),
    "matyas": ((0.0, 0.0), 0.0),
    "branin": ((math.pi, 2.275), 0.397887),
}


def test_michalewicz_with_m_5():
    """The code's m = 5 (the usual m = 10 has its minimum -1.8013 at (2.20, 1.57))."""
    x = np.array([2.0, 1.2])
    want = 2 - (np.sin(x[0]) * np.sin(x[0] ** 2 / np.pi) ** 10
                + np.sin(x[1]) * np.sin(2 * x[1] ** 2 / np.pi) ** 10)
    assert float(l2o.FUNCTIONS_2D["michalewicz"][0](jnp.array(x))) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("name", sorted(MINIMA))
def test_functions_2d_minima(name):
    x, value = MINIMA[name]
    f = l2o.FUNCTIONS_2D[name][0]
    assert float(f(jnp.array(x))) == pytest.approx(value, abs=2e-4)
    # a minimum: the function is higher a little way off in every direction
    for d in ((0.05, 0.0), (0.0, 0.05), (-0.05, 0.0), (0.0, -0.05)):
        assert float(f(jnp.array(x) + jnp.array(d))) > float(f(jnp.array(x)))


def test_noise_reaches_the_gradient_not_the_loss():
    family = l2o.quadratic(5, noise=2.0)
    task = family.sample_task(jax.random.key(0))
    params = family.init(jax.random.key(1), task)
    clean = l2o.quadratic(5)
    batch = family.sample_batch(jax.random.key(2), task)
    zero = clean.sample_batch(jax.random.key(2), task)
    assert float(family.loss(params, batch, task)) == pytest.approx(
        float(clean.loss(params, zero, task)), rel=1e-6)
    g_noisy = jax.grad(family.loss)(params, batch, task)["x"]
    g_clean = jax.grad(clean.loss)(params, zero, task)["x"]
    np.testing.assert_allclose(g_noisy - g_clean, batch, rtol=1e-5, atol=1e-5)


def test_sparse_gradient_keeps_about_one_in_a_hundred_and_the_loss():
    base = l2o.quadratic(50)
    family = sparse_gradient(base, keep=0.01)
    task = family.sample_task(jax.random.key(0))
    params = family.init(jax.random.key(1), task)
    kept = []
    for i in range(200):
        batch = family.sample_batch(jax.random.key(i), task)
        assert float(family.loss(params, batch, task)) == pytest.approx(
            float(base.loss(params, batch["base"], task)), rel=1e-6)
        g = jax.grad(family.loss)(params, batch, task)["x"]
        full = jax.grad(base.loss)(params, batch["base"], task)["x"]
        nonzero = np.asarray(g != 0)
        np.testing.assert_array_equal(np.asarray(g)[nonzero], np.asarray(full)[nonzero])
        kept.append(nonzero.mean())
    assert 0.005 < np.mean(kept) < 0.02  # 10,000 draws: 0.01 ± 0.001


def test_log_objective():
    base = l2o.quadratic(3)
    family = log_objective(base)
    task = base.sample_task(jax.random.key(0))
    p = base.init(jax.random.key(1), task)
    zero = base.sample_batch(jax.random.key(2), task)
    f = float(base.loss(p, zero, task))
    assert float(family.loss(p, zero, task)) == pytest.approx(
        math.log(f + 1e-6) - math.log(1e-6), rel=1e-5)


def test_bad_names():
    with pytest.raises(ValueError, match="unknown test functions \\['nope'\\]"):
        l2o.functions_2d(("rosenbrock", "nope"))
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        ensemble_members("l2o-bowls,nope")
    with pytest.raises(ValueError, match="names a task twice"):
        ensemble_members("l2o-bowls,l2o-bowls")


@pytest.mark.slow
def test_every_ensemble_family_runs_batched_and_jitted():
    """Each family of every ensemble: a batch of tasks drawn, initialised, one minibatch loss
    and gradient, all finite, under jit(vmap)."""
    from hyperadam_optax.evaluation.suites import SUITES
    from hyperadam_optax.tasks.data import mnist_5k_split

    names = sorted({n for members in ENSEMBLES.values() for n in members})
    reported = {n for suite in SUITES.values() for n in suite}
    assert not any(n.startswith("val-") or n in reported for n in names)
    train = mnist_5k_split()[0]
    for name in names:
        family = make_task(name, (train.x, train.y) if get_task(name).needs_data else None)

        def one(key):
            kt, ki, kb = jax.random.split(key, 3)
            task = family.sample_task(kt)
            params = family.init(ki, task)
            batch = family.sample_batch(kb, task)
            return jax.value_and_grad(family.loss)(params, batch, task)

        loss, grads = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(0), 3))
        assert loss.shape == (3,) and bool(jnp.all(jnp.isfinite(loss))), name
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads)), name
