"""A meta-training run on disk: kill and resume, refused configurations, bad input, cards."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import chex
import jax
import numpy as np
import pytest

import hyperadam_optax as ha
from hyperadam_optax import meta as mt

CLI = [sys.executable, "-m", "hyperadam_optax.cli"]


QUICK = ["meta-train", "--task", "quadratic", "--num-tasks", "2", "--unroll", "5",
         "--trajectory", "10", "--meta-lr", "0.01", "--validation-tasks", "2", "--no-progress"]
QUICK_PES = [*QUICK[:3], *QUICK[5:], "--estimator", "pes"]  # PES has particles, not --num-tasks


def _cli(*args, **kw):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, **kw)


def _cli_error(capsys, *args) -> str:
    """The CLI run in this process on input it must refuse before any work: exits with status
    2 (argparse's, or a clear error, never a traceback); returns its stderr."""
    from hyperadam_optax.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    stderr = capsys.readouterr().err
    assert exit_.value.code == 2, stderr
    return stderr


def _steps_logged(path):
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max([json.loads(line).get("step", 0) for line in f if line.strip()] or [0])


def _kill_a_cli_run_at_step_8(out, steps: int) -> None:
    """Start the QUICK run of ``steps`` meta-steps in a process, SIGKILL it once 8 are logged."""
    proc = subprocess.Popen([*CLI, *QUICK, "--meta-steps", str(steps), "--checkpoint-every", "3",
                             "--out-dir", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _steps_logged(out / "metrics.jsonl") < 8 and time.time() < deadline:
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
    r = _cli(*QUICK, "--meta-steps", steps, "--checkpoint-every", "3", "--out-dir", str(full))
    assert r.returncode == 0, r.stderr

    killed = tmp_path / "killed"
    _kill_a_cli_run_at_step_8(killed, int(steps))
    assert any(p.name.startswith("ckpt_") for p in (killed / "checkpoints").iterdir())

    r = _cli(*QUICK, "--meta-steps", steps, "--checkpoint-every", "3", "--out-dir", str(killed),
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
    assert _cli(*QUICK, "--meta-steps", "2", "--out-dir", str(out)).returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    r = _cli(*QUICK, "--meta-steps", "4", "--num-tasks", "4", "--out-dir", str(out), "--resume")
    assert r.returncode == 2 and "different configuration" in r.stderr and "num_tasks" in r.stderr
    r = _cli(*QUICK, "--meta-steps", "4", "--validation-metric", "final", "--out-dir", str(out),
             "--resume")
    assert r.returncode == 2 and "validation_metric" in r.stderr
    r = _cli(*QUICK, "--meta-steps", "4", "--out-dir", str(out))
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
    stderr = _cli_error(capsys, "meta-train", "--meta-steps", "1", "--out-dir",
                        str(tmp_path / "o"), "--no-progress", *args)
    assert message in stderr, stderr
    assert not (tmp_path / "o").exists()


def test_cli_corrupt_data_dir(tmp_path, capsys):
    (tmp_path / "mnist.npz").write_bytes(b"not an npz")
    stderr = _cli_error(capsys, "meta-train", "--task", "mnist-mlp", "--meta-steps", "1",
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


# Reliability of the run directory ---------------------------------------------------------

#: QUICK at a tenth of its meta-rate: finite for 4,000 meta-steps and more (at 0.01 a run
#: diverges, and stops itself, after about a thousand: measured), so it is still running
#: when killed, however fast the machine.
LONG = [a if a != "0.01" else "0.001" for a in QUICK]


def _start(out, steps="1000000"):  # killed long before it ends
    return subprocess.Popen([*CLI, *LONG, "--meta-steps", steps, "--checkpoint-every", "2",
                             "--out-dir", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_for_step(path, step):
    deadline = time.time() + 300
    while _steps_logged(path) < step and time.time() < deadline:
        time.sleep(0.05)
    assert _steps_logged(path) >= step


@pytest.mark.slow  # several processes, each compiling a meta-step
def test_a_second_run_into_a_used_directory_is_refused_and_a_killed_one_does_not_block(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    try:
        _wait_for_step(out / "metrics.jsonl", 3)
        r = _cli(*LONG, "--meta-steps", "1000000", "--out-dir", str(out), "--resume")
        assert r.returncode == 2 and "in use by another meta-train process" in r.stderr, r.stderr
        assert f"pid {proc.pid}" in r.stderr
        # The card names the command from the start, not only at the end.
        card = json.loads((out / "card.json").read_text())
        assert card["status"] == "running" and "--meta-steps 1000000" in card["command"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = _steps_logged(out / "metrics.jsonl")
    (out / "checkpoints" / ".tmp-orphan").write_bytes(b"x" * 1000)  # as a kill mid-write leaves
    r = _cli(*LONG, "--meta-steps", str(done + 2), "--checkpoint-every", "2",
             "--out-dir", str(out), "--resume")
    assert r.returncode == 0, r.stderr  # the killed run's lock died with it
    assert not (out / "checkpoints" / ".tmp-orphan").exists()
    card = json.loads((out / "card.json").read_text())
    assert card["status"] == "finished" and len(card["commands"]) == 2


def _quick_run(out, steps, *, init="paper", normalization=None, init_from=None, log=None,
               **run):
    config = mt.MetaTrainConfig(num_tasks=2, unroll=5, trajectory=10, meta_lr=0.01)
    optimizer = mt.OptimizerChoice("hyperadam", init=init, init_from=init_from,
                                   options={"normalization": normalization})
    return mt.meta_train(optimizer, mt.TaskChoice("quadratic", validation_tasks=2), config,
                         mt.RunOptions(out_dir=str(out), meta_steps=steps, progress=False, **run),
                         log=log or (lambda *_: None))


@pytest.mark.slow
def test_resume_repairs_a_best_checkpoint_left_stale_by_a_kill(tmp_path):
    from hyperadam_optax.io import read_leaves
    from hyperadam_optax.meta.run_dir import RunFiles, read_metrics

    out = tmp_path / "run"
    _quick_run(out, 6, checkpoint_every=2, keep=10)
    files = RunFiles(str(out))
    vals = {r["step"]: r["validation_loss"] for r in read_metrics(files.metrics)
            if "validation_loss" in r}
    best = min(vals, key=vals.get)
    stale = next(s for s in vals if s != best)
    # What a kill between writing ckpt_<best> and copying it to best.npz leaves behind.
    shutil.copyfile(files.checkpoint(stale), out / "checkpoints" / "best.npz")
    logged = []
    card = _quick_run(out, 8, checkpoint_every=2, keep=10, resume=True, log=logged.append)
    assert any("repairing" in line for line in logged)
    # "best" is the lowest validation loss of the whole run (the earliest of equal ones),
    # read off the metrics, not off the card.
    scored = {r["step"]: r["validation_loss"] for r in read_metrics(files.metrics)
              if "validation_loss" in r}
    assert sorted(scored) == [0, 2, 4, 6, 8]
    expected = min(scored, key=lambda step: (scored[step], step))
    assert card["best"] == {"step": expected, "validation_loss": scored[expected]}
    assert int(read_leaves(out / "checkpoints" / "best.npz")[".step"]) == expected
    assert ha.load_meta_params(out / "best_meta_params.npz", with_metadata=True)[1]["step"] == \
        expected


@pytest.mark.slow
def test_resume_refuses_other_validation_tasks_and_fewer_meta_steps(tmp_path):
    out = tmp_path / "run"
    assert _cli(*QUICK, "--meta-steps", "3", "--out-dir", str(out)).returncode == 0
    args = [a if a != "2" or i != QUICK.index("--validation-tasks") + 1 else "4"
            for i, a in enumerate(QUICK)]
    r = _cli(*args, "--meta-steps", "6", "--out-dir", str(out), "--resume")
    assert r.returncode == 2 and "validation_tasks" in r.stderr, r.stderr
    card = (out / "card.json").read_text()
    r = _cli(*QUICK, "--meta-steps", "1", "--out-dir", str(out), "--resume")
    assert r.returncode == 2 and "already at meta-step 3" in r.stderr, r.stderr
    assert (out / "card.json").read_text() == card


@pytest.mark.slow
def test_resume_keeps_rows_after_a_corrupt_line_skips_a_corrupt_checkpoint_and_logs_step_0_once(
        tmp_path):
    out = tmp_path / "run"
    _quick_run(out, 4, checkpoint_every=2, keep=10)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    lines.insert(2, '{"step": 1, "meta_lo')  # a corrupt line in the middle
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (out / "checkpoints" / "ckpt_00000004.npz").write_bytes(b"PK\x03\x04garbage")
    logged = []
    _quick_run(out, 6, checkpoint_every=2, keep=10, resume=True, log=logged.append)
    assert any("skipping unreadable checkpoint" in line for line in logged)
    assert any("skipped unreadable lines [3]" in line for line in logged)
    assert any("resuming" in line and "meta-step 2" in line for line in logged)
    from hyperadam_optax.meta.run_dir import read_metrics

    rows = read_metrics(str(out / "metrics.jsonl"))
    assert [r["step"] for r in rows if "meta_loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if "validation_loss" in r] == [0, 2, 4, 6]
    # Resuming a run that has only its step-0 checkpoint does not log step 0 twice.
    out0 = tmp_path / "run0"
    _quick_run(out0, 2, checkpoint_every=2, keep=10)
    (out0 / "checkpoints" / "ckpt_00000002.npz").unlink()
    _quick_run(out0, 2, checkpoint_every=2, keep=10, resume=True)
    rows = read_metrics(str(out0 / "metrics.jsonl"))
    assert [r["step"] for r in rows if "validation_loss" in r] == [0, 2]


@pytest.mark.parametrize("args, message", [
    (["--meta-lr", "inf"], "positive finite"),
    (["--meta-lr", "1e30"], "meta_lr must be in (0, 1]"),
    (["--init", "adam", "--warm-start-step", "inf"], "positive finite"),
    (["--seed", str(2**32)], "seed in [0, 2**32)"),
])
def test_cli_refuses_values_that_would_make_nan_or_alias(tmp_path, capsys, args, message):
    stderr = _cli_error(capsys, *QUICK, "--meta-steps", "2", "--out-dir", str(tmp_path / "run"),
                        *args)
    assert message in stderr, stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_out_dir_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    stderr = _cli_error(capsys, *QUICK, "--meta-steps", "2", "--out-dir", str(blocker))
    assert "not a writable directory" in stderr, stderr


@pytest.mark.slow
def test_truncated_config_is_named(tmp_path):
    out = tmp_path / "run"
    assert _cli(*QUICK, "--meta-steps", "2", "--out-dir", str(out)).returncode == 0
    (out / "config.json").write_text('{"optimizer": "hyp')
    r = _cli(*QUICK, "--meta-steps", "4", "--out-dir", str(out), "--resume")
    assert r.returncode == 2 and f"{out / 'config.json'} is not readable JSON" in r.stderr


def test_options_of_other_estimators_are_refused_by_the_config():
    for kwargs, flag in [({"sigma": 0.05}, "--sigma"), ({"num_particles": 2}, "--num-particles"),
                         ({"estimator": "pes", "second_order": True}, "--second-order"),
                         ({"estimator": "pes", "num_tasks": 16}, "--num-tasks")]:
        with pytest.raises(ValueError, match=f"\\({flag}\\) = .* does not apply to estimator"):
            mt.MetaTrainConfig(**kwargs)
    assert mt.MetaTrainConfig(estimator="pes", num_particles=6).num_slots == 6
    assert mt.MetaTrainConfig(num_tasks=4).num_slots == 4


def test_slots_that_do_not_divide_over_the_devices_are_refused_before_any_file(tmp_path):
    """A real two-device process; the refusal comes before the run directory exists, so the
    corrected command can run there."""
    out = tmp_path / "R"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    r = _cli("meta-train", "--optimizer", "l2o_scale", "--task", "quadratic", "--estimator", "pes",
             "--num-particles", "3", "--meta-steps", "2", "--unroll", "5", "--trajectory", "10",
             "--no-progress", "--out-dir", str(out), env=env)
    assert r.returncode == 2, r.stderr
    assert "--num-particles (3) must be a multiple of the number of devices (2)" in r.stderr
    assert not out.exists()


def test_a_directory_whose_run_never_checkpointed_is_claimed_afresh(tmp_path):
    from hyperadam_optax.meta.run_dir import RunFiles, claim_run_dir

    files = RunFiles(str(tmp_path / "run"))
    os.makedirs(files.checkpoints)
    (tmp_path / "run" / "config.json").write_text(json.dumps({"num_particles": 3}))
    claim_run_dir(files, {"num_particles": 2}, resume=False)  # the failed start is not a run
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"num_particles": 2}
    (tmp_path / "run" / "checkpoints" / "ckpt_00000000.npz").write_bytes(b"")
    with pytest.raises(FileExistsError, match="already holds a meta-training run"):
        claim_run_dir(files, {"num_particles": 4}, resume=False)


def test_mostly_non_finite_meta_steps_stop_the_run():
    from hyperadam_optax.meta.run import SKIP_WINDOW, check_skipped

    ok, bad = {"step": 1, "finite": 1.0}, {"step": 1, "finite": 0.0}
    check_skipped([])
    check_skipped([bad, ok, ok])  # a skipped step now and then is the safeguard working
    check_skipped([bad] * SKIP_WINDOW + [ok] * SKIP_WINDOW)  # only the last window counts
    with pytest.raises(mt.NonFiniteMetaStepsError, match="2 of the last 2 meta-steps"):
        check_skipped([{"step": 0, "validation_loss": 1.0}, bad, bad])
    with pytest.raises(mt.NonFiniteMetaStepsError, match=f"51 of the last {SKIP_WINDOW}"):
        check_skipped([ok] * 49 + [bad] * 51)


@pytest.mark.slow  # a real run whose every meta-step is non-finite
def test_a_run_that_cannot_train_ends_non_zero_with_its_card_saying_why(tmp_path):
    start = tmp_path / "huge.npz"  # finite, but every optimizee step overflows
    theta = ha.init_meta_params(jax.random.key(0), 20, "adam")
    ha.save_meta_params(start, theta._replace(b_q=theta.b_q * 1e30))
    out = tmp_path / "run"
    r = _cli(*QUICK, "--meta-steps", "4", "--checkpoint-every", "2", "--init-from", str(start),
             "--out-dir", str(out))
    assert r.returncode == 1, r.stderr
    assert "meta-steps had a non-finite meta-gradient" in r.stderr
    card = json.loads((out / "card.json").read_text())
    assert card["status"].startswith("stopped: 2 of the last 2") and card["meta_steps"] == 2
    assert not (out / "meta_params.npz").exists()


@pytest.mark.slow  # several processes, each compiling a meta-step
def test_pes_run_and_init_from_its_weights_or_checkpoint(tmp_path):
    from hyperadam_optax.io import meta_params_from_checkpoint

    first = tmp_path / "pes"
    r = _cli(*QUICK_PES, "--num-particles", "2", "--sigma", "0.05",
             "--meta-steps", "3", "--out-dir", str(first))
    assert r.returncode == 0, r.stderr
    config = json.loads((first / "config.json").read_text())
    assert (config["estimator"], config["num_particles"], config["sigma"]) == ("pes", 2, 0.05)
    theta = ha.load_meta_params(first / "meta_params.npz")
    for source in (first / "meta_params.npz", first / "checkpoints" / "ckpt_00000003.npz"):
        out = tmp_path / source.stem
        r = _cli(*QUICK, "--meta-steps", "1", "--init-from", str(source), "--out-dir", str(out))
        assert r.returncode == 0, r.stderr
        start = meta_params_from_checkpoint(str(out / "checkpoints" / "ckpt_00000000.npz"))
        jax.tree.map(np.testing.assert_array_equal, start, theta)
        assert "init_from_sha256" in json.loads((out / "config.json").read_text())
    other = tmp_path / "rnnprop.npz"
    ha.save_meta_params(other, ha.init_rnnprop_meta_params(jax.random.key(0)))
    r = _cli(*QUICK, "--meta-steps", "1", "--init-from", str(other), "--out-dir",
             str(tmp_path / "bad"))
    assert r.returncode == 2 and "holds RNNpropParams, not the HyperAdamParams" in r.stderr


@pytest.mark.slow  # a run, then an evaluation of its weights (20 s)
def test_global_rms_run_records_its_normalization_and_its_weights_are_evaluated_with_it(tmp_path):
    """``--normalization global_rms`` joins the run's identity and the ``make_kwargs`` of its
    weight files; loading those bare warns, and the evaluation suite builds them with it."""
    import jax.flatten_util

    from hyperadam_optax.evaluation.suites import parse_optimizer

    out = tmp_path / "rms"
    _quick_run(out, 2, init="adam", normalization="global_rms")
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
        _quick_run(tmp_path / "l2", 1, init_from=str(out / "meta_params.npz"))
    assert not (tmp_path / "l2").exists()
    # The default spelled out is the default: no make_kwargs, no warning on loading.
    _quick_run(tmp_path / "l2", 1, init="adam", normalization="global_l2")
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
