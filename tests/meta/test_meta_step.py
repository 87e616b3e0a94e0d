"""The meta-step: meta-gradients, learning, restarts, skipped steps, meta-losses, config."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hyperadam_optax as ha
from hyperadam_optax import meta as mt
from hyperadam_optax import tasks
from hyperadam_optax.io import load_pytree, save_pytree
from hyperadam_optax.meta import learned_optimizer
from hyperadam_optax.tasks import make_task
from tests.helpers.gradcheck import assert_grad_matches_finite_differences


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
    slot = jax.tree.map(lambda x: x[0], state.slots[0])

    def f(theta):
        return mt.truncated_unroll(opt, family, config, theta, slot)[0]

    assert_grad_matches_finite_differences(f, state.meta_params, seed=1, min_abs=1e-5)


@pytest.mark.slow
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


def test_first_and_second_order_meta_gradients_match_the_hand_derivation(x64):
    """SGD at rate η = exp(θ) on f(w) = a w²/2 from w_0, meta-loss the mean of the T
    pre-update losses: w_t = w_0 r^t with r = 1 - ηa. Exact (second order): ∂w_t/∂η =
    -t a w_0 r^(t-1). First order (the gradient a constant, the authors' truncated BPTT):
    ∂w_{t+1}/∂η = ∂w_t/∂η - g_t, so ∂w_t/∂η = -a w_0 Σ_{s<t} r^s. Then ∂M/∂θ = η mean_t a w_t
    ∂w_t/∂η; only the Hessian term a·∂w_t/∂η of ∂g_t/∂η differs between the two."""
    from hyperadam_optax.meta.truncation import fresh_slot

    a, w0, eta, steps = 1.5, 2.0, 0.1, 4
    family = tasks.TaskFamily("line", sample_task=lambda k: {},
                              init=lambda k, t: jnp.array([w0], jnp.float64),
                              sample_batch=lambda k, t: jnp.zeros(()),
                              loss=lambda p, b, t: 0.5 * a * jnp.sum(p ** 2))
    opt = mt.LearnedOptimizer("log-lr", lambda k: {"log_lr": jnp.log(jnp.float64(eta))},
                              lambda theta: optax.sgd(jnp.exp(theta["log_lr"])))
    theta = opt.init_meta_params(None)
    r, t = 1 - eta * a, np.arange(steps)
    w = w0 * r ** t
    dw = {True: -t * a * w0 * r ** np.maximum(t - 1, 0),
          False: np.array([-a * w0 * sum(r ** s for s in range(k)) for k in t])}
    for second in (False, True):
        config = mt.MetaTrainConfig(num_tasks=1, unroll=steps, trajectory=2 * steps,
                                    meta_loss="mean", second_order=second, remat=False)
        slot = fresh_slot(opt, family, theta, jax.random.PRNGKey(0), 0)
        got = jax.grad(lambda th, c=config: mt.truncated_unroll(opt, family, c, th, slot)[0])(
            theta)["log_lr"]
        np.testing.assert_allclose(float(got), eta * np.mean(a * w * dw[second]), rtol=1e-12)


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


def test_slots_restart_after_their_trajectory():
    opt = _tiny_hyperadam()
    family = tasks.random_quadratics(3)
    config = mt.MetaTrainConfig(num_tasks=4, unroll=5, trajectory=15)
    state = mt.init_meta_state(jax.random.PRNGKey(3), opt, family, config)
    offsets = np.asarray(state.slots[0].step)
    # Evenly spread: 4 slots over 3 truncations hold every offset, one of them twice.
    assert sorted(np.bincount(offsets // 5, minlength=3)) == [1, 1, 2]
    step = mt.make_meta_step(opt, family, config)
    tasks_before = np.asarray(state.slots[0].task["y"])
    state, metrics = step(state)
    after = np.asarray(state.slots[0].step)
    np.testing.assert_array_equal(after, np.where(offsets + 5 >= 15, 0, offsets + 5))
    changed = np.any(np.asarray(state.slots[0].task["y"]) != tasks_before, axis=1)
    np.testing.assert_array_equal(changed, after == 0)
    assert int(metrics["restarts"]) == int(np.sum(after == 0))


@pytest.mark.slow
def test_drawn_horizons_are_log_uniform_multiples_of_the_unroll():
    """With min_trajectory, a new task starts at step trajectory - H: it restarts after H steps,
    H a multiple of the unroll in [min_trajectory, trajectory], log-uniform."""
    from hyperadam_optax.meta.truncation import start_step

    config = mt.MetaTrainConfig(unroll=10, trajectory=2000, min_trajectory=100)
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    h = config.trajectory - np.asarray(jax.vmap(lambda k: start_step(config, k))(keys))
    assert h.min() >= 100 and h.max() <= 2000 and np.all(h % 10 == 0)
    # log-uniform: half of the horizons below the geometric midpoint sqrt(100 * 2000) = 447
    assert abs(np.mean(h < 447) - 0.5) < 0.04
    assert start_step(mt.MetaTrainConfig(), keys[0]) == 0  # off: every task starts at 0
    with pytest.raises(ValueError, match="min_trajectory"):
        mt.MetaTrainConfig(unroll=10, trajectory=100, min_trajectory=5)

    # In a meta-step: restarted slots start at trajectory - H and run H steps.
    opt = _tiny_hyperadam()
    family = tasks.random_quadratics(3)
    config = mt.MetaTrainConfig(num_tasks=8, unroll=5, trajectory=40, min_trajectory=5)
    state = mt.init_meta_state(jax.random.PRNGKey(3), opt, family, config)
    step = mt.make_meta_step(opt, family, config)
    starts = set()
    for _ in range(12):
        before = np.asarray(state.slots[0].step)
        state, _ = step(state)
        after = np.asarray(state.slots[0].step)
        restarted = before + 5 >= 40
        starts |= set(after[restarted].tolist())
        np.testing.assert_array_equal(after[~restarted], before[~restarted] + 5)
    assert len(starts) > 1 and all(s % 5 == 0 and 0 <= s <= 35 for s in starts)


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


def test_meta_state_checkpoint_roundtrip(tmp_path):
    opt = learned_optimizer("hyperadam")
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
    with pytest.raises(ValueError, match="unknown learned optimizer"):
        learned_optimizer("adamw")
    with pytest.raises(ValueError, match="unknown task"):
        make_task("imagenet")


@pytest.mark.parametrize("kind", mt.META_LOSSES)
def test_meta_loss_kinds_are_computed_from_the_truncations_losses(kind):
    """Each meta-loss against its formula on the pre-update losses the truncation returns
    (``final`` is checked by hand below); the meta-step applies a finite gradient."""
    opt = _tiny_hyperadam()
    family = tasks.random_quadratics(3)
    config = mt.MetaTrainConfig(num_tasks=2, unroll=4, trajectory=8, meta_loss=kind)
    state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
    step = mt.make_meta_step(opt, family, config)
    for _ in range(3):
        slot = jax.tree.map(lambda x: x[0], state.slots[0])
        meta_loss, (losses, after) = mt.truncated_unroll(opt, family, config,
                                                         state.meta_params, slot)
        losses = np.asarray(losses, np.float64)
        restarted = int(slot.step) == 0 or np.isnan(float(slot.first_loss))
        first = losses[0] if restarted else float(slot.first_loss)
        log_ratios = np.log(losses / (first + 1e-6) + 1e-6)
        late = 2 * (int(slot.step) + np.arange(4)) >= 8  # the second half of 8 steps
        expected = {"mean": losses.mean(), "last": losses[-1], "sum": losses.sum(),
                    "log_ratio": log_ratios.mean(), "log_ratio_late": np.mean(late * log_ratios)}
        if kind in expected:
            np.testing.assert_allclose(float(meta_loss), expected[kind], rtol=1e-5, atol=1e-6)
        state, metrics = step(state)
        assert bool(metrics["finite"]) and np.isfinite(float(metrics["meta_loss"]))


def test_log_final_meta_loss_counts_only_the_truncation_that_ends_the_trajectory():
    """``log_final``: 0 in the first truncation of an 8-step trajectory, then the log of the
    ``final`` meta-loss of the second (the trajectory's last) over its first loss."""
    opt = mt.LearnedOptimizer(  # the Adam warm start: its loss falls, so the log is negative
        "hyperadam", lambda k: ha.init_meta_params(k, 3, "adam"),
        lambda theta: ha.hyperadam(0.05, theta))
    family = tasks.random_quadratics(4, noise=0.2)
    configs = {kind: mt.MetaTrainConfig(num_tasks=1, unroll=4, trajectory=8, meta_loss=kind)
               for kind in ("log_final", "final")}
    state = mt.init_meta_state(jax.random.PRNGKey(6), opt, family, configs["final"])
    slot = jax.tree.map(lambda a: a[0], state.slots[0])
    assert int(slot.step) == 0
    first_truncation, (losses, slot) = mt.truncated_unroll(
        opt, family, configs["log_final"], state.meta_params, slot)
    assert float(first_truncation) == 0.0
    ended, _ = mt.truncated_unroll(opt, family, configs["log_final"], state.meta_params, slot)
    final, _ = mt.truncated_unroll(opt, family, configs["final"], state.meta_params, slot)
    np.testing.assert_allclose(float(ended),
                               np.log(float(final) / (float(losses[0]) + 1e-6) + 1e-6),
                               rtol=1e-5)
    assert float(ended) < 0  # the quadratic's loss fell


def test_final_meta_loss_is_the_truncations_final_parameters_on_its_minibatches():
    """``meta_loss="final"`` against the same truncation stepped by hand."""
    opt = _tiny_hyperadam()
    family = tasks.random_quadratics(4, noise=0.2)
    config = mt.MetaTrainConfig(num_tasks=1, unroll=6, trajectory=12, meta_loss="final")
    state = mt.init_meta_state(jax.random.PRNGKey(5), opt, family, config)
    slot = jax.tree.map(lambda a: a[0], state.slots[0])
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
