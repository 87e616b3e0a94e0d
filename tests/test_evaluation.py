"""The evaluation protocol, tuning, tasks and the evaluate CLI (on reduced sizes)."""

import json

import jax
import numpy as np
import optax
import pytest

from hyperadam_optax import evaluation as ev
from hyperadam_optax import tasks
from hyperadam_optax.data import load_mnist_5k
from hyperadam_optax.sine_lstm import sine_batch, sine_lstm


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


@pytest.fixture(scope="module")
def mnist():
    d = load_mnist_5k()
    return d.x, d.y


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


def test_tuning_extends_the_grid_past_its_edge():
    family = tasks.random_quadratics(3, cond=2.0)  # SGD's best rate here is near 0.5-1
    lr = ev.tune_learning_rate("sgd", family, steps=20, runs=2, seed=0, grid=(1e-3, 2e-3))
    assert lr > 0.1


def test_tuning_is_cached_and_uses_other_seeds(mnist, tmp_path, monkeypatch):
    family = tasks.random_quadratics(3)
    cache = str(tmp_path / "tune.json")
    seen = []
    real = ev.run_protocol

    def spy(*args, **kwargs):
        seen.append(kwargs["seed"])
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "run_protocol", spy)
    grid = (0.01, 0.1)
    a = ev.tune_learning_rate("sgd", family, steps=5, runs=2, seed=3, grid=grid, cache_path=cache)
    calls = len(seen)
    b = ev.tune_learning_rate("sgd", family, steps=5, runs=2, seed=3, grid=grid, cache_path=cache)
    assert a == b and len(seen) == calls  # the second call is answered by the cache
    assert calls >= 1 and set(seen) == {3 + ev.TUNING_SEED_OFFSET}  # only tuning seeds


def test_sine_batches_follow_the_generator():
    inputs, targets = sine_batch(jax.random.PRNGKey(0), 64, noise=0.0)
    # A noiseless sequence A sin(w x + φ): f(x+1) + f(x-1) = 2 cos(w) f(x) for every x.
    f = np.concatenate([np.asarray(inputs), np.asarray(targets)[:, None]], axis=1)
    ratio = (f[:, 2:] + f[:, :-2]) / (2 * f[:, 1:-1])
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-2, atol=1e-2)
    assert 0 <= np.abs(f).max() <= 10


@pytest.mark.parametrize("layers", [1, 2])
def test_sine_lstm_learns(layers):
    family = sine_lstm(layers=layers)
    r = ev.run_protocol(lambda _: optax.adam(0.02), family, steps=60, runs=2, seed=0)
    assert r.curve[:, -10:].mean() < 0.5 * r.curve[:, :5].mean()


def test_suites_and_optimizer_specs():
    data = (np.zeros((4, 784), np.float32), np.zeros(4, np.int32))
    assert list(ev.suite_tasks("table1", data)) == ["mlp-sigmoid", "mlp-relu", "mlp-elu", "mlp-tanh"]
    deep = ev.suite_tasks("deep-mlp", data)
    params = deep["mlp-10hidden"].init(jax.random.PRNGKey(0), {})
    assert len(params) == 11
    assert ev.parse_optimizer("adam@0.01").lr == 0.01
    low = ev.parse_optimizer("adam-0.8-0.9@0.03")
    assert (low.baseline, low.lr) == ("adam-0.8-0.9", 0.03)
    grads = [np.array([1.0, -2.0]), np.array([0.5, 3.0]), np.array([-1.0, 1.0])]

    def updates(tx):
        state, out = tx.init(np.zeros(2)), None
        for g in grads:
            out, state = tx.update(g, state)
        return np.asarray(out)

    low_tx = ev.BASELINES["adam-0.8-0.9"](0.03)
    np.testing.assert_allclose(updates(low_tx), updates(optax.adam(0.03, b1=0.8, b2=0.9)))
    assert not np.allclose(updates(low_tx), updates(optax.adam(0.03)))
    rng = np.random.default_rng(0)
    long_grads = rng.normal(size=(120, 2))
    hand = optax.adam(lambda k: 0.03 * (1.0 - 0.75 * np.minimum(k, 100) / 100), b1=0.8, b2=0.9)

    def long_updates(tx):
        state, outs = tx.init(np.zeros(2)), []
        for g in long_grads:
            out, state = tx.update(g, state)
            outs.append(np.asarray(out))
        return np.array(outs)

    np.testing.assert_allclose(long_updates(ev.BASELINES["adam-0.8-0.9-decay"](0.03)),
                               long_updates(hand), rtol=1e-5)
    with pytest.raises(ValueError, match="unknown optimizer"):
        ev.parse_optimizer("lion")
    assert ev.parse_optimizer("rnnprop").make() is not None  # the shipped weights
    with pytest.raises(ValueError, match="not a readable"):
        ev.parse_optimizer("dm:/nonexistent.npz")
    with pytest.raises(ValueError, match="unknown suite"):
        ev.suite_tasks("table9", data)
    assert list(ev.suite_tasks("long-horizon", data)) == ["mlp-sigmoid", "mlp-9hidden", "cnn2",
                                                          "sine-2layer"]
    with pytest.raises(ValueError, match=r"unknown tasks \['mlp-swish'\]"):
        ev.evaluate_suite("table1", ["adam@0.01"], tasks=["mlp-swish"], data=data)


@pytest.mark.slow
@pytest.mark.parametrize("arch,n_params", [("cnn1", 3 * 3 * 16 + 16 + 3 * 3 * 16 * 32 + 32 + 6272 * 10 + 10),
                                           ("cnn2", None)])
def test_cnns_learn(mnist, arch, n_params):
    from hyperadam_optax.cnn import mnist_cnn

    family = mnist_cnn(*mnist, architecture=arch)
    params = family.init(jax.random.PRNGKey(0), {})
    if n_params is not None:
        assert sum(x.size for x in jax.tree.leaves(params)) == n_params
    r = ev.run_protocol(lambda _: optax.adam(1e-3), family, steps=25, runs=2, seed=0)
    assert r.curve[:, -5:].mean() < 0.6 * r.curve[:, :3].mean()


def test_evaluate_cli(tmp_path, capsys):
    from hyperadam_optax import cli

    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--suite", "table2", "--optimizers",
                     "adam@0.02,sgd@0.001,hyperadam:warm", "--runs", "3", "--steps", "15",
                     "--out-dir", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| adam@0.02 |" in printed and "Paired difference" in printed
    rows = json.loads((out / "table2.json").read_text())
    assert {r["task"] for r in rows} == {"sine-baseline", "sine-small-noise", "sine-2layer"}
    assert all(len(r["final_losses"]) == 3 and np.all(np.isfinite(r["final_losses"]))
               for r in rows)
    assert (out / "table2.png").stat().st_size > 10_000


def test_generalisation_metrics(mnist):
    from hyperadam_optax.data import mnist_5k_split

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


def test_evaluate_cli_bad_input(tmp_path, capsys):
    from hyperadam_optax import cli

    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "--suite", "table7", "--out-dir", str(tmp_path)])
    assert e.value.code == 2 and "unknown suite" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "--optimizers", "hyperadam:/nonexistent.npz", "--out-dir",
                  str(tmp_path), "--no-progress"])
    assert e.value.code == 2 and "not a readable" in capsys.readouterr().err




@pytest.mark.slow
def test_generalisation_suite_end_to_end():
    out = ev.evaluate_suite("generalisation", ["adam@0.001"], runs=2, steps=5, progress=False)
    assert set(out["test"]) == {"mlp-sigmoid", "cnn1", "cnn2"}
    table = ev.markdown_table(out)
    assert "Held-out images" in table and table.count("adam@0.001") == 2
