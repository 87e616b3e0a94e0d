"""Augmentations of a task family: Random Scaling and the convex term (Lv et al. 2017)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hyperadam_optax.tasks.base import TaskFamily


def log_uniform_scale(key, tree, r: float):
    """Random Scaling factors ``c = exp(U[-r, r])`` per coordinate (Lv et al. 2017)."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [
        jnp.exp(jax.random.uniform(k, x.shape, x.dtype, -r, r)) for k, x in zip(keys, leaves)
    ])


def random_scaling(base: TaskFamily, *, r: float) -> TaskFamily:
    """``base`` with every coordinate reparametrised: ``f(c ⊙ w)`` started from ``w0 / c``,
    ``c = exp(U[-r, r])`` drawn per coordinate and task (parameter-scale augmentation; r =
    ln 1000 spans the scales 1e-3 to 1e3). The same problem in badly scaled coordinates: an
    optimizer that is not scale-invariant per coordinate sees a different task."""

    def sample_task(key):
        k_base, k_init, k_scale = jax.random.split(key, 3)
        base_task = base.sample_task(k_base)
        template = jax.eval_shape(base.init, k_init, base_task)
        template = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), template)
        return {"base": base_task, "scale": log_uniform_scale(k_scale, template, r)}

    return TaskFamily(
        name=f"{base.name}-scaled{r:g}",
        sample_task=sample_task,
        init=lambda key, task: jax.tree.map(jnp.divide, base.init(key, task["base"]),
                                            task["scale"]),
        sample_batch=lambda key, task: base.sample_batch(key, task["base"]),
        loss=lambda params, batch, task: base.loss(
            jax.tree.map(jnp.multiply, params, task["scale"]), batch, task["base"]),
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
            "scale": log_uniform_scale(k_scale, template, r),
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


def log_objective(base: TaskFamily, eps: float = 1e-6) -> TaskFamily:
    """``log(f + eps) - log(eps)`` (L2O-Scale's LogObjective wrapper): the same minimiser, the
    loss's scale compressed; ``f >= 0`` is assumed (as for every problem it wraps there)."""
    return TaskFamily(
        name=f"{base.name}-log",
        sample_task=base.sample_task,
        init=base.init,
        sample_batch=base.sample_batch,
        loss=lambda params, batch, task: (jnp.log(base.loss(params, batch, task) + eps)
                                          - jnp.log(eps)),
    )


def sparse_gradient(base: TaskFamily, keep: float = 0.01) -> TaskFamily:
    """Each gradient coordinate kept with probability ``keep``, else zeroed, independently at
    every step (L2O-Scale's SparseProblem); the loss value is unchanged."""

    def sample_batch(key, task):
        k_base, k_mask = jax.random.split(key)
        return {"base": base.sample_batch(k_base, task), "mask_key": k_mask}

    def loss(params, batch, task):
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(batch["mask_key"], len(leaves))
        masked = [jnp.where(jax.random.bernoulli(k, keep, x.shape), x, jax.lax.stop_gradient(x))
                  for k, x in zip(keys, leaves)]
        return base.loss(jax.tree.unflatten(treedef, masked), batch["base"], task)

    return TaskFamily(f"{base.name}-sparse{keep:g}", base.sample_task, base.init, sample_batch,
                      loss)
