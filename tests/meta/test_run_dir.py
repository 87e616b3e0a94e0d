"""The run directory's crash safety: the lock, a killed run's files, stale best checkpoints,
corrupt lines and checkpoints, refusals before any file, runs that stop themselves."""

import json
import os
import shutil
import signal
import subprocess
import time

import jax
import pytest

import hyperadam_optax as ha
from hyperadam_optax import meta as mt
from tests.meta.run_helpers import CLI, LONG, QUICK, cli, cli_error, quick_run, steps_logged


def _start(out, steps="1000000"):  # killed long before it ends
    return subprocess.Popen([*CLI, *LONG, "--meta-steps", steps, "--checkpoint-every", "2",
                             "--out-dir", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_for_step(path, step):
    deadline = time.time() + 300
    while steps_logged(path) < step and time.time() < deadline:
        time.sleep(0.05)
    assert steps_logged(path) >= step


@pytest.mark.slow  # several processes, each compiling a meta-step
def test_a_second_run_into_a_used_directory_is_refused_and_a_killed_one_does_not_block(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    try:
        _wait_for_step(out / "metrics.jsonl", 3)
        r = cli(*LONG, "--meta-steps", "1000000", "--out-dir", str(out), "--resume")
        assert r.returncode == 2 and "in use by another meta-train process" in r.stderr, r.stderr
        assert f"pid {proc.pid}" in r.stderr
        # The card names the command from the start, not only at the end.
        card = json.loads((out / "card.json").read_text())
        assert card["status"] == "running" and "--meta-steps 1000000" in card["command"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = steps_logged(out / "metrics.jsonl")
    (out / "checkpoints" / ".tmp-orphan").write_bytes(b"x" * 1000)  # as a kill mid-write leaves
    r = cli(*LONG, "--meta-steps", str(done + 2), "--checkpoint-every", "2",
             "--out-dir", str(out), "--resume")
    assert r.returncode == 0, r.stderr  # the killed run's lock died with it
    assert not (out / "checkpoints" / ".tmp-orphan").exists()
    card = json.loads((out / "card.json").read_text())
    assert card["status"] == "finished" and len(card["commands"]) == 2


@pytest.mark.slow
def test_resume_repairs_a_best_checkpoint_left_stale_by_a_kill(tmp_path):
    from hyperadam_optax.io import read_leaves
    from hyperadam_optax.meta.run_dir import RunFiles, read_metrics

    out = tmp_path / "run"
    quick_run(out, 6, checkpoint_every=2, keep=10)
    files = RunFiles(str(out))
    vals = {r["step"]: r["validation_loss"] for r in read_metrics(files.metrics)
            if "validation_loss" in r}
    best = min(vals, key=vals.get)
    stale = next(s for s in vals if s != best)
    # What a kill between writing ckpt_<best> and copying it to best.npz leaves behind.
    shutil.copyfile(files.checkpoint(stale), out / "checkpoints" / "best.npz")
    logged = []
    card = quick_run(out, 8, checkpoint_every=2, keep=10, resume=True, log=logged.append)
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
    assert cli(*QUICK, "--meta-steps", "3", "--out-dir", str(out)).returncode == 0
    args = [a if a != "2" or i != QUICK.index("--validation-tasks") + 1 else "4"
            for i, a in enumerate(QUICK)]
    r = cli(*args, "--meta-steps", "6", "--out-dir", str(out), "--resume")
    assert r.returncode == 2 and "validation_tasks" in r.stderr, r.stderr
    card = (out / "card.json").read_text()
    r = cli(*QUICK, "--meta-steps", "1", "--out-dir", str(out), "--resume")
    assert r.returncode == 2 and "already at meta-step 3" in r.stderr, r.stderr
    assert (out / "card.json").read_text() == card


@pytest.mark.slow
def test_resume_keeps_rows_after_a_corrupt_line_skips_a_corrupt_checkpoint_and_logs_step_0_once(
        tmp_path):
    out = tmp_path / "run"
    quick_run(out, 4, checkpoint_every=2, keep=10)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    lines.insert(2, '{"step": 1, "meta_lo')  # a corrupt line in the middle
    (out / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (out / "checkpoints" / "ckpt_00000004.npz").write_bytes(b"PK\x03\x04garbage")
    logged = []
    quick_run(out, 6, checkpoint_every=2, keep=10, resume=True, log=logged.append)
    assert any("skipping unreadable checkpoint" in line for line in logged)
    assert any("skipped unreadable lines [3]" in line for line in logged)
    assert any("resuming" in line and "meta-step 2" in line for line in logged)
    from hyperadam_optax.meta.run_dir import read_metrics

    rows = read_metrics(str(out / "metrics.jsonl"))
    assert [r["step"] for r in rows if "meta_loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if "validation_loss" in r] == [0, 2, 4, 6]
    # Resuming a run that has only its step-0 checkpoint does not log step 0 twice.
    out0 = tmp_path / "run0"
    quick_run(out0, 2, checkpoint_every=2, keep=10)
    (out0 / "checkpoints" / "ckpt_00000002.npz").unlink()
    quick_run(out0, 2, checkpoint_every=2, keep=10, resume=True)
    rows = read_metrics(str(out0 / "metrics.jsonl"))
    assert [r["step"] for r in rows if "validation_loss" in r] == [0, 2]


@pytest.mark.parametrize("args, message", [
    (["--meta-lr", "inf"], "positive finite"),
    (["--meta-lr", "1e30"], "meta_lr must be in (0, 1]"),
    (["--init", "adam", "--warm-start-step", "inf"], "positive finite"),
    (["--seed", str(2**32)], "seed in [0, 2**32)"),
])
def test_cli_refuses_values_that_would_make_nan_or_alias(tmp_path, capsys, args, message):
    stderr = cli_error(capsys, *QUICK, "--meta-steps", "2", "--out-dir", str(tmp_path / "run"),
                        *args)
    assert message in stderr, stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_out_dir_that_is_a_file_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    stderr = cli_error(capsys, *QUICK, "--meta-steps", "2", "--out-dir", str(blocker))
    assert "not a writable directory" in stderr, stderr


@pytest.mark.slow
def test_truncated_config_is_named(tmp_path):
    out = tmp_path / "run"
    assert cli(*QUICK, "--meta-steps", "2", "--out-dir", str(out)).returncode == 0
    (out / "config.json").write_text('{"optimizer": "hyp')
    r = cli(*QUICK, "--meta-steps", "4", "--out-dir", str(out), "--resume")
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
    r = cli("meta-train", "--optimizer", "l2o_scale", "--task", "quadratic", "--estimator", "pes",
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
    r = cli(*QUICK, "--meta-steps", "4", "--checkpoint-every", "2", "--init-from", str(start),
             "--out-dir", str(out))
    assert r.returncode == 1, r.stderr
    assert "meta-steps had a non-finite meta-gradient" in r.stderr
    card = json.loads((out / "card.json").read_text())
    assert card["status"].startswith("stopped: 2 of the last 2") and card["meta_steps"] == 2
    assert not (out / "meta_params.npz").exists()


