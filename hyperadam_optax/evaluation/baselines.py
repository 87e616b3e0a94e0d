"""Hand-designed baselines and their learning rates tuned per task on separate seeds."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
import optax

from hyperadam_optax.evaluation.protocol import run_protocol
from hyperadam_optax.io.files import atomic_write, read_json
from hyperadam_optax.meta.processes import is_writer, json_from_writer
from hyperadam_optax.tasks.base import TaskFamily

#: Hand-designed baselines, each ``learning_rate -> transform`` (optax defaults otherwise).
BASELINES: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "adagrad": optax.adagrad,
    "adadelta": optax.adadelta,
    "rmsprop": optax.rmsprop,
    "adam": optax.adam,
    # Adam with the decay rates of the shipped HyperAdam's warm start: what that
    # optimizer is before meta-training, tuned like the others (README: Pretrained).
    "adam-0.8-0.9": lambda lr: optax.adam(lr, b1=0.8, b2=0.9),
    # ... and with its rate schedule: linear from lr to lr / 4 over 100 steps, then constant
    # (the warm start's clock falls along tanh, nearly linear; init_meta_params).
    "adam-0.8-0.9-decay": lambda lr: optax.adam(optax.linear_schedule(lr, lr / 4, 100),
                                                b1=0.8, b2=0.9),
}

#: Learning rates tuned over: a sqrt(2) grid from 2^-12 to 2^3, extended while the best rate
#: is at an end (Adadelta and SGD on sigmoid MLPs want rates above 1).
LR_GRID = tuple(float(2.0 ** (k / 2)) for k in range(-24, 7))

#: Added to the seed of tuning runs so tuning never sees the reported runs' seeds.
TUNING_SEED_OFFSET = 1_000_003


def _injected(name: str):
    inner = BASELINES[name]
    return lambda lr: optax.inject_hyperparams(lambda learning_rate: inner(learning_rate))(
        learning_rate=lr)


def read_tuning_cache(path: str) -> dict:
    """The tuning cache at ``path``: ``{key: {"learning_rate": rate, "scores": ...}}``;
    ``ValueError`` naming the file if it is not."""
    cache = read_json(path, "tuning cache")
    if not isinstance(cache, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("learning_rate"), (int, float))
            and v["learning_rate"] > 0 for v in cache.values()):
        raise ValueError(f"tuning cache {path} is not a cache written by tune_learning_rate "
                         '(expected {key: {"learning_rate": rate, ...}}); remove it to tune again')
    return cache


def search_grid(make_tx: Callable[[float], optax.GradientTransformation], family: TaskFamily,
                *, steps: int, runs: int, seed: int, grid=LR_GRID,
                max_extend: int = 8) -> tuple[float, dict[float, float]]:
    """``(best value, {value: score})``: the value ``h`` of ``grid`` whose ``make_tx(h)`` has
    the lowest mean protocol loss on tuning seeds (``seed + TUNING_SEED_OFFSET``, never the
    reported runs' seeds); runs that diverge count as infinite loss. While the best value is
    at an end of the grid, the grid is extended by sqrt(2) steps past that end (at most
    ``max_extend`` times 4 values). ``make_tx`` takes ``h`` as a traced scalar (all values
    of a grid are ``vmap``-ped in one program)."""

    def score(values):
        results = run_protocol(make_tx, family, steps=steps, runs=runs,
                               seed=seed + TUNING_SEED_OFFSET, hypers=values)
        return {h: (r.mean if np.all(np.isfinite(r.final_loss)) else np.inf)
                for h, r in zip(values, results)}

    scores = score(tuple(grid))
    for _ in range(max_extend):
        values = sorted(scores)
        best = min(values, key=scores.get)
        if best == values[-1]:
            scores.update(score(tuple(best * 2.0 ** (k / 2) for k in range(1, 5))))
        elif best == values[0]:
            scores.update(score(tuple(best * 2.0 ** (-k / 2) for k in range(1, 5))))
        else:
            break
    return float(min(scores, key=scores.get)), scores


def tune_learning_rate(name: str, family: TaskFamily, *, steps: int, runs: int, seed: int,
                       grid=LR_GRID, cache_path: str | None = None, max_extend: int = 8) -> float:
    """The rate of baseline ``name`` with the lowest mean protocol loss on tuning seeds
    (:func:`search_grid`), cached on disk."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {sorted(BASELINES)}")
    key = f"{name}|{family.name}|steps={steps}|runs={runs}|seed={seed}|grid={list(grid)}"
    cache = json_from_writer(  # process 0's file, on every process
        read_tuning_cache(cache_path) if is_writer() and cache_path
        and os.path.exists(cache_path) else {})
    if key in cache:
        return float(cache[key]["learning_rate"])
    best, scores = search_grid(_injected(name), family, steps=steps, runs=runs, seed=seed,
                               grid=grid, max_extend=max_extend)
    if cache_path and is_writer():
        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
        cache[key] = {"learning_rate": best,
                      "scores": {repr(lr): float(v) for lr, v in sorted(scores.items())}}
        text = json.dumps(cache, indent=1).encode()
        atomic_write(cache_path, lambda f: f.write(text))
    return best
