"""Every learned optimizer of the registry on parameters sharded over 8 forced CPU devices:
on Auto and Explicit mesh axes, with the sharded axis at every position, alone and inside
optax's chain, inject_hyperparams, masked and MultiSteps, the updates equal the unsharded
ones and the updates and state keep the parameter's sharding."""

import os
import subprocess
import sys
import textwrap

import pytest

#: Both scripts' gradients and update loop: three updates of ``tx`` from its init.
UPDATES = textwrap.dedent("""
    import jax, jax.numpy as jnp

    def gradients(params):
        return [jax.tree.map(lambda x: jnp.sin((i + 1) * x) + 0.1 * i, params)
                for i in range(3)]

    def run(tx, params, grads):
        state, step, outs = tx.init(params), jax.jit(tx.update), []
        for g in grads:
            u, state = step(g, state, params)
            outs.append(u)
        return outs, state
""")

SCRIPT = UPDATES + textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from hyperadam_optax.optimizers import OPTIMIZERS
    assert jax.device_count() == 8, jax.devices()
    kind = getattr(AxisType, sys.argv[1])
    labels = sys.argv[2].split(",")
    mesh = jax.make_mesh((8,), ("x",), axis_types=(kind,))
    import optax
    for name, spec in OPTIMIZERS.items():
        theta = spec.init_meta_params(jax.random.key(0))
        plain = spec.make(spec.default_learning_rate, theta)
        wrapped = {
            "plain": plain,
            "chain": optax.chain(optax.clip_by_global_norm(1.0), plain),
            "inject": optax.inject_hyperparams(spec.make)(
                learning_rate=spec.default_learning_rate, meta_params=theta),
            "masked": optax.masked(plain, {"w": True, "b": False}),
            "multi_steps": optax.MultiSteps(plain, every_k_schedule=2),
        }
        for pos, label in [(p, w) for p in range(3) for w in labels]:
            tx = wrapped[label]
            shape, axes = [2, 3, 4], [None, None, None]
            shape[pos], axes[pos] = 8, "x"
            params = {"w": jax.random.normal(jax.random.key(1), tuple(shape)),
                      "b": jnp.linspace(-1.0, 1.0, 5)}
            grads = gradients(params)
            ref, _ = run(tx, params, grads)
            with jax.set_mesh(mesh):
                shard = {"w": NamedSharding(mesh, P(*axes)), "b": NamedSharding(mesh, P())}
                got, state = run(tx, jax.device_put(params, shard),
                                 [jax.device_put(g, shard) for g in grads])
            for a, b in zip(ref, got):
                jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-7),
                             a, b)
            where = (name, label, pos)
            assert got[-1]["w"].sharding.spec[pos] == "x", (where, got[-1]["w"].sharding)
            for field in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, dict)):
                if (isinstance(field, dict) and "w" in field and hasattr(field["w"], "sharding")
                        and field["w"].ndim >= 3):  # per-leaf rows (L2O-Scale's) are replicated
                    spec_w = field["w"].sharding.spec
                    assert len(spec_w) > pos and spec_w[pos] == "x", (where, spec_w)
                    assert all(a is None for i, a in enumerate(spec_w) if i != pos), spec_w
    print("SHARDED_OK")
""")


def _run(axis_type: str, labels: str) -> None:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT, axis_type, labels], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SHARDED_OK" in out.stdout


@pytest.mark.slow  # a fresh process with 8 forced devices compiling every optimizer
@pytest.mark.parametrize("axis_type", ["Auto", "Explicit"])
def test_sharded_updates_equal_unsharded_and_keep_the_sharding(axis_type):
    _run(axis_type, "plain")


@pytest.mark.slow
@pytest.mark.parametrize("axis_type", ["Auto", "Explicit"])
def test_sharded_inside_optax_wrappers(axis_type):
    _run(axis_type, "chain,inject,masked,multi_steps")


PROCESS_SCRIPT = UPDATES + textwrap.dedent("""
    import sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.experimental import multihost_utils
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    from hyperadam_optax.meta.processes import join
    join(f"localhost:{sys.argv[2]}", 2, int(sys.argv[1]))
    from hyperadam_optax.optimizers import OPTIMIZERS
    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()

    def put(x, sharding):  # each process places its part of the same host array
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])

    for kind in (AxisType.Auto, AxisType.Explicit):
        mesh = jax.make_mesh((4,), ("x",), axis_types=(kind,))
        for name, spec in OPTIMIZERS.items():
            tx = spec.make(spec.default_learning_rate, spec.init_meta_params(jax.random.key(0)))
            params = {"w": jax.random.normal(jax.random.key(1), (8, 3)),
                      "b": jnp.linspace(-1.0, 1.0, 5)}
            grads = gradients(params)
            ref, _ = run(tx, params, grads)  # this process alone, one device
            with jax.set_mesh(mesh):
                shard = {"w": NamedSharding(mesh, P("x")), "b": NamedSharding(mesh, P())}
                got, _ = run(tx, jax.tree.map(put, params, shard),
                             [jax.tree.map(put, g, shard) for g in grads])
            for a, b in zip(ref, got):
                assert b["w"].sharding.spec[0] == "x" and not b["w"].is_fully_addressable
                b = {"w": multihost_utils.process_allgather(b["w"], tiled=True),
                     "b": np.asarray(b["b"])}
                jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5,
                                                                     atol=1e-7), a, b)
    print("SHARDED_OK")
""")


@pytest.mark.slow  # two processes, each compiling every optimizer twice
def test_updates_on_a_mesh_that_spans_two_processes_equal_one_process():
    """Parameters sharded over the 4 devices of two processes (``jax.distributed``, 2 CPU
    devices each), Auto and Explicit axes: every optimizer's updates equal those of one
    process on one device."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-c", PROCESS_SCRIPT, str(i), port], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        assert "SHARDED_OK" in out
