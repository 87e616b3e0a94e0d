"""Directional finite-difference check of ``jax.grad`` (for float64 tests)."""

import jax
import optax


def assert_grad_matches_finite_differences(f, theta, *, seed=0, directions=3, h=1e-6,
                                           rtol=1e-6, min_abs=1e-6):
    """For random directions u: ``<grad f(θ), u>`` equals ``(f(θ+hu) - f(θ-hu)) / 2h``."""
    grad = jax.grad(f)(theta)
    key = jax.random.key(seed)
    leaves, treedef = jax.tree.flatten(theta)
    for _ in range(directions):
        key, k = jax.random.split(key)
        ks = jax.random.split(k, len(leaves))
        u = jax.tree.unflatten(treedef, [jax.random.normal(kk, x.shape, x.dtype)
                                         for kk, x in zip(ks, leaves)])
        fd = (f(jax.tree.map(lambda t, d: t + h * d, theta, u))
              - f(jax.tree.map(lambda t, d: t - h * d, theta, u))) / (2 * h)
        analytic = optax.tree.vdot(grad, u)
        assert abs(fd - analytic) <= rtol * max(1.0, abs(fd)), (fd, analytic)
        assert abs(analytic) > min_abs  # the direction really moves the loss
