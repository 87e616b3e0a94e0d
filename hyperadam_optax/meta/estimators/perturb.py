"""Antithetic Gaussian perturbations of the meta-parameters, shared by ES and PES."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hyperadam_optax.meta.trainable import frozen_to_zero, trainable_mask

PyTree = Any


def antithetic_noise(key: jax.Array, meta_params: PyTree, pairs: int, sigma: float,
                     trainable: tuple[str, ...] | None = None) -> PyTree:
    """``ε ~ N(0, σ² I)`` for each of ``pairs`` pairs: a pytree like ``meta_params`` with a
    leading ``pairs`` axis; zero on the fields not in ``trainable`` (None: all train)."""
    leaves, treedef = jax.tree.flatten(meta_params)
    keys = jax.random.split(key, len(leaves))
    noise = jax.tree.unflatten(treedef, [
        sigma * jax.random.normal(k, (pairs,) + x.shape, x.dtype) for k, x in zip(keys, leaves)
    ])
    return frozen_to_zero(noise, trainable_mask(meta_params, trainable))


def shifted(meta_params: PyTree, noise: PyTree, sign: float) -> PyTree:
    """``θ + sign · ε_p`` for every pair p (leading axis)."""
    return jax.tree.map(lambda t, e: t[None] + sign * e, meta_params, noise)


def weighted_mean(weights: jax.Array, noise: PyTree) -> PyTree:
    """``mean_p weights_p · noise_p``: the estimate from per-pair loss differences."""
    return jax.tree.map(
        lambda e: jnp.tensordot(weights.astype(e.dtype), e, axes=1) / weights.shape[0], noise)
