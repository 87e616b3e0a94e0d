"""Meta-training: gradients, learning, tasks, checkpoints, resume, bad input."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from gradcheck import assert_grad_matches_finite_differences

import hyperadam_optax as ha
from hyperadam_optax import meta_train as mt
from hyperadam_optax import tasks
from hyperadam_optax._checkpoint import load_pytree, save_pytree
from hyperadam_optax.data import load_mnist_dir
from hyperadam_optax.registry import hyperadam_learned, make_optimizer, make_task


def _tiny_hyperadam(j=3, dtype=jnp.float32):
    return mt.LearnedOptimizer(
        "hyperadam", lambda k: ha.init_meta_params(k, j, "paper", dtype=dtype),
        lambda theta: ha.hyperadam(0.05, theta))


def test_meta_gradient_matches_finite_differences(x64):
    opt = _tiny_hyperadam(dtype=jnp.float64)
    family = tasks.random_quadratics(3, cond=4.0)
    config = mt.MetaTrainConfig(num_tasks=2, unroll=4, trajectory=8, second_order=True)
    state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
    state = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
    slot = jax.tree.map(lambda x: x[0], state.slots)

    def f(theta):
        return mt.truncated_unroll(opt, family, config, theta, slot)[0]

    assert_grad_matches_finite_differences(f, state.meta_params, seed=1, min_abs=1e-5)


def test_task_chunks_give_the_same_meta_step(x64):
    """Differentiating the slots one at a time (CPU default), in chunks of 2, or all in one
    vmap is the same meta-step: same meta-loss, meta-gradient and slots after it."""
    opt = _tiny_hyperadam(dtype=jnp.float64)
    family = tasks.random_quadratics(3, cond=4.0)
    out = {}
    for chunk in (1, 2, 4):
        config = mt.MetaTrainConfig(num_tasks=4, unroll=3, trajectory=6, task_chunk=chunk)
        state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
        step = mt.make_meta_step(opt, family, config)
        for _ in range(3):  # crosses a trajectory end, so some slots restart
            state, metrics = step(state)
        out[chunk] = (state, metrics)
    for chunk in (1, 2):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12),
                     out[chunk], out[4])
    assert int(out[1][1]["restarts"]) > 0


def test_first_order_drops_only_the_hessian_term(x64):
    """With a quadratic the optimizee Hessian is constant, so the two modes must differ."""
    opt = _tiny_hyperadam(dtype=jnp.float64)
    family = tasks.random_quadratics(3)
    grads = {}
    for second in (False, True):
        config = mt.MetaTrainConfig(num_tasks=1, unroll=4, trajectory=8, second_order=second)
        state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
        slot = jax.tree.map(lambda x: x[0], state.slots)
        grads[second] = jax.grad(lambda t, c=config, s=slot: mt.truncated_unroll(
            opt, family, c, t, s)[0])(state.meta_params)
    diff = optax.tree.norm(jax.tree.map(jnp.subtract, grads[True], grads[False]))
    assert diff > 1e-6 * optax.tree.norm(grads[True])
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grads[False]))


def test_meta_training_lowers_held_out_meta_loss():
    opt = _tiny_hyperadam(j=4)
    family = tasks.random_quadratics(6)
    config = mt.MetaTrainConfig(num_tasks=8, unroll=10, trajectory=40, meta_lr=1e-2)
    state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
    held_out = mt.make_evaluator(opt, family, num_tasks=16, steps=40, seed=999)
    before = float(held_out(state.meta_params))
    step = mt.make_meta_step(opt, family, config)
    for _ in range(60):
        state, metrics = step(state)
    after = float(held_out(state.meta_params))
    assert int(state.skipped) == 0
    assert after < 0.7 * before, (before, after)


def test_final_metric_validation_is_the_evaluation_protocol():
    """``metric="final"`` scores exactly what the tables report (run_protocol's final loss on
    the same seeds); ``"mean"`` is the mean minibatch loss of the same runs."""
    from hyperadam_optax.evaluation import run_protocol

    opt = _tiny_hyperadam(j=3)
    family = tasks.random_quadratics(5, noise=0.1)
    theta = opt.init_meta_params(jax.random.PRNGKey(1))
    result = run_protocol(lambda _: opt.make(theta), family, steps=15, runs=6, seed=3)
    final = mt.make_evaluator(opt, family, num_tasks=6, steps=15, seed=3, metric="final")
    mean = mt.make_evaluator(opt, family, num_tasks=6, steps=15, seed=3)
    np.testing.assert_allclose(float(final(theta)), result.final_loss.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(mean(theta)), result.curve.mean(), rtol=1e-6)
    assert abs(float(final(theta)) - float(mean(theta))) > 1e-3
    with pytest.raises(ValueError, match="metric must be one of"):
        mt.make_evaluator(opt, family, num_tasks=2, steps=5, seed=0, metric="last")


def test_slots_restart_after_their_trajectory():
    opt = _tiny_hyperadam()
    family = tasks.random_quadratics(3)
    config = mt.MetaTrainConfig(num_tasks=4, unroll=5, trajectory=15)
    state = mt.init_meta_state(jax.random.PRNGKey(3), opt, family, config)
    offsets = np.asarray(state.slots.step)
    # Evenly spread: 4 slots over 3 truncations hold every offset, one of them twice.
    assert sorted(np.bincount(offsets // 5, minlength=3)) == [1, 1, 2]
    step = mt.make_meta_step(opt, family, config)
    tasks_before = np.asarray(state.slots.task["y"])
    state, metrics = step(state)
    after = np.asarray(state.slots.step)
    np.testing.assert_array_equal(after, np.where(offsets + 5 >= 15, 0, offsets + 5))
    changed = np.any(np.asarray(state.slots.task["y"]) != tasks_before, axis=1)
    np.testing.assert_array_equal(changed, after == 0)
    assert int(metrics["restarts"]) == int(np.sum(after == 0))


def test_non_finite_meta_gradient_is_skipped():
    opt = _tiny_hyperadam()
    family = tasks.random_quadratics(3)
    config = mt.MetaTrainConfig(num_tasks=2, unroll=3, trajectory=6)
    state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
    bad = state._replace(meta_params=state.meta_params._replace(
        b_q=state.meta_params.b_q.at[0].set(jnp.nan)))
    before = jax.tree.map(np.asarray, bad.meta_params)
    new, metrics = mt.make_meta_step(opt, family, config)(bad)
    assert not bool(metrics["finite"]) and int(new.skipped) == 1
    jax.tree.map(np.testing.assert_array_equal, new.meta_params, before)


def test_random_scaling_task_starts_at_the_unscaled_point():
    x = jax.random.uniform(jax.random.PRNGKey(0), (64, 784))
    y = jnp.arange(64) % 10
    base = tasks.mnist_mlp(x, y)
    family = tasks.random_scaling_with_convex(base, r=3.0)
    task = family.sample_task(jax.random.PRNGKey(1))
    c = jax.tree.leaves(task["scale"])
    assert all(bool(jnp.all((v >= np.exp(-3) - 1e-6) & (v <= np.exp(3) + 1e-6))) for v in c)
    params = family.init(jax.random.PRNGKey(2), task)
    w0 = base.init(jax.random.PRNGKey(2), {})
    batch = family.sample_batch(jax.random.PRNGKey(3), task)
    a = task["convex_target"]
    expected = base.loss(w0, batch, {}) + jnp.mean(jnp.clip(a ** 2, 0, 10))
    np.testing.assert_allclose(family.loss(params, batch, task), expected, rtol=1e-5)


def test_meta_state_checkpoint_roundtrip(tmp_path):
    opt = hyperadam_learned()
    family = tasks.random_quadratics(4)
    config = mt.MetaTrainConfig(num_tasks=2, unroll=2, trajectory=4)
    state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
    state, _ = mt.make_meta_step(opt, family, config)(state)
    save_pytree(str(tmp_path / "s.npz"), state)
    template = mt.init_meta_state(jax.random.PRNGKey(5), opt, family, config)
    restored = load_pytree(str(tmp_path / "s.npz"), template)
    jax.tree.map(np.testing.assert_array_equal, restored, state)
    other = mt.init_meta_state(jax.random.PRNGKey(0), opt, family,
                               mt.MetaTrainConfig(num_tasks=3, unroll=2, trajectory=4))
    with pytest.raises(ValueError, match="shape"):
        load_pytree(str(tmp_path / "s.npz"), other)


def test_cosine_decay_of_the_meta_learning_rate():
    config = mt.MetaTrainConfig(meta_lr=1e-3, cosine_decay_steps=10, clip_norm=None)
    outer = mt.outer_optimizer(config)
    params = {"w": jnp.zeros(())}
    state = outer.init(params)
    steps = []
    for _ in range(12):  # Adam's first steps are ±lr for a constant gradient
        updates, state = outer.update({"w": jnp.ones(())}, state, params)
        steps.append(-float(updates["w"]))
    np.testing.assert_allclose(steps[0], 1e-3, rtol=1e-4)
    np.testing.assert_allclose(steps[5], 1e-4 + 0.9e-3 * 0.5 * (1 + np.cos(np.pi * 0.5)),
                               rtol=1e-4)
    np.testing.assert_allclose(steps[10:], 1e-4, rtol=1e-4)


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of unroll"):
        mt.MetaTrainConfig(unroll=30, trajectory=100)
    with pytest.raises(ValueError, match="meta_loss"):
        mt.MetaTrainConfig(meta_loss="median")
    with pytest.raises(ValueError, match="task_chunk must be None or a positive divisor"):
        mt.MetaTrainConfig(num_tasks=8, task_chunk=3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("adamw")
    with pytest.raises(ValueError, match="unknown task"):
        make_task("imagenet")


@pytest.mark.parametrize("kind", mt.META_LOSSES)
def test_meta_loss_kinds_are_finite(kind):
    opt = _tiny_hyperadam()
    family = tasks.random_quadratics(3)
    config = mt.MetaTrainConfig(num_tasks=2, unroll=4, trajectory=8, meta_loss=kind)
    state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
    step = mt.make_meta_step(opt, family, config)
    for _ in range(3):
        state, metrics = step(state)
        assert bool(metrics["finite"]) and np.isfinite(float(metrics["meta_loss"]))


def test_final_meta_loss_is_the_truncations_final_parameters_on_its_minibatches():
    """``meta_loss="final"`` against the same truncation stepped by hand."""
    opt = _tiny_hyperadam()
    family = tasks.random_quadratics(4, noise=0.2)
    config = mt.MetaTrainConfig(num_tasks=1, unroll=6, trajectory=12, meta_loss="final")
    state = mt.init_meta_state(jax.random.PRNGKey(5), opt, family, config)
    slot = jax.tree.map(lambda a: a[0], state.slots)
    meta_loss, (losses, _) = mt.truncated_unroll(opt, family, config, state.meta_params, slot)

    tx = opt.make(state.meta_params)
    params, opt_state = slot.params, slot.opt_state
    keys = jax.random.split(slot.key, config.unroll + 2)[: config.unroll]
    batches = [family.sample_batch(k, slot.task) for k in keys]
    for batch in batches:
        grads = jax.grad(family.loss)(params, batch, slot.task)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    expected = np.mean([float(family.loss(params, b, slot.task)) for b in batches])
    np.testing.assert_allclose(float(meta_loss), expected, rtol=1e-5)
    assert abs(float(meta_loss) - float(losses[-1])) > 1e-4  # not the "last" loss


# Data directory ---------------------------------------------------------------------------

def _write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gz", [False, True])
def test_full_mnist_from_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (30, 28, 28)), rng.integers(0, 10, 30)
    suffix = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", labels, gz)
    d = load_mnist_dir(str(tmp_path))
    np.testing.assert_allclose(d.x, images.reshape(30, 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(d.y, labels)


def test_full_mnist_from_npz(tmp_path):
    x = np.zeros((5, 28, 28), np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.arange(5), x_test=x, y_test=np.arange(5))
    assert load_mnist_dir(str(tmp_path), "test").x.shape == (5, 784)


def test_bad_data_dirs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist_dir(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="neither mnist.npz"):
        load_mnist_dir(str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02")
    with pytest.raises(ValueError, match="header says"):
        load_mnist_dir(str(tmp_path))


# CLI: runs, resume after a kill, refusals ---------------------------------------------------

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
    (["--optimizer", "adamw"], "unknown optimizer"),
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


def test_activation_mixture_is_its_members():
    """``mnist-mlp-mix`` draws one of five unreported activations per task; its loss is that
    member MLP's loss, and a vmapped batch of tasks mixes them."""
    from hyperadam_optax.tasks import VALIDATION_ACTIVATIONS, mnist_mlp, mnist_mlp_mixture

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 784), np.float32), rng.integers(0, 10, 64)
    family = mnist_mlp_mixture(x, y)
    key = jax.random.PRNGKey(0)
    params, batch = family.init(key, {}), family.sample_batch(key, {})
    for i, name in enumerate(VALIDATION_ACTIVATIONS):
        member = mnist_mlp(x, y, activation=name)
        assert float(family.loss(params, batch, {"activation": jnp.int32(i)})) == pytest.approx(
            float(member.loss(params, batch, {})), rel=1e-6)
    drawn = jax.vmap(family.sample_task)(jax.random.split(key, 200))["activation"]
    assert set(np.asarray(drawn).tolist()) == set(range(len(VALIDATION_ACTIVATIONS)))
    # Of Table 1's activations only sigmoid is in the mixture (its runs use other seeds).
    from hyperadam_optax.evaluation import suite_tasks
    reported = {name.removeprefix("mlp-") for name in suite_tasks("table1", (x, y))}
    assert reported & set(VALIDATION_ACTIVATIONS) == {"sigmoid"}


def test_decaying_warm_start_run_and_its_checkpoints(tmp_path):
    """A run from ``warm_start_decay`` records it in its identity; the meta-parameters read
    back from any checkpoint (how a checkpoint other than the best is shipped) are the ones
    the run saved at that step, and step 0 is the warm start itself."""
    from hyperadam_optax.meta_train_run import checkpoint_meta_params, meta_train

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
