"""The optimizee's inner loop, written once: meta-training, evaluation and tracing all run it.

One step (:func:`optimizee_step`) draws a minibatch on device, takes the loss and gradient,
asks the optimizer for its update and applies it; :func:`unroll` scans it over a sequence of
keys; :func:`train` draws a task and its initial parameters and unrolls from there;
:func:`final_loss` is the evaluation protocol's score of a run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from hyperadam_optax.tasks.base import TaskFamily

PyTree = Any
#: ``observe(grads, opt_state_before, updates) -> pytree`` recorded at every step.
Observer = Callable[[PyTree, PyTree, PyTree], PyTree]


def flat_leaves(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``tx`` seeing every parameter leaf as a vector (updates reshaped back).

    For a coordinatewise learned optimizer the result is the same, and its per-coordinate
    matmuls get 2-D operands, whose backward pass XLA:CPU runs about 1.5x faster than with a
    leaf's own shape (``benchmarks/meta_step.py``). Meta-training uses it: there the optimizee
    parameters are never sharded (the task slots are), so nothing is lost by flattening.
    """

    def init(params):
        return tx.init(jax.tree.map(jnp.ravel, params))

    def update(updates, state, params=None, **extra_args):
        flat = jax.tree.map(jnp.ravel, updates)
        flat_params = None if params is None else jax.tree.map(jnp.ravel, params)
        new, state = tx.update(flat, state, flat_params, **extra_args)
        return jax.tree.map(lambda u, g: u.reshape(g.shape), new, updates), state

    return optax.GradientTransformationExtraArgs(init, update)


def optimizee_step(tx: optax.GradientTransformation, family: TaskFamily, task: PyTree, *,
                   first_order: bool = False, observe: Observer | None = None):
    """``step((params, opt_state), key) -> ((params, opt_state), out)`` for ``lax.scan``.

    ``w_t = w_{t-1} + tx.update(∇f(w_{t-1}; batch_t))``, with ``batch_t`` drawn from ``key``.
    ``out`` is the pre-update minibatch loss ``f(w_{t-1}; batch_t)``, or ``(loss,
    observe(grads, opt_state, updates))``. ``first_order``: the gradient is a constant for
    autodiff through the step (``stop_gradient``; truncated BPTT as in the authors' code).
    """

    def step(carry, key):
        params, opt_state = carry
        batch = family.sample_batch(key, task)
        loss, grads = jax.value_and_grad(family.loss)(params, batch, task)
        if first_order:
            grads = jax.lax.stop_gradient(grads)
        updates, new_state = tx.update(grads, opt_state, params)
        out = loss if observe is None else (loss, observe(grads, opt_state, updates))
        return (optax.apply_updates(params, updates), new_state), out

    return step


def unroll(tx: optax.GradientTransformation, family: TaskFamily, task: PyTree, params: PyTree,
           opt_state: PyTree, keys: jax.Array, *, first_order: bool = False, remat: bool = False,
           observe: Observer | None = None):
    """``len(keys)`` optimizee steps in one ``lax.scan``: ``((params, opt_state), outs)``.

    ``outs``: the pre-update losses ``(steps,)`` (and the observations, see
    :func:`optimizee_step`). ``remat``: recompute each step in the backward pass instead of
    storing its intermediates (``jax.checkpoint``).
    """
    step = optimizee_step(tx, family, task, first_order=first_order, observe=observe)
    if remat:
        step = jax.checkpoint(step, prevent_cse=False)  # safe inside scan
    return jax.lax.scan(step, (params, opt_state), keys)


def train(tx: optax.GradientTransformation, family: TaskFamily, key: jax.Array, steps: int, *,
          observe: Observer | None = None):
    """Train one task instance drawn with ``key`` for ``steps`` steps of ``tx``.

    ``key`` splits into (task, init, data) keys; the data key into one key per step. Returns
    ``(outs, final_params, task, step_keys)``: ``outs`` as in :func:`unroll` (the pre-update
    minibatch losses), so a caller can re-draw the same minibatches from ``step_keys``.
    """
    k_task, k_init, k_data = jax.random.split(key, 3)
    task = family.sample_task(k_task)
    params = family.init(k_init, task)
    step_keys = jax.random.split(k_data, steps)
    (final, _), outs = unroll(tx, family, task, params, tx.init(params), step_keys,
                              observe=observe)
    return outs, final, task, step_keys


def final_loss(family: TaskFamily, final_params: PyTree, task: PyTree,
               step_keys: jax.Array) -> jax.Array:
    """The evaluation protocol's score: the FINAL parameters' loss averaged over the same
    minibatches the run saw (``step_keys`` from :func:`train`)."""
    return jnp.mean(jax.lax.map(
        lambda k: family.loss(final_params, family.sample_batch(k, task), task), step_keys))
