"""Optimizee task families for meta-training and evaluation.

A :class:`TaskFamily` is four pure, jittable functions over array pytrees, so a batch of
task instances can be ``vmap``-ped and everything runs on device inside ``lax.scan``:

- ``sample_task(key) -> task``: draws one task instance (e.g. Random Scaling factors);
- ``init(key, task) -> params``: the optimizee's initial parameters;
- ``sample_batch(key, task) -> batch``: a minibatch, sampled on device;
- ``loss(params, batch, task) -> scalar``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from hyperadam_optax.mlp import init_mlp, mlp_logits, mlp_loss

PyTree = Any


@dataclasses.dataclass(frozen=True)
class TaskFamily:
    """A distribution over optimizee tasks (see the module docstring)."""

    name: str
    sample_task: Callable[[jax.Array], PyTree]
    init: Callable[[jax.Array, PyTree], PyTree]
    sample_batch: Callable[[jax.Array, PyTree], PyTree]
    loss: Callable[[PyTree, PyTree, PyTree], jax.Array]
    #: Optional ``(params, inputs) -> logits`` for classification tasks (test accuracy).
    logits: Callable[[PyTree, jax.Array], jax.Array] | None = None


def train(tx, family: TaskFamily, key: jax.Array, steps: int):
    """Train one task instance drawn with ``key`` for ``steps`` steps of ``tx``.

    ``key`` splits into (task, init, data) keys; the data key into one key per step. Returns
    ``(losses, final_params, task, step_keys)``: the pre-update minibatch losses ``(steps,)``,
    so a caller can re-draw the same minibatches from ``step_keys``.
    """
    k_task, k_init, k_data = jax.random.split(key, 3)
    task = family.sample_task(k_task)
    params = family.init(k_init, task)
    step_keys = jax.random.split(k_data, steps)

    def step(carry, k):
        params, state = carry
        loss, grads = jax.value_and_grad(family.loss)(params, family.sample_batch(k, task), task)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), loss

    (final, _), losses = jax.lax.scan(step, (params, tx.init(params)), step_keys)
    return losses, final, task, step_keys


def final_loss(family: TaskFamily, final_params, task, step_keys) -> jax.Array:
    """The evaluation protocol's score: the FINAL parameters' loss averaged over the same
    minibatches the run saw (``step_keys`` from :func:`train`)."""
    return jnp.mean(jax.lax.map(
        lambda k: family.loss(final_params, family.sample_batch(k, task), task), step_keys))


def _log_uniform_scale(key, tree, r: float):
    """Random Scaling factors ``c = exp(U[-r, r])`` per coordinate (Lv et al. 2017)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [
        jnp.exp(jax.random.uniform(k, x.shape, x.dtype, -r, r)) for k, x in zip(keys, leaves)
    ])


def mnist_mlp(x: jax.Array, y: jax.Array, *, sizes=(784, 20, 10), activation: str = "sigmoid",
              batch_size: int = 128, init_std: float = 0.1) -> TaskFamily:
    """The plain MLP on images ``x`` (rows) with labels ``y``; one fixed task."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)

    def sample_batch(key, task):
        idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
        return x[idx], y[idx]

    shape = "" if tuple(sizes) == (784, 20, 10) else "-" + "-".join(map(str, sizes))
    return TaskFamily(
        # The name identifies the task (tuning cache): architecture, init and data size.
        name=f"mnist-mlp-{activation}{shape}-std{init_std:g}-n{x.shape[0]}",
        sample_task=lambda key: {},
        init=lambda key, task: init_mlp(key, sizes, init_std),
        sample_batch=sample_batch,
        loss=lambda params, batch, task: mlp_loss(params, *batch, activation),
        logits=lambda params, inputs: mlp_logits(params, inputs, activation),
    )


#: Activations of the validation MLPs (and of ``mnist-mlp-mix``). Only sigmoid is also a Table 1
#: activation, and validation runs it on other seeds; ReLU, ELU and tanh are left out.
VALIDATION_ACTIVATIONS = ("sigmoid", "softplus", "silu", "gelu", "leaky_relu")


def mnist_mlp_mixture(x: jax.Array, y: jax.Array,
                      activations: tuple[str, ...] = VALIDATION_ACTIVATIONS,
                      **kwargs) -> TaskFamily:
    """The MLP of :func:`mnist_mlp` whose hidden activation is drawn uniformly per task from
    ``activations`` (``task = {"activation": index}``; ``lax.switch`` picks it, so a batch of
    tasks with different activations still ``vmap``-s)."""
    members = [mnist_mlp(x, y, activation=a, **kwargs) for a in activations]

    def loss(params, batch, task):
        return jax.lax.switch(task["activation"], [m.loss for m in members], params, batch, {})

    return TaskFamily(
        # e.g. mnist-mlp-mix-sigmoid-softplus-silu-gelu-leaky_relu-std0.1-n4000
        name=members[0].name.replace(f"-{activations[0]}", "-mix-" + "-".join(activations), 1),
        sample_task=lambda key: {"activation": jax.random.randint(key, (), 0, len(members))},
        init=lambda key, task: members[0].init(key, {}),
        sample_batch=lambda key, task: members[0].sample_batch(key, {}),
        loss=loss,
    )


def random_scaling_with_convex(base: TaskFamily, *, r: float = 3.0, convex_dim: int = 20,
                               convex_r: float = 1.0, convex_clip: float = 10.0) -> TaskFamily:
    """The HyperAdam/RNNprop training problem built on ``base``.

    ``f(c ⊙ w) + mean(clip((c' ⊙ z - a)², 0, convex_clip))`` started from ``(w0 / c, 0)``,
    with ``c = exp(U[-r, r])`` and ``c' = exp(U[-convex_r, convex_r])`` per coordinate and
    ``a ~ U[-1, 1]^convex_dim`` redrawn for each trajectory (reference notes: Random Scaling
    plus the clipped convex term "CC", losses summed with weight 1 each).
    """

    def sample_task(key):
        k_base, k_init, k_scale, k_cscale, k_target = jax.random.split(key, 5)
        base_task = base.sample_task(k_base)
        template = jax.eval_shape(base.init, k_init, base_task)
        template = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), template)
        return {
            "base": base_task,
            "scale": _log_uniform_scale(k_scale, template, r),
            "convex_scale": jnp.exp(jax.random.uniform(k_cscale, (convex_dim,), minval=-convex_r,
                                                       maxval=convex_r)),
            "convex_target": jax.random.uniform(k_target, (convex_dim,), minval=-1.0, maxval=1.0),
        }

    def init(key, task):
        w0 = base.init(key, task["base"])
        return {"net": jax.tree.map(jnp.divide, w0, task["scale"]),
                "convex": jnp.zeros((convex_dim,), jnp.float32)}

    def loss(params, batch, task):
        net = jax.tree.map(jnp.multiply, params["net"], task["scale"])
        z = params["convex"] * task["convex_scale"]
        convex = jnp.mean(jnp.clip((z - task["convex_target"]) ** 2, 0.0, convex_clip))
        return base.loss(net, batch, task["base"]) + convex

    return TaskFamily(
        name=f"{base.name}-rs{r:g}-cc",
        sample_task=sample_task,
        init=init,
        sample_batch=lambda key, task: base.sample_batch(key, task["base"]),
        loss=loss,
    )


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
