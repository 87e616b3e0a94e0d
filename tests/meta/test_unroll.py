"""The one optimizee inner loop: against a plain Python loop, with and without observations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperadam_optax import meta, tasks


def test_unroll_is_the_plain_training_loop():
    family = tasks.random_quadratics(4, noise=0.3)
    tx = optax.adam(0.05)
    key = jax.random.PRNGKey(3)

    def observe(grads, opt_state, updates):
        return {"grad_norm": optax.tree.norm(grads), "count": opt_state[0].count,
                "update": updates["x"]}

    (losses, seen), final, task, step_keys = jax.jit(
        lambda k: meta.train(tx, family, k, 7, observe=observe))(key)
    # By hand: same keys, one step at a time on the host.
    k_task, k_init, k_data = jax.random.split(key, 3)
    assert jnp.array_equal(step_keys, jax.random.split(k_data, 7))
    params = family.init(k_init, task)
    state = tx.init(params)
    for t, k in enumerate(step_keys):
        batch = family.sample_batch(k, task)
        loss, grads = jax.value_and_grad(family.loss)(params, batch, task)
        updates, new_state = tx.update(grads, state, params)
        np.testing.assert_allclose(losses[t], loss, rtol=1e-6)
        np.testing.assert_allclose(seen["grad_norm"][t], optax.tree.norm(grads), rtol=1e-6)
        assert int(seen["count"][t]) == t  # observed before the update
        np.testing.assert_allclose(seen["update"][t], updates["x"], rtol=1e-5, atol=1e-7)
        params, state = optax.apply_updates(params, updates), new_state
    np.testing.assert_allclose(final["x"], params["x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        meta.final_loss(family, final, task, step_keys),
        np.mean([family.loss(params, family.sample_batch(k, task), task) for k in step_keys]),
        rtol=1e-5)
