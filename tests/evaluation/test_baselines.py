"""Tuned baselines: the learning-rate grid, its extension, the cache and tuning seeds."""

import json

import optax
import pytest

from hyperadam_optax import evaluation as ev
from hyperadam_optax import tasks
from hyperadam_optax.evaluation import baselines
from hyperadam_optax.tasks.data import load_mnist_5k


@pytest.fixture(scope="module")
def mnist():
    d = load_mnist_5k()
    return d.x, d.y


@pytest.mark.slow
def test_tuned_adam_beats_sgd_at_its_default_rate(mnist, tmp_path):
    family = tasks.mnist_mlp(*mnist)
    cache = str(tmp_path / "tune.json")
    grid = tuple(2.0 ** k for k in (-8, -6, -5, -4, -2))
    lr = ev.tune_learning_rate("adam", family, steps=60, runs=4, seed=0, grid=grid,
                               cache_path=cache)
    assert lr in (2.0 ** -6, 2.0 ** -5, 2.0 ** -4)  # the authors' 2^-5 or a neighbour
    adam = ev.run_protocol(lambda _: optax.adam(lr), family, steps=60, runs=8, seed=0)
    sgd = ev.run_protocol(lambda _: optax.sgd(0.01), family, steps=60, runs=8, seed=0)
    diff, se = ev.paired_difference(adam, sgd)
    assert diff < 0 and abs(diff) > 2 * se
    with open(cache) as f:
        entry = next(iter(json.load(f).values()))
    assert entry["learning_rate"] == lr and len(entry["scores"]) == len(grid)


@pytest.mark.slow
def test_tuning_extends_the_grid_past_its_edge():
    family = tasks.random_quadratics(3, cond=2.0)  # SGD's best rate here is near 0.5-1
    lr = ev.tune_learning_rate("sgd", family, steps=20, runs=2, seed=0, grid=(1e-3, 2e-3))
    assert lr > 0.1


def test_tuning_is_cached_and_uses_other_seeds(mnist, tmp_path, monkeypatch):
    family = tasks.random_quadratics(3)
    cache = str(tmp_path / "tune.json")
    seen = []
    real = baselines.run_protocol

    def spy(*args, **kwargs):
        seen.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(baselines, "run_protocol", spy)
    grid = (0.01, 0.1)
    a = ev.tune_learning_rate("sgd", family, steps=5, runs=2, seed=3, grid=grid, cache_path=cache)
    calls = len(seen)
    b = ev.tune_learning_rate("sgd", family, steps=5, runs=2, seed=3, grid=grid, cache_path=cache)
    assert a == b and len(seen) == calls  # the second call is answered by the cache
    assert calls >= 1 and set(seen) == {3 + ev.TUNING_SEED_OFFSET}  # only tuning seeds


def test_search_grid_tunes_any_transform_as_a_baseline_is_tuned():
    # A step factor on top of SGD at 0.1 is SGD's rate divided by 0.1: the same choice.
    family = tasks.random_quadratics(3, cond=2.0)
    factors = (0.5, 1.0, 2.0, 4.0, 8.0)
    best, scores = ev.search_grid(lambda c: optax.chain(optax.sgd(0.1), optax.scale(c)),
                                  family, steps=10, runs=2, seed=0, grid=factors)
    rate = ev.tune_learning_rate("sgd", family, steps=10, runs=2, seed=0,
                                 grid=tuple(0.1 * f for f in factors))
    assert best == pytest.approx(rate / 0.1) and best == min(scores, key=scores.get)
    assert set(factors) <= set(scores) and best not in (factors[0], factors[-1])
