"""Antithetic Gaussian perturbations of the meta-parameters, shared by ES and PES."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hyperadam_optax.meta.trainable import frozen_to_zero, scale_fields, trainable_mask

PyTree = Any


def antithetic_noise(key: jax.Array, meta_params: PyTree, pairs: int, sigma: float,
                     trainable: tuple[str, ...] | None = None,
                     scales: PyTree | None = None) -> PyTree:
    """``ε ~ N(0, σ² I)`` for each of ``pairs`` pairs: a pytree like ``meta_params`` with a
    leading ``pairs`` axis; zero on the fields not in ``trainable`` (None: all train), times
    ``scales`` (:func:`~hyperadam_optax.meta.trainable.field_scales_tree`; None: 1)."""
    leaves, treedef = jax.tree.flatten(meta_params)
    keys = jax.random.split(key, len(leaves))
    noise = jax.tree.unflatten(treedef, [
        sigma * jax.random.normal(k, (pairs,) + x.shape, x.dtype) for k, x in zip(keys, leaves)
    ])
    noise = frozen_to_zero(noise, trainable_mask(meta_params, trainable))
    return noise if scales is None else scale_fields(noise, scales)


def shifted(meta_params: PyTree, noise: PyTree, sign: float) -> PyTree:
    """``θ + sign · ε_p`` for every pair p (leading axis)."""
    return jax.tree.map(lambda t, e: t[None] + sign * e, meta_params, noise)


def weighted_mean(weights: jax.Array, noise: PyTree, scales: PyTree | None = None) -> PyTree:
    """``mean_p weights_p · noise_p``: the estimate from per-pair loss differences; divided by
    ``factor²`` where the noise was scaled by ``scales``
    (:func:`~hyperadam_optax.meta.trainable.field_scales_tree`), so it estimates the gradient
    in the meta-parameters themselves."""
    mean = jax.tree.map(
        lambda e: jnp.tensordot(weights.astype(e.dtype), e, axes=1) / weights.shape[0], noise)
    return mean if scales is None else scale_fields(mean, scales, -2)
