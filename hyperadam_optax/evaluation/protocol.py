"""The HyperAdam paper's evaluation protocol: paired runs scored by their final loss.

Protocol (the authors' code, reference notes): N runs with fresh initialisations and the
same seeds for every optimizer (paired); each run trains for ``steps`` steps; its reported
loss is the loss of the FINAL parameters averaged over the minibatches seen during the run.
No Random Scaling and no convex term. Runs are ``vmap``-ped: one compiled program per
(optimizer, task); a baseline's learning-rate grid is ``vmap``-ped too. With several devices
(of one process or of several, ``jax.distributed``) the runs are split over all of them
when their number divides the runs; every process gets every run's result.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperadam_optax.meta.processes import spread, to_host
from hyperadam_optax.meta.unroll import final_loss, train
from hyperadam_optax.tasks.base import TaskFamily


@dataclasses.dataclass(frozen=True)
class RunResult:
    """``final_loss``: (runs,) protocol losses; ``curve``: (runs, steps) minibatch losses."""

    final_loss: np.ndarray
    curve: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.final_loss))

    @property
    def diverged(self) -> int:
        """Runs whose final loss is not finite or above their first minibatch loss (0 when
        the curves were not kept)."""
        if self.curve.size == 0:
            return 0
        start = self.curve[:, 0]
        return int(np.sum(~np.isfinite(self.final_loss) | (self.final_loss > start)))

    @property
    def stderr(self) -> float:
        n = len(self.final_loss)
        return float(np.std(self.final_loss, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def _one_run(make_tx, family: TaskFamily, steps: int, key, hyper):
    curve, final, task, step_keys = train(make_tx(hyper), family, key, steps)
    return final_loss(family, final, task, step_keys), curve, final


def run_protocol(make_tx: Callable, family: TaskFamily, *, steps: int, runs: int, seed: int,
                 hypers=None) -> RunResult | list[RunResult]:
    """Run ``runs`` paired runs of ``make_tx(hyper)`` on ``family``.

    ``hypers=None``: ``make_tx(None)`` once, returns a :class:`RunResult`. Otherwise a
    sequence of floats (e.g. learning rates), all ``vmap``-ped in one program; returns one
    result per value.
    """
    for name, value in (("steps", steps), ("runs", runs)):
        if not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    keys = spread(np.asarray(jax.random.split(jax.random.PRNGKey(seed), runs)))
    if hypers is None:
        fn = jax.jit(jax.vmap(lambda k: _one_run(make_tx, family, steps, k, None)[:2]))
        final, curve = to_host(fn(keys))
        return RunResult(final, curve)
    grid = np.asarray(hypers, np.float32)
    fn = jax.jit(jax.vmap(jax.vmap(lambda k, h: _one_run(make_tx, family, steps, k, h)[:2],
                                   in_axes=(0, None)), in_axes=(None, 0)))
    final, curve = to_host(fn(keys, grid))
    return [RunResult(f, c) for f, c in zip(final, curve)]


def test_metrics(make_tx: Callable, family: TaskFamily, test_x, test_y, *, steps: int,
                 runs: int, seed: int) -> dict[str, np.ndarray]:
    """Train as :func:`run_protocol`, then the final parameters' mean cross-entropy, top-1 and
    top-2 accuracy on held-out images, per run: ``{"loss", "top1", "top2"}`` of shape (runs,)."""
    if family.logits is None:
        raise ValueError(f"task {family.name} has no logits function: not a classifier")
    test_x, test_y = jnp.asarray(test_x, jnp.float32), jnp.asarray(test_y, jnp.int32)

    def one(key):
        _, _, final = _one_run(make_tx, family, steps, key, None)
        logits = family.logits(final, test_x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, test_y).mean()
        top2 = jax.lax.top_k(logits, 2)[1]
        return (loss, jnp.mean(top2[:, 0] == test_y),
                jnp.mean(jnp.any(top2 == test_y[:, None], axis=1)))

    keys = spread(np.asarray(jax.random.split(jax.random.PRNGKey(seed), runs)))
    loss, top1, top2 = to_host(jax.jit(jax.vmap(one))(keys))
    return {"loss": loss, "top1": top1, "top2": top2}


def paired_difference(a: RunResult, b: RunResult) -> tuple[float, float]:
    """Mean and standard error of ``a - b`` over paired runs (the same seeds: at least two,
    as many for ``a`` as for ``b``)."""
    if len(a.final_loss) != len(b.final_loss) or len(a.final_loss) < 2:
        raise ValueError(f"paired runs need the same number of runs, at least 2, on both sides; "
                         f"got {len(a.final_loss)} and {len(b.final_loss)}")
    d = a.final_loss - b.final_loss
    return float(np.mean(d)), float(np.std(d, ddof=1) / np.sqrt(len(d)))


