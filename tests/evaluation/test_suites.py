"""Suites, optimizer names and the evaluate CLI (on reduced sizes)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hyperadam_optax as ha
from hyperadam_optax import evaluation as ev
from hyperadam_optax import tasks


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
    # A learned optimizer by name is its shipped weights at its default rate; "dm" is the
    # DMoptimizer's alias.
    grads = {"w": jnp.linspace(-1.0, 1.0, 6)}
    for name, alias in (("rnnprop", ha.rnnprop), ("dm", ha.dm_optimizer)):
        tx = ev.parse_optimizer(name).make()
        want = alias(meta_params=ha.load_pretrained(name))
        got_u, _ = tx.update(grads, tx.init(grads))
        want_u, _ = want.update(grads, want.init(grads))
        np.testing.assert_array_equal(got_u["w"], want_u["w"])
        assert float(jnp.abs(got_u["w"]).max()) > 0
    with pytest.raises(ValueError, match="not a readable"):
        ev.parse_optimizer("dm:/nonexistent.npz")
    with pytest.raises(ValueError, match="unknown suite"):
        ev.suite_tasks("table9", data)
    assert list(ev.suite_tasks("long-horizon", data)) == ["mlp-sigmoid", "mlp-9hidden", "cnn2",
                                                          "sine-2layer"]
    with pytest.raises(ValueError, match=r"unknown tasks \['mlp-swish'\]"):
        ev.evaluate_suite("table1", ["adam@0.01"], tasks=["mlp-swish"], data=data)


def test_evaluate_cli(tmp_path, capsys):
    from hyperadam_optax import cli

    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--suite", "table2", "--optimizers",
                     "adam@0.02,sgd@0.001,hyperadam:warm", "--tasks", "sine-small-noise",
                     "--runs", "3", "--steps", "15",
                     "--out-dir", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| adam@0.02 |" in printed and "Paired difference" in printed
    rows = json.loads((out / "table2.json").read_text())
    assert {r["task"] for r in rows} == {"sine-small-noise"} and len(rows) == 3
    assert all(len(r["final_losses"]) == 3 and np.all(np.isfinite(r["final_losses"]))
               and (r["seed"], r["steps"]) == (0, 15) for r in rows)
    assert (out / "table2.png").stat().st_size > 10_000


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


@pytest.mark.parametrize("text, message", [
    ("adam@0.1@2", "one positive finite rate"), ("adam@-0.01", "one positive finite rate"),
    ("adam@0", "one positive finite rate"), ("adam@nan", "one positive finite rate"),
    ("adam@inf", "one positive finite rate"), ("adam@fast", "one positive finite rate"),
])
def test_bad_baseline_rates_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        ev.parse_optimizer(text)


def test_weights_of_another_optimizer_are_refused(tmp_path):
    path = tmp_path / "ha.npz"
    ha.save_meta_params(path, ha.init_meta_params(jax.random.key(0), 3))
    with pytest.raises(ValueError, match="holds HyperAdamParams, not the RNNpropParams of rnnprop"):
        ev.parse_optimizer(f"rnnprop:{path}")


def test_bad_tuning_caches_name_the_file(tmp_path):
    family = tasks.random_quadratics(3)
    for text in ('{"k": 3}', "[1, 2]", '{"k": {"learning_rate": -1}}', '{"trunc'):
        cache = tmp_path / "cache.json"
        cache.write_text(text)
        with pytest.raises(ValueError, match=f"tuning cache {cache}"):
            ev.tune_learning_rate("sgd", family, steps=3, runs=2, seed=0, grid=(0.1,),
                                  cache_path=str(cache))


def test_diverged_runs_are_flagged():
    family = tasks.random_quadratics(3, cond=10.0)
    out = {"results": {"quadratic": {
        "sgd@3": ev.run_protocol(lambda _: optax.sgd(3.0), family, steps=20, runs=3, seed=0),
        "sgd@0.01": ev.run_protocol(lambda _: optax.sgd(0.01), family, steps=20, runs=3, seed=0)}},
        "learning_rates": {"quadratic": {"sgd@3": 3.0, "sgd@0.01": 0.01}}}
    assert out["results"]["quadratic"]["sgd@3"].diverged == 3
    assert out["results"]["quadratic"]["sgd@0.01"].diverged == 0
    table = ev.markdown_table(out)
    assert "**Diverged**" in table and "sgd@3 on quadratic (3 of 3 runs)" in table
    assert "sgd@0.01 on" not in table


def test_evaluate_into_a_file_fails_before_computing(tmp_path, capsys):
    from hyperadam_optax import cli

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "--suite", "table2", "--optimizers", "adam", "--runs", "2",
                  "--out-dir", str(blocker), "--no-progress"])
    captured = capsys.readouterr()
    assert e.value.code == 2 and "not a writable directory" in captured.err
    assert "| optimizer |" not in captured.out  # nothing was computed


def test_validation_suite_is_disjoint_from_reported_and_training_tasks():
    from hyperadam_optax.tasks import TASKS, make_task
    from hyperadam_optax.tasks.data import load_mnist_5k

    d = load_mnist_5k()
    validation = ev.suite_tasks("validation", (d.x, d.y))
    reported = {t for name, tasks_ in ev.SUITES.items()
                if name not in ("validation", "selection", "report") for t in tasks_}
    training = ("mnist-mlp-rs", "mnist-mlp", "mnist-mlp-mix", "mnist-mlp-dm", "quadratic",
                "digits-mlp", "digits-mlp-scaled")
    assert set(validation).isdisjoint(reported) and set(validation) <= set(TASKS)
    names = {make_task(t, (d.x, d.y)).name for t in training}
    for task, family in validation.items():
        assert family.name not in names, task
        params = family.init(jax.random.PRNGKey(0), family.sample_task(jax.random.PRNGKey(1)))
        assert np.isfinite(float(family.loss(params, family.sample_batch(
            jax.random.PRNGKey(2), family.sample_task(jax.random.PRNGKey(1))),
            family.sample_task(jax.random.PRNGKey(1)))))


@pytest.mark.parametrize("optimizers, tasks, message", [
    ("l2o-scale:", None, "expected l2o-scale:PATH"),
    ("adam:", None, "a baseline takes '@rate', not ':'"),
    ("lion", None, "unknown optimizer"),
    ("hyperadam:/nonexistent.npz", None, "not a readable"),
    ("adam", "nosuch", "unknown tasks ['nosuch']"),
    ("adam", "", "unknown tasks ['']"),
])
def test_evaluate_refusals_leave_no_output_directory(tmp_path, capsys, optimizers, tasks, message):
    from hyperadam_optax import cli

    out = tmp_path / "eval"
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "--suite", "table2", "--optimizers", optimizers, "--out-dir",
                  str(out), "--no-progress", *(["--tasks", tasks] if tasks is not None else [])])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_initialisations_are_evaluated_by_name():
    """NAME:paper is the authors' init (key 0), NAME:warm the Adam warm start where there is
    one; generic code names no optimizer."""
    grads = {"w": jnp.linspace(-1.0, 1.0, 4)}
    tx = ev.parse_optimizer("rnnprop:paper").make()
    want = ha.rnnprop(meta_params=ha.init_rnnprop_meta_params(jax.random.key(0)))
    np.testing.assert_array_equal(tx.update(grads, tx.init(grads))[0]["w"],
                                  want.update(grads, want.init(grads))[0]["w"])
    with pytest.raises(ValueError, match="'l2o-scale:warm': init must be 'paper'"):
        ev.parse_optimizer("l2o-scale:warm")


def test_one_optimizer_named_twice_is_evaluated_once(tmp_path):
    path = tmp_path / "theta.npz"
    ha.save_meta_params(path, ha.load_pretrained("l2o_scale"))
    entries = ev.parse_optimizers(["l2o-scale", "adam", "l2o_scale", "adam",
                                   f"l2o-scale:{path}", f"l2o_scale:{tmp_path}/../{tmp_path.name}/theta.npz"])
    assert [e.label for e in entries] == ["l2o-scale", "adam", f"l2o-scale:{path}"]
    assert len(ev.parse_optimizers(["adam@0.01", "adam@1e-2", "adam"])) == 2


def test_a_checkpoint_is_evaluated_with_its_runs_settings(tmp_path):
    from typing import NamedTuple

    from hyperadam_optax.io import save_pytree

    class Checkpoint(NamedTuple):  # the layout of a meta-state: meta_params first
        meta_params: object
        step: object

    theta = ha.init_meta_params(jax.random.key(0), 4)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_pytree(run / "checkpoints" / "best.npz", Checkpoint(theta, jnp.array(3)))
    (run / "config.json").write_text(json.dumps({"optimizer": "hyperadam",
                                                 "make_kwargs": {"normalization": "global_rms"}}))
    tx = ev.parse_optimizer(f"hyperadam:{run}/checkpoints/best.npz").make()
    want = ha.hyperadam(meta_params=theta, normalization="global_rms")
    grads = {"w": jnp.linspace(-1.0, 2.0, 5)}
    np.testing.assert_array_equal(tx.update(grads, tx.init(grads))[0]["w"],
                                  want.update(grads, want.init(grads))[0]["w"])
    moved = tmp_path / "moved.npz"
    moved.write_bytes((run / "checkpoints" / "best.npz").read_bytes())
    with pytest.raises(ValueError, match="a checkpoint outside its run directory"):
        ev.parse_optimizer(f"hyperadam:{moved}")


def _rows(runs_a, runs_b, seed_b=0):
    return [{"task": "t", "optimizer": "a", "final_losses": [1.0] * runs_a, "seed": 0, "steps": 5},
            {"task": "t", "optimizer": "b", "final_losses": [2.0] * runs_b, "seed": seed_b,
             "steps": 5}]


@pytest.mark.parametrize("rows, message", [
    (_rows(3, 2), "did not run on the same seeds"),
    (_rows(3, 3, seed_b=1), "did not run on the same seeds"),
    ([], "holds no results"),
    ({"task": "t"}, "not an evaluation JSON"),
])
def test_compare_refuses_results_that_are_not_paired(tmp_path, capsys, rows, message):
    from hyperadam_optax import cli

    path = tmp_path / "suite.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(SystemExit) as e:
        cli.main(["compare", str(path), "--optimizer", "a", "--baseline", "b"])
    assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(ValueError, match="the same number of runs, at least 2"):
        ev.paired_difference(ev.RunResult(np.ones(3), np.empty((0, 0))),
                             ev.RunResult(np.ones(2), np.empty((0, 0))))


def test_compare_of_paired_results(tmp_path, capsys):
    from hyperadam_optax import cli

    path = tmp_path / "suite.json"
    rows = _rows(3, 3)
    rows[1]["final_losses"] = [2.0, 2.5, 3.0]
    path.write_text(json.dumps(rows))
    assert cli.main(["compare", str(path), "--optimizer", "a", "--baseline", "b"]) == 0
    assert "-1.5000 ± 0.2887 ahead" in capsys.readouterr().out
