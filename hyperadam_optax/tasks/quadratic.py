"""Random quadratics: a tiny task family for tests and quick experiments."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hyperadam_optax.tasks.base import TaskFamily


def householder_q(a: jax.Array) -> jax.Array:
    """The orthogonal factor Q of ``a = Q R`` (square ``a``), as LAPACK's ``geqrf``/``orgqr``
    (and so ``jnp.linalg.qr``) make it, in plain jnp operations.

    ``Q = H_0 H_1 ... H_{n-1}``, ``H_k = I - τ_k v_k v_kᵀ``, with ``dlarfg``'s convention:
    ``β = -sign(a_kk) ‖a_{k:,k}‖``, ``v_k = (a_{k:,k} - β e_k)``, ``τ_k = 2 / ‖v_k‖²``
    (``τ_k = 0`` when the column below the diagonal is already zero).

    Why not ``jnp.linalg.qr``: jaxlib 0.10's CPU QR kernel spreads a batch over the
    intra-op thread pool and blocks a pool thread waiting for it; two batched QRs in one
    program (as ``vmap`` over tasks makes) then deadlock on a 2-core CPU, every thread
    idle, within a few hundred calls (measured: 6 of 6 processes; one QR per program: 0 of
    3). This loop has no custom call to wedge.
    """
    n = a.shape[0]
    rows = jnp.arange(n)

    def reflect(k, carry):
        r, q = carry
        x = jnp.where(rows >= k, r[:, k], 0.0)
        alpha = r[k, k]
        below = jnp.sum(jnp.where(rows > k, x * x, 0.0))
        norm = jnp.sqrt(alpha * alpha + below)
        beta = -jnp.where(alpha >= 0, 1.0, -1.0) * norm
        v = x.at[k].set(alpha - beta)
        vv = jnp.sum(v * v)
        tau = jnp.where(below > 0, 2.0 / jnp.where(vv > 0, vv, 1.0), 0.0)
        r = r - tau * jnp.outer(v, v @ r)
        q = q - tau * jnp.outer(q @ v, v)
        return r, q

    _, q = jax.lax.fori_loop(0, n, reflect, (a, jnp.eye(n, dtype=a.dtype)))
    return q


def random_quadratics(dim: int = 10, *, noise: float = 0.0, cond: float = 10.0) -> TaskFamily:
    """``0.5 ||W x - y||²`` with random ``W`` (singular values in ``[1, cond]``), ``x0 ~ N(0, 1)``.

    A tiny family for tests and quick experiments; ``noise`` adds Gaussian gradient noise
    through a random linear term per batch.
    """

    def sample_task(key):
        k_u, k_v, k_y = jax.random.split(key, 3)
        u = householder_q(jax.random.normal(k_u, (dim, dim)))
        v = householder_q(jax.random.normal(k_v, (dim, dim)))
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
