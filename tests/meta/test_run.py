"""A meta-training run on disk: kill and resume, refused configurations, bad input, cards."""

import dataclasses
import json
import signal
import subprocess
import time
import warnings

import chex
import jax
import numpy as np
import pytest

import hyperadam_optax as ha
from hyperadam_optax import meta as mt
from tests.meta.run_helpers import CLI, QUICK, QUICK_PES, cli, cli_error, quick_run, steps_logged


def _kill_a_cli_run_at_step_8(out, steps: int) -> None:
    """Start the QUICK run of ``steps`` meta-steps in a process, SIGKILL it once 8 are logged."""
    proc = subprocess.Popen([*CLI, *QUICK, "--meta-steps", str(steps), "--checkpoint-every", "3",
                             "--out-dir", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while steps_logged(out / "metrics.jsonl") < 8 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "meta_params.npz").exists()  # it really stopped before the end


def test_resume_after_a_real_kill_matches_an_uninterrupted_run(tmp_path):
    """In the default run: a CLI process killed mid-run (SIGKILL), resumed in this process,
    ends bit-identical to an uninterrupted run in this process."""
    steps = 80  # enough that the kill at step 8 lands before the end on a fast machine
    killed = tmp_path / "killed"
    _kill_a_cli_run_at_step_8(killed, steps)
    config = mt.MetaTrainConfig(num_tasks=2, unroll=5, trajectory=10, meta_lr=0.01)
    tasks = mt.TaskChoice("quadratic", validation_tasks=2)

    def run(out, **kw):  # checkpoints do not change the result
        return mt.RunOptions(out_dir=str(out), meta_steps=steps, checkpoint_every=100,
                             progress=False, **kw)

    logs = []
    mt.meta_train("hyperadam", tasks, config, run(killed, resume=True), log=logs.append)
    assert any("resuming" in line for line in logs), logs
    mt.meta_train("hyperadam", tasks, config, run(tmp_path / "full"), log=lambda *_: None)
    jax.tree.map(np.testing.assert_array_equal, ha.load_meta_params(killed / "meta_params.npz"),
                 ha.load_meta_params(tmp_path / "full" / "meta_params.npz"))
    logged = [r["step"] for r in mt.read_metrics(str(killed / "metrics.jsonl")) if "meta_loss" in r]
    assert logged == list(range(1, steps + 1))  # no step lost or repeated in the log


@pytest.mark.slow  # several processes, each compiling a meta-step
def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    """The same through the CLI only (three processes), with its card and plot."""
    steps = "400"  # enough that the kill at step 8 lands before the end on a fast machine
    full = tmp_path / "full"
    r = cli(*QUICK, "--meta-steps", steps, "--checkpoint-every", "3", "--out-dir", str(full))
    assert r.returncode == 0, r.stderr

    killed = tmp_path / "killed"
    _kill_a_cli_run_at_step_8(killed, int(steps))
    assert any(p.name.startswith("ckpt_") for p in (killed / "checkpoints").iterdir())

    r = cli(*QUICK, "--meta-steps", steps, "--checkpoint-every", "3", "--out-dir", str(killed),
             "--resume")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout
    a, b = ha.load_meta_params(full / "meta_params.npz"), ha.load_meta_params(
        killed / "meta_params.npz")
    jax.tree.map(np.testing.assert_array_equal, a, b)
    with open(killed / "metrics.jsonl") as f:
        logged = [json.loads(line)["step"] for line in f if "meta_loss" in line]
    assert logged == list(range(1, int(steps) + 1))  # no step lost or repeated in the log
    card = json.loads((killed / "card.json").read_text())
    assert card["meta_steps"] == int(steps) and card["command"].startswith("hyperadam-optax")
    assert (killed / "meta_loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cli_refuses_other_config_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    assert cli(*QUICK, "--meta-steps", "2", "--out-dir", str(out)).returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    r = cli(*QUICK, "--meta-steps", "4", "--num-tasks", "4", "--out-dir", str(out), "--resume")
    assert r.returncode == 2 and "different configuration" in r.stderr and "num_tasks" in r.stderr
    r = cli(*QUICK, "--meta-steps", "4", "--validation-metric", "final", "--out-dir", str(out),
             "--resume")
    assert r.returncode == 2 and "validation_metric" in r.stderr
    r = cli(*QUICK, "--meta-steps", "4", "--out-dir", str(out))
    assert r.returncode == 2 and "--resume" in r.stderr
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert before == after


@pytest.mark.parametrize("args,message", [
    (["--task", "imagenet"], "unknown task"),
    (["--optimizer", "adamw"], "unknown learned optimizer"),
    (["--task", "mnist-mlp", "--data-dir", "/nonexistent/mnist"], "does not exist"),
    (["--init", "adam", "--warm-start-betas", "0.9"],
     "argument --warm-start-betas: expected two numbers A,B, got '0.9'"),
    (["--warm-start-betas", "0.8,0.9"], "apply to HyperAdam's Adam warm start only"),
    (["--init", "adam", "--warm-start-decay", "100"],
     "argument --warm-start-decay: expected two numbers A,B, got '100'"),
    (["--init", "adam", "--warm-start-decay", "100,0"], "warm_start_decay must be (horizon >= 1"),
    (["--warm-start-decay", "100,0.25"], "apply to HyperAdam's Adam warm start only"),
    (["--init", "adam", "--warm-start-clock", "input_gate"], "warm_start_decay, which is not set"),
    (["--init", "adam", "--warm-start-clock", "gate"], "invalid choice: 'gate'"),
    (["--normalization", "rms"], "invalid choice: 'rms'"),
    (["--train-only", "theta_q,theta_z"], "['theta_z'] are not fields"),
    (["--train-only", "theta_q,"], "expected names separated by commas"),
    (["--train-only", "theta_q[1]"], "is not FIELD or FIELD[START:STOP, ...]"),
    (["--train-only", "theta_q[20:]"], "selects nothing of 'theta_q'"),
    (["--train-only", "theta_q[1:],theta_h[:,80:]"], "'theta_h[:,80:]' selects nothing"),
    (["--field-scale", "theta_p=0"], "field scale 'theta_p=0' is not FIELD=FACTOR"),
    (["--field-scale", "theta_z=2"], "field_scales fields ['theta_z'] are not fields"),
    (["--optimizer", "rnnprop", "--normalization", "global_rms"],
     "--normalization is an option of hyperadam, not of rnnprop; leave it out"),
    (["--optimizer", "rnnprop", "--init", "adam"],
     "init 'adam' is not an initialisation of rnnprop; expected one of ('paper',)"),
    (["--estimator", "pes", "--normalize-task-gradients"],
     "--normalize-task-gradients does not apply to --estimator pes"),
    # Options another estimator reads: refused when given, even at their default value.
    (["--sigma", "0.01"], "--sigma does not apply to --estimator tbptt"),
    (["--estimator", "full", "--unroll", "20", "--trajectory", "20", "--num-particles", "4"],
     "--num-particles does not apply to --estimator full"),
    (["--estimator", "pes", "--second-order"], "--second-order does not apply to --estimator pes"),
    (["--estimator", "pes", "--num-tasks", "8"], "--num-tasks does not apply to --estimator pes"),
    (["--estimator", "es", "--unroll", "20", "--trajectory", "20", "--task-chunk", "1"],
     "--task-chunk does not apply to --estimator es"),
    (["--estimator", "pes", "--sigma", "1e30"], "sigma must be in (0, 1.0]"),
    (["--resume"], "nothing to resume at"),
    (["--optimizer", "rnnprop", "--warm-start-step", "2"],
     "--warm-start-step is an option of hyperadam, not of rnnprop; leave it out"),
    (["--task", ""], "--task is empty"),
    (["--task", "quadratic", "--data-dir", "/x"], "no task of this run trains on MNIST (quadratic)"),
])
def test_cli_bad_input(tmp_path, capsys, args, message):
    stderr = cli_error(capsys, "meta-train", "--meta-steps", "1", "--out-dir",
                        str(tmp_path / "o"), "--no-progress", *args)
    assert message in stderr, stderr
    assert not (tmp_path / "o").exists()


def test_cli_corrupt_data_dir(tmp_path, capsys):
    (tmp_path / "mnist.npz").write_bytes(b"not an npz")
    stderr = cli_error(capsys, "meta-train", "--task", "mnist-mlp", "--meta-steps", "1",
                        "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "o"),
                        "--no-progress")
    assert "not a readable MNIST npz" in stderr, stderr


@pytest.mark.slow  # a run of several checkpoints (13 s)
def test_decaying_warm_start_run_and_its_checkpoints(tmp_path):
    """A run from ``warm_start_decay`` (and its clock) records them in its identity; the
    meta-parameters read back from any checkpoint (how a checkpoint other than the best is
    shipped) are the ones the run saved at that step, and step 0 is the warm start itself."""
    from hyperadam_optax.io import meta_params_from_checkpoint as checkpoint_meta_params
    from hyperadam_optax.meta import meta_train

    config = mt.MetaTrainConfig(num_tasks=2, unroll=5, trajectory=10, meta_lr=0.01)
    warm = {"warm_start_step": 2.0, "warm_start_decay": (10, 0.5),
            "warm_start_clock": "input_gate"}
    meta_train(mt.OptimizerChoice(init="adam", init_options=warm),
               mt.TaskChoice("quadratic", validation_tasks=2), config,
               mt.RunOptions(str(tmp_path), meta_steps=2, checkpoint_every=1, keep=5,
                             progress=False), log=lambda *a: None)
    identity = json.loads((tmp_path / "config.json").read_text())
    assert identity["warm_start_decay"] == [10, 0.5]
    assert identity["warm_start_clock"] == "input_gate"
    final = checkpoint_meta_params(str(tmp_path / "checkpoints" / "ckpt_00000002.npz"))
    chex.assert_trees_all_equal(final, ha.load_meta_params(str(tmp_path / "meta_params.npz")))
    start = checkpoint_meta_params(str(tmp_path / "checkpoints" / "ckpt_00000000.npz"))
    np.testing.assert_array_equal(start.b_h, ha.init_meta_params(
        jax.random.key(0), 20, "adam", warm_start_step=2.0, warm_start_decay=(10, 0.5),
        warm_start_clock="input_gate").b_h)
    assert not np.array_equal(start.b_h, final.b_h)
    with pytest.raises(ValueError, match="not a readable meta-training checkpoint"):
        checkpoint_meta_params(str(tmp_path / "config.json"))


@pytest.mark.slow  # several processes, each compiling a meta-step
def test_pes_run_and_init_from_its_weights_or_checkpoint(tmp_path):
    from hyperadam_optax.io import meta_params_from_checkpoint

    first = tmp_path / "pes"
    r = cli(*QUICK_PES, "--num-particles", "2", "--sigma", "0.05",
             "--meta-steps", "3", "--out-dir", str(first))
    assert r.returncode == 0, r.stderr
    config = json.loads((first / "config.json").read_text())
    assert (config["estimator"], config["num_particles"], config["sigma"]) == ("pes", 2, 0.05)
    theta = ha.load_meta_params(first / "meta_params.npz")
    for source in (first / "meta_params.npz", first / "checkpoints" / "ckpt_00000003.npz"):
        out = tmp_path / source.stem
        r = cli(*QUICK, "--meta-steps", "1", "--init-from", str(source), "--out-dir", str(out))
        assert r.returncode == 0, r.stderr
        start = meta_params_from_checkpoint(str(out / "checkpoints" / "ckpt_00000000.npz"))
        jax.tree.map(np.testing.assert_array_equal, start, theta)
        assert "init_from_sha256" in json.loads((out / "config.json").read_text())
    other = tmp_path / "rnnprop.npz"
    ha.save_meta_params(other, ha.init_rnnprop_meta_params(jax.random.key(0)))
    r = cli(*QUICK, "--meta-steps", "1", "--init-from", str(other), "--out-dir",
             str(tmp_path / "bad"))
    assert r.returncode == 2 and "holds RNNpropParams, not the HyperAdamParams" in r.stderr


@pytest.mark.slow  # a run, then an evaluation of its weights (20 s)
def test_global_rms_run_records_its_normalization_and_its_weights_are_evaluated_with_it(tmp_path):
    """``--normalization global_rms`` joins the run's identity and the ``make_kwargs`` of its
    weight files; loading those bare warns, and the evaluation suite builds them with it."""
    import jax.flatten_util

    from hyperadam_optax.evaluation.suites import parse_optimizer

    out = tmp_path / "rms"
    quick_run(out, 2, init="adam", normalization="global_rms")
    assert json.loads((out / "config.json").read_text())["make_kwargs"] == {
        "normalization": "global_rms"}
    for name in ("meta_params.npz", "best_meta_params.npz"):
        with pytest.warns(UserWarning, match="normalization='global_rms'"):
            theta = ha.load_meta_params(out / name)
        _, metadata = ha.load_meta_params(out / name, with_metadata=True)
        assert metadata["make_kwargs"] == {"normalization": "global_rms"}
    params = {"w": jax.numpy.arange(5.0), "b": jax.numpy.ones(3)}
    grads = jax.tree.map(lambda x: 0.1 * x + 0.3, params)

    def first_update(tx):
        return tx.update(grads, tx.init(params), params)[0]

    got = first_update(parse_optimizer(f"hyperadam:{out / 'meta_params.npz'}").make())
    want = first_update(ha.optimizers.hyperadam.hyperadam(
        meta_params=theta, normalization="global_rms"))
    l2 = first_update(ha.optimizers.hyperadam.hyperadam(meta_params=theta))
    chex.assert_trees_all_close(got, want)
    # ... and not with the default normalization: its step differs (by 0.2 % for these
    # warm-start weights, whose kernels are small) far beyond the check above (rtol 1e-6)
    assert not np.allclose(jax.flatten_util.ravel_pytree(got)[0],
                           jax.flatten_util.ravel_pytree(l2)[0], rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="made for {'normalization': 'global_rms'}"):
        quick_run(tmp_path / "l2", 1, init_from=str(out / "meta_params.npz"))
    assert not (tmp_path / "l2").exists()
    # The default spelled out is the default: no make_kwargs, no warning on loading.
    quick_run(tmp_path / "l2", 1, init="adam", normalization="global_l2")
    assert "make_kwargs" not in json.loads((tmp_path / "l2" / "config.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ha.load_meta_params(tmp_path / "l2" / "meta_params.npz")


def test_init_from_weights_reading_the_sign_agreement_trains_that_row(tmp_path):
    """Weights of a shape the default init does not have (θ_p with two rows) start a run,
    and ``trainable`` blocks are checked against them, not against the default init."""
    start = ha.contrib.with_sign_agreement_input(ha.init_meta_params(jax.random.key(0), 20, "paper"),
                                         jax.random.key(1))
    ha.save_meta_params(tmp_path / "start.npz", start, {"make_kwargs": {"sign_agreement": True}})
    config = mt.MetaTrainConfig(num_tasks=2, unroll=5, trajectory=10, meta_lr=0.01,
                                trainable=("theta_p[1:]",))
    out = tmp_path / "run"
    start_file = mt.OptimizerChoice(init_from=str(tmp_path / "start.npz"),
                                    options={"sign_agreement": True})
    with pytest.raises(ValueError, match="made for {'sign_agreement': True}"):
        mt.meta_train(mt.OptimizerChoice(init_from=str(tmp_path / "start.npz")), "quadratic",
                      config, mt.RunOptions(str(tmp_path / "plain"), meta_steps=1))
    assert not (tmp_path / "plain").exists()
    tasks = mt.TaskChoice("quadratic", validation_tasks=2)
    mt.meta_train(start_file, tasks, config,
                  mt.RunOptions(str(out), meta_steps=1, progress=False), log=lambda *_: None)
    end, metadata = ha.load_meta_params(out / "meta_params.npz", with_metadata=True)
    assert metadata["make_kwargs"] == {"sign_agreement": True}
    np.testing.assert_array_equal(end.theta_p[0], start.theta_p[0])
    assert np.all(end.theta_p[1] != start.theta_p[1])
    with pytest.raises(ValueError, match=r"'theta_p\[2:\]' selects nothing of 'theta_p' "
                                         r"\(shape \(2, 20\)\)"):
        mt.meta_train(start_file, tasks,
                      dataclasses.replace(config, trainable=("theta_p[2:]",)),
                      mt.RunOptions(str(tmp_path / "bad"), meta_steps=1, progress=False),
                      log=lambda *_: None)
