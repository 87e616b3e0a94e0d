"""The meta-step with its task slots (truncated BPTT) or particles (PES) sharded over 8 forced
CPU devices equals one device's."""

import os
import subprocess
import sys
import textwrap

import pytest


def _run_on_8_cpu_devices(script: str, marker: str) -> None:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert marker in out.stdout


# float64: the partitioned program sums in another order, and in float32 Adam's outer
# update turns those last-bit differences of near-zero meta-gradient entries into 1e-4.
META_SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    import hyperadam_optax as ha
    from hyperadam_optax import meta as mt, tasks
    assert jax.device_count() == 8
    opt = mt.LearnedOptimizer("hyperadam",
                              lambda k: ha.init_meta_params(k, 4, dtype=jnp.float64),
                              lambda t: ha.hyperadam(0.05, t))
    family = tasks.random_quadratics(5)
    config = mt.MetaTrainConfig(num_tasks=8, unroll=4, trajectory=8, meta_lr=1e-2)
    sharded = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
    assert sharded.slots[0].params["x"].sharding.spec[0] == "tasks", sharded.slots[0].params["x"].sharding
    def on_one_device(state):  # a fresh copy: the meta-step donates its input
        return jax.device_put(jax.tree.map(np.asarray, state), jax.devices()[0])

    single = on_one_device(sharded)
    one_by_one = on_one_device(sharded)  # the single-CPU default: slots one after another
    step = mt.make_meta_step(opt, family, config)
    step_one_by_one = mt.make_meta_step(
        opt, family, mt.MetaTrainConfig(num_tasks=8, unroll=4, trajectory=8, meta_lr=1e-2,
                                        task_chunk=1))
    for _ in range(3):
        sharded, m_sharded = step(sharded)
        single, m_single = step(single)
        one_by_one, _ = step_one_by_one(one_by_one)
    assert len(sharded.slots[0].params["x"].sharding.device_set) == 8
    assert len(single.meta_params.b_u.sharding.device_set) == 1
    np.testing.assert_allclose(m_sharded["meta_loss"], m_single["meta_loss"], rtol=1e-12)
    for other in (single, one_by_one):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
                     sharded.meta_params, other.meta_params)
    # PES: the particles are sharded like the task slots and give the same estimate.
    pes = mt.MetaTrainConfig(unroll=4, trajectory=8, meta_lr=1e-2, estimator="pes",
                             num_particles=8, sigma=0.01)
    sharded = mt.init_meta_state(jax.random.PRNGKey(1), opt, family, pes)
    assert sharded.slots[0].noise.b_u.sharding.spec[0] == "tasks", sharded.slots[0].noise.b_u.sharding
    single = on_one_device(sharded)
    step = mt.make_meta_step(opt, family, pes)
    for _ in range(3):
        sharded, _ = step(sharded)
        single, _ = step(single)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
                 sharded.meta_params, single.meta_params)
    print("META_SHARDED_OK")
""")


@pytest.mark.slow  # compiles the meta-step four times in a fresh process (2.5 min)
def test_sharded_meta_step_equals_single_device():
    _run_on_8_cpu_devices(META_SCRIPT, "META_SHARDED_OK")
