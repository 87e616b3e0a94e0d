"""The evaluation protocol: final loss over the seen minibatches, held-out metrics."""

import jax
import numpy as np
import optax
import pytest

from hyperadam_optax import evaluation as ev
from hyperadam_optax import tasks
from hyperadam_optax.tasks.data import load_mnist_5k


@pytest.fixture(scope="module")
def mnist():
    d = load_mnist_5k()
    return d.x, d.y


def test_protocol_is_the_final_loss_over_the_seen_minibatches():
    """Against a plain Python loop with the same keys: SGD on a noisy quadratic."""
    family = tasks.random_quadratics(4, noise=0.5)
    lr, steps, runs, seed = 0.05, 7, 3, 11
    got = ev.run_protocol(lambda _: optax.sgd(lr), family, steps=steps, runs=runs, seed=seed)
    for i, key in enumerate(jax.random.split(jax.random.PRNGKey(seed), runs)):
        k_task, k_init, k_data = jax.random.split(key, 3)
        task = family.sample_task(k_task)
        x = np.asarray(family.init(k_init, task)["x"], np.float64)
        w, y = np.asarray(task["w"], np.float64), np.asarray(task["y"], np.float64)
        batches = [np.asarray(family.sample_batch(k, task), np.float64)
                   for k in jax.random.split(k_data, steps)]
        losses = []
        for b in batches:
            r = w @ x - y
            losses.append(0.5 * r @ r + b @ x)
            x = x - lr * (w.T @ r + b)
        final = np.mean([0.5 * (w @ x - y) @ (w @ x - y) + b @ x for b in batches])
        np.testing.assert_allclose(got.curve[i], losses, rtol=1e-4)
        np.testing.assert_allclose(got.final_loss[i], final, rtol=1e-4)


def test_generalisation_metrics(mnist):
    from hyperadam_optax.tasks.data import mnist_5k_split

    train, test = mnist_5k_split()
    assert len(train.y) == 4000 and len(test.y) == 1000
    assert not set(map(bytes, train.x[:200])) & set(map(bytes, test.x))  # disjoint images
    family = tasks.mnist_mlp(train.x, train.y)
    m = ev.test_metrics(lambda _: optax.adam(2 ** -5), family, test.x, test.y, steps=80, runs=3,
                        seed=0)
    assert np.all(m["top1"] > 0.7) and np.all(m["top2"] >= m["top1"])
    untrained = ev.test_metrics(lambda _: optax.sgd(0.0), family, test.x, test.y, steps=2, runs=3,
                                seed=0)
    assert np.all(untrained["top1"] < 0.3) and np.all(m["loss"] < untrained["loss"])
