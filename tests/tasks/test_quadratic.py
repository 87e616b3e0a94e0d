"""The random quadratics' rotations: LAPACK's Q without LAPACK (see ``householder_q``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hyperadam_optax.tasks.quadratic import householder_q, random_quadratics


@pytest.mark.parametrize("n", [1, 2, 7, 20])
def test_householder_q_is_lapacks_q(n):
    a = np.random.default_rng(n).standard_normal((n, n))
    expected, _ = np.linalg.qr(a)  # LAPACK geqrf/orgqr in float64
    q = np.asarray(householder_q(jnp.asarray(a, jnp.float32)))
    np.testing.assert_allclose(q, expected, atol=2e-5)
    np.testing.assert_allclose(q.T @ q, np.eye(n), atol=2e-5)


def test_a_column_already_reduced_is_left_alone():
    # Below-diagonal zeros: LAPACK's tau = 0 (no reflection), so Q = I for a triangular a.
    a = jnp.triu(jnp.arange(1.0, 10.0).reshape(3, 3))
    np.testing.assert_allclose(householder_q(a), np.eye(3), atol=1e-6)


def test_quadratic_has_the_singular_values_asked_for_under_vmap():
    family = random_quadratics(6, cond=100.0)
    w = jax.jit(jax.vmap(lambda k: family.sample_task(k)["w"]))(
        jax.random.split(jax.random.PRNGKey(0), 4))
    for wi in np.asarray(w):
        s = np.linalg.svd(wi, compute_uv=False)
        np.testing.assert_allclose(np.sort(s), np.geomspace(1.0, 100.0, 6), rtol=1e-4)
