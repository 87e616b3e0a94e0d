"""A meta-training run on disk: kill and resume, refused configurations, bad input, cards."""

import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

import hyperadam_optax as ha
from hyperadam_optax import meta as mt

CLI = [sys.executable, "-m", "hyperadam_optax.cli"]


QUICK = ["meta-train", "--task", "quadratic", "--num-tasks", "2", "--unroll", "5",
         "--trajectory", "10", "--meta-lr", "0.01", "--validation-tasks", "2", "--no-progress"]


def _cli(*args, **kw):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=600, **kw)


def _steps_logged(path):
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return max([json.loads(line).get("step", 0) for line in f if line.strip()] or [0])


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
    steps = "40"
    full = tmp_path / "full"
    r = _cli(*QUICK, "--meta-steps", steps, "--checkpoint-every", "3", "--out-dir", str(full))
    assert r.returncode == 0, r.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*CLI, *QUICK, "--meta-steps", steps, "--checkpoint-every", "3",
                             "--out-dir", str(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _steps_logged(killed / "metrics.jsonl") < 8 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "meta_params.npz").exists()  # it really stopped before the end
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
    assert (killed / "meta_loss.png").stat().st_size > 5000


def test_cli_refuses_other_config_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    assert _cli(*QUICK, "--meta-steps", "2", "--out-dir", str(out)).returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    r = _cli(*QUICK, "--meta-steps", "4", "--num-tasks", "4", "--out-dir", str(out), "--resume")
    assert r.returncode == 2 and "different configuration" in r.stderr and "num_tasks" in r.stderr
    r = _cli(*QUICK, "--meta-steps", "4", "--validation-metric", "final", "--out-dir", str(out),
             "--resume")
    assert r.returncode == 2 and "validation_metric" in r.stderr
    r = _cli(*QUICK, "--meta-steps", "4", "--out-dir", str(out))
    assert r.returncode == 2 and "--resume" in r.stderr
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert before == after


@pytest.mark.parametrize("args,message", [
    (["--task", "imagenet"], "unknown task"),
    (["--optimizer", "adamw"], "unknown learned optimizer"),
    (["--task", "mnist-mlp", "--data-dir", "/nonexistent/mnist"], "does not exist"),
    (["--init", "adam", "--warm-start-betas", "0.9"], "expected two decay rates"),
    (["--warm-start-betas", "0.8,0.9"], "apply to HyperAdam's Adam warm start only"),
    (["--init", "adam", "--warm-start-decay", "100"], "expected HORIZON,FLOOR"),
    (["--init", "adam", "--warm-start-decay", "100,0"], "warm_start_decay must be (horizon >= 1"),
    (["--warm-start-decay", "100,0.25"], "apply to HyperAdam's Adam warm start only"),
])
def test_cli_bad_input(tmp_path, args, message):
    r = _cli("meta-train", "--meta-steps", "1", "--out-dir", str(tmp_path / "o"), "--no-progress",
             *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_corrupt_data_dir(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"not an npz")
    r = _cli("meta-train", "--task", "mnist-mlp", "--meta-steps", "1", "--data-dir", str(tmp_path),
             "--out-dir", str(tmp_path / "o"), "--no-progress")
    assert r.returncode == 2 and "not a readable MNIST npz" in r.stderr, r.stderr


def test_decaying_warm_start_run_and_its_checkpoints(tmp_path):
    """A run from ``warm_start_decay`` records it in its identity; the meta-parameters read
    back from any checkpoint (how a checkpoint other than the best is shipped) are the ones
    the run saved at that step, and step 0 is the warm start itself."""
    from hyperadam_optax.io import meta_params_from_checkpoint as checkpoint_meta_params
    from hyperadam_optax.meta import meta_train

    config = mt.MetaTrainConfig(num_tasks=2, unroll=5, trajectory=10, meta_lr=0.01)
    meta_train(task="quadratic", init="adam", warm_start_step=2.0, warm_start_decay=(10, 0.5),
               config=config, meta_steps=2, checkpoint_every=1, keep=5, validation_tasks=2,
               out_dir=str(tmp_path), progress=False, log=lambda *a: None)
    assert json.loads((tmp_path / "config.json").read_text())["warm_start_decay"] == [10, 0.5]
    final = checkpoint_meta_params(str(tmp_path / "checkpoints" / "ckpt_00000002.npz"))
    chex.assert_trees_all_equal(final, ha.load_meta_params(str(tmp_path / "meta_params.npz")))
    start = checkpoint_meta_params(str(tmp_path / "checkpoints" / "ckpt_00000000.npz"))
    np.testing.assert_array_equal(start.b_h, ha.init_meta_params(
        jax.random.key(0), 20, "adam", warm_start_step=2.0, warm_start_decay=(10, 0.5)).b_h)
    assert not np.array_equal(start.b_h, final.b_h)
    with pytest.raises(ValueError, match="not a readable meta-training checkpoint"):
        checkpoint_meta_params(str(tmp_path / "config.json"))
