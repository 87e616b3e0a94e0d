"""Runs across processes and hosts on JAX's multi-controller runtime (``jax.distributed``).

Every process runs the same program on one global mesh (``jax.devices()`` spans all
processes; :mod:`~hyperadam_optax.meta.sharding` shards the task slots over it), so every
process holds the same meta-parameters after every meta-step. Process 0 is the writer: it
alone touches the run directory (lock, config, metrics, checkpoints, card) and reads it to
resume; what it read or decided reaches the others by :func:`from_writer`. With one process
(the default) all of this is the identity and costs nothing.
"""

from __future__ import annotations

import json

import jax
import numpy as np


def join(coordinator: str | None = None, num_processes: int | None = None,
         process_id: int | None = None, *, auto: bool = False,
         heartbeat_timeout_s: int = 100) -> None:
    """Join a multi-process run: ``jax.distributed.initialize`` with the coordinator's
    ``host:port``, the process count and this process's id, or (``auto``) what JAX detects
    (SLURM, a TPU pod slice, Open MPI, Kubernetes). Must come before any JAX computation. On
    CPU the collectives use gloo. A process that stops sending heartbeats for
    ``heartbeat_timeout_s`` seconds makes the others stop with an error instead of waiting
    for it forever."""
    given = (coordinator, num_processes, process_id)
    if auto and any(v is not None for v in given):
        raise ValueError("--distributed auto detects the coordinator, the process count and "
                         "the process id; leave out --coordinator, --num-processes and "
                         "--process-id")
    if not auto and any(v is None for v in given):
        raise ValueError("a multi-process run needs --coordinator HOST:PORT, --num-processes "
                         "and --process-id together (or --distributed auto)")
    if not auto and not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id must be in [0, --num-processes) = [0, {num_processes}), "
                         f"got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {} if auto else {"coordinator_address": coordinator,
                              "num_processes": num_processes, "process_id": process_id}
    jax.distributed.initialize(**kwargs, heartbeat_timeout_seconds=heartbeat_timeout_s)


def is_writer() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return jax.process_index() == 0


def from_writer(tree):
    """``tree`` (host arrays and numbers) as process 0 holds it, on every process."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(tree))


def json_from_writer(obj):
    """A JSON-able object as process 0 holds it (e.g. what it read from a file), on every
    process."""
    if jax.process_count() == 1:
        return obj
    data = json.dumps(obj).encode() if is_writer() else b""
    size = int(from_writer(np.asarray(len(data), np.int64)))
    buffer = np.frombuffer(data, np.uint8) if is_writer() else np.zeros(size, np.uint8)
    return json.loads(bytes(from_writer(buffer)).decode())


def spread(x: np.ndarray, axis: str = "runs"):
    """``x`` split along its first axis over every device of every process (a 1-D mesh
    ``axis``), when there are several devices and they divide it; else ``x`` as it is."""
    count = jax.device_count()
    if count == 1 or len(x) % count:
        if jax.process_count() > 1:
            raise ValueError(f"{len(x)} runs cannot be shared by the {count} devices of "
                             f"{jax.process_count()} processes: ask for a multiple of {count}")
        return x
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), (axis,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def to_host(tree):
    """Every leaf as a whole NumPy array on every process: leaves sharded over other
    processes' devices are gathered (a collective: every process must call it)."""

    def whole(x):
        if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(whole, tree)


class WriterRefusedError(RuntimeError):
    """Process 0 refused the run (its own error says why); the others stop too."""


def writer_outcome(error: BaseException | None) -> None:
    """Process 0 tells the others whether it could set the run up; on the others, raise
    :class:`WriterRefusedError` if it could not (so nobody waits on a collective forever)."""
    failed = bool(from_writer(np.asarray(error is not None)))
    if failed and not is_writer():
        raise WriterRefusedError("process 0 refused the run (its error says why); stopping")
