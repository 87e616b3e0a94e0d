"""Random quadratics: a tiny task family for tests and quick experiments."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hyperadam_optax.tasks.base import TaskFamily


def random_quadratics(dim: int = 10, *, noise: float = 0.0, cond: float = 10.0) -> TaskFamily:
    """``0.5 ||W x - y||²`` with random ``W`` (singular values in ``[1, cond]``), ``x0 ~ N(0, 1)``.

    A tiny family for tests and quick experiments; ``noise`` adds Gaussian gradient noise
    through a random linear term per batch.
    """

    def sample_task(key):
        k_u, k_v, k_y = jax.random.split(key, 3)
        u, _ = jnp.linalg.qr(jax.random.normal(k_u, (dim, dim)))
        v, _ = jnp.linalg.qr(jax.random.normal(k_v, (dim, dim)))
        sv = jnp.geomspace(1.0, cond, dim)
        return {"w": (u * sv[None, :]) @ v.T, "y": jax.random.normal(k_y, (dim,))}

    def loss(params, batch, task):
        r = task["w"] @ params["x"] - task["y"]
        return 0.5 * jnp.sum(r * r) + jnp.dot(batch, params["x"])

    return TaskFamily(
        name=f"quadratic{dim}",
        sample_task=sample_task,
        init=lambda key, task: {"x": jax.random.normal(key, (dim,))},
        sample_batch=lambda key, task: noise * jax.random.normal(key, (dim,)),
        loss=loss,
    )
