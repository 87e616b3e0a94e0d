"""Truncated backpropagation through time (the HyperAdam and RNNprop authors' estimator).

Each of B task slots advances one truncation of ``unroll`` steps; the meta-gradient is
``jax.grad`` of the mean truncation meta-loss. The slot's parameters and optimizer state are
carried to the next meta-step without gradient, which makes the estimate greedy in the
truncation (biased toward short horizons). On one CPU device the slots are differentiated one
after another (``config.task_chunk``), each forward followed at once by its backward.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from hyperadam_optax.meta.config import MetaTrainConfig
from hyperadam_optax.meta.learned import LearnedOptimizer
from hyperadam_optax.meta.sharding import resolve_task_chunk
from hyperadam_optax.meta.trainable import frozen_to_zero, trainable_mask
from hyperadam_optax.meta.truncation import (
    TaskSlot,
    choose,
    needs_restart,
    spread_slots,
    truncation,
)
from hyperadam_optax.tasks.base import TaskFamily

PyTree = Any


def init_slots(key_slots, key_offsets, optimizer: LearnedOptimizer, family: TaskFamily,
               config: MetaTrainConfig, meta_params: PyTree) -> TaskSlot:
    """``config.num_tasks`` slots spread over the truncations of a trajectory."""
    return spread_slots(key_slots, key_offsets, optimizer, family, config, meta_params,
                        config.num_tasks)


def truncated_unroll(optimizer: LearnedOptimizer, family: TaskFamily, config: MetaTrainConfig,
                     meta_params: PyTree, slot: TaskSlot) -> tuple[jax.Array, tuple]:
    """One truncation of one slot: ``(meta_loss, (losses, slot_after))``.

    The losses are the pre-update losses ``f(w_{t-1})`` of the ``unroll`` steps. The
    returned slot's parameters and optimizer state are cut from the gradient (truncated
    BPTT); its trajectory is restarted on a new task when it ends or became non-finite.
    """
    t = truncation(optimizer, family, config, meta_params, slot)
    carried = jax.lax.stop_gradient(t.carried)
    return t.meta_loss, (t.losses, choose(needs_restart(config, carried), t.fresh, carried))


def unit_gradient(grads: PyTree, mask: PyTree) -> PyTree:
    """``g / |g|`` over the entries ``mask`` trains (the others zero): one task's vote
    (``config.normalize_task_gradients``); a zero gradient stays zero."""
    grads = frozen_to_zero(grads, mask)
    norm = optax.tree.norm(grads)
    return jax.tree.map(lambda g: g / jnp.maximum(norm, 1e-30), grads)


def gradient(optimizer: LearnedOptimizer, family: TaskFamily, config: MetaTrainConfig,
             meta_params: PyTree, slots: TaskSlot, key: jax.Array):
    """``(mean meta-loss, meta-gradient, slots after, restarts)``. Chunks of slots are
    differentiated one after another, so only one chunk's residuals are alive at a time.
    With ``config.normalize_task_gradients`` the meta-gradient is the mean of the slots'
    :func:`unit_gradient`."""
    del key  # deterministic given the slots
    chunk = resolve_task_chunk(config)

    def slot_loss(theta, slot):
        return truncated_unroll(optimizer, family, config, theta, slot)

    def slot_grad(theta, slot):
        value, grads = jax.value_and_grad(slot_loss, has_aux=True)(theta, slot)
        if config.normalize_task_gradients:
            grads = unit_gradient(grads, trainable_mask(theta, config.trainable))
        return value, grads

    def chunk_loss(theta, chunk_slots):
        losses, aux = jax.vmap(slot_loss, in_axes=(None, 0))(theta, chunk_slots)
        return jnp.mean(losses), aux

    def chunk_grad(theta, chunk_slots):  # per-slot gradients, averaged over the chunk
        (losses, aux), grads = jax.vmap(slot_grad, in_axes=(None, 0))(theta, chunk_slots)
        return (jnp.mean(losses), aux), jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)

    if not config.normalize_task_gradients:  # the gradient of the mean: one backward pass
        chunk_grad = jax.value_and_grad(chunk_loss, has_aux=True)
    if chunk == 1:
        body, xs = functools.partial(slot_grad, meta_params), slots
    elif chunk == config.num_tasks:
        (loss, (_, after)), grads = chunk_grad(meta_params, slots)
        return loss, grads, after, jnp.sum(after.step == 0)
    else:
        body = functools.partial(chunk_grad, meta_params)
        xs = jax.tree.map(lambda x: x.reshape((-1, chunk) + x.shape[1:]), slots)
    (losses, (_, after)), grads = jax.lax.map(body, xs)
    if chunk > 1:  # (B / chunk, chunk, ...) -> (B, ...)
        after = jax.tree.map(lambda x: x.reshape((config.num_tasks,) + x.shape[2:]), after)
    loss, grads = jnp.mean(losses), jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
    return loss, grads, after, jnp.sum(after.step == 0)
