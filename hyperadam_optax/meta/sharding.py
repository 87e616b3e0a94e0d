"""Devices for meta-training: task slots sharded over a mesh axis, CPU compiler options."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def task_mesh() -> jax.sharding.Mesh | None:
    """A 1-D mesh ``("tasks",)`` over all devices, or None on a single device."""
    if jax.device_count() == 1:
        return None
    return jax.sharding.Mesh(np.asarray(jax.devices()), ("tasks",))


def shard_meta_state(state):
    """Shard the task slots over the ``tasks`` mesh axis; replicate everything else.

    A no-op on one device. B must be a multiple of the device count to shard. Across
    processes (``jax.distributed``) the mesh holds every process's devices and every process
    passes the same state (same seed, or process 0's broadcast).
    """
    mesh = task_mesh()
    if mesh is None:
        return state
    num_tasks = jax.tree.leaves(state.slots)[0].shape[0]
    if num_tasks % mesh.size:
        raise ValueError(f"num_tasks ({num_tasks}) must be a multiple of the number of devices "
                         f"({mesh.size}) to shard the task batch")
    P = jax.sharding.PartitionSpec
    replicated = jax.sharding.NamedSharding(mesh, P())
    by_task = jax.sharding.NamedSharding(mesh, P("tasks"))
    put = jax.device_put if jax.process_count() == 1 else _put_local_parts
    return state._replace(
        meta_params=put(state.meta_params, replicated),
        outer_state=put(state.outer_state, replicated),
        slots=put(state.slots, by_task),
        step=put(state.step, replicated),
        skipped=put(state.skipped, replicated),
        key=put(state.key, replicated),
    )


def _put_local_parts(tree, sharding):
    """``device_put`` across processes: each process places the parts of the (identical)
    host arrays its own devices hold. (``jax.device_put`` would first compare the values
    across processes, which fails on the NaN placeholders a fresh task slot carries.)"""

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def resolve_task_chunk(config) -> int:
    """``config.task_chunk``, or its default: 1 on one CPU device, else all tasks."""
    if config.task_chunk is not None:
        return config.task_chunk
    if jax.device_count() == 1 and jax.default_backend() == "cpu":
        return 1
    return config.num_tasks


#: XLA:CPU option that turns its YNNPACK library fusions off (dots, reductions, elementwise):
#: their column reductions over the (coordinates, J) arrays of a learned optimizer profiled
#: several times slower than XLA's own loops (benchmarks/meta_step.py --ablations).
_CPU_NO_LIBRARY_FUSIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def cpu_compiler_options() -> dict | None:
    """Compiler options for the meta-step: :data:`_CPU_NO_LIBRARY_FUSIONS` on a CPU backend
    whose XLA accepts them, else None (accelerators, or an XLA without the option)."""
    if jax.default_backend() != "cpu":
        return None
    try:
        jax.jit(jnp.sum, compiler_options=_CPU_NO_LIBRARY_FUSIONS).lower(jnp.ones(2)).compile()
    except Exception:  # noqa: BLE001 - an XLA that does not know the option
        return None
    return _CPU_NO_LIBRARY_FUSIONS
