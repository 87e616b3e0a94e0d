"""The task interface: a :class:`TaskFamily` is a distribution over optimizee tasks.

Four pure, jittable functions over array pytrees, so a batch of task instances can be
``vmap``-ped and everything runs on device inside ``lax.scan``:

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
