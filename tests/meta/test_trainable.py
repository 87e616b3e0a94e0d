"""MetaTrainConfig.trainable: only the named fields of the meta-parameters train."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hyperadam_optax as ha
import hyperadam_optax.meta as mt
from hyperadam_optax import tasks
from hyperadam_optax.meta.estimators.perturb import antithetic_noise, weighted_mean
from hyperadam_optax.meta.trainable import field_names, field_scales_tree, trainable_mask


def _tiny_hyperadam(j=3):
    return mt.LearnedOptimizer("hyperadam", lambda k: ha.init_meta_params(k, j, "paper"),
                               lambda theta: ha.hyperadam(0.05, theta))


@pytest.mark.parametrize("estimator", ["pes", "tbptt"])
def test_only_the_trainable_fields_move(estimator):
    opt = _tiny_hyperadam()
    family = tasks.random_quadratics(3)
    slots = {"num_particles": 2} if estimator == "pes" else {"num_tasks": 2}
    config = mt.MetaTrainConfig(unroll=4, trajectory=8, meta_lr=1e-2, estimator=estimator,
                                trainable=("theta_q", "b_q"), **slots)
    state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
    start = jax.tree.map(np.array, state.meta_params)  # the meta-step donates the state
    step = mt.make_meta_step(opt, family, config)
    for _ in range(3):
        state, metrics = step(state)
        assert bool(metrics["finite"])
    for name in ha.HyperAdamParams._fields:
        moved = not np.array_equal(getattr(start, name), getattr(state.meta_params, name))
        assert moved == (name in ("theta_q", "b_q")), name


def test_only_the_trainable_rows_move():
    """Exact BPTT through a whole trajectory; ES/PES: the noise test below."""
    opt = _tiny_hyperadam()
    family = tasks.random_quadratics(3)
    config = mt.MetaTrainConfig(num_tasks=2, unroll=8, trajectory=8, meta_lr=1e-2,
                                estimator="full", trainable=("theta_q[1:]", "theta_u[-2:]"))
    state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
    start = jax.tree.map(np.array, state.meta_params)
    step = mt.make_meta_step(opt, family, config)
    for _ in range(3):
        state, metrics = step(state)
        assert bool(metrics["finite"])
    end = jax.tree.map(np.array, state.meta_params)
    for name in ha.HyperAdamParams._fields:
        if name not in ("theta_q", "theta_u"):
            np.testing.assert_array_equal(getattr(start, name), getattr(end, name))
    np.testing.assert_array_equal(start.theta_q[0], end.theta_q[0])
    np.testing.assert_array_equal(start.theta_u[:-2], end.theta_u[:-2])
    assert np.all(start.theta_q[1:] != end.theta_q[1:])
    assert np.all(start.theta_u[-2:] != end.theta_u[-2:])


def test_es_noise_is_zero_on_frozen_fields_and_unchanged_on_the_others():
    theta = ha.init_meta_params(jax.random.key(0), 3, "paper")
    every = antithetic_noise(jax.random.key(1), theta, 4, 0.1)
    some = antithetic_noise(jax.random.key(1), theta, 4, 0.1, ("theta_h", "b_h[2:5]"))
    for name in ha.HyperAdamParams._fields:
        a, b = getattr(every, name), getattr(some, name)
        if name == "theta_h":
            np.testing.assert_array_equal(a, b)
        elif name == "b_h":  # (pairs, 12): rows 2-4 of the field, the second axis here
            np.testing.assert_array_equal(a[:, 2:5], b[:, 2:5])
            assert not jnp.any(b[:, :2]) and not jnp.any(b[:, 5:])
        else:
            assert a.shape == b.shape and not jnp.any(b)


def test_unknown_or_empty_trainable_fields_are_refused():
    theta = ha.init_meta_params(jax.random.key(0), 3, "paper")
    assert field_names(theta) == list(ha.HyperAdamParams._fields)
    with pytest.raises(ValueError, match=r"\['theta_z'\] are not fields.*theta_p, b_p"):
        trainable_mask(theta, ("theta_q", "theta_z"))
    for bad in [(), ["theta_q"], ("theta_q", 1)]:
        with pytest.raises(ValueError, match="trainable must be None or a non-empty tuple"):
            mt.MetaTrainConfig(trainable=bad)
    for bad in ["theta_q[1]", "theta_q[1:2:1]", "theta_q[", "theta_q[]", "theta_q[:,]",
                "theta q"]:
        with pytest.raises(ValueError, match=r"is not FIELD or FIELD\[START:STOP, \.\.\.\]"):
            mt.MetaTrainConfig(trainable=(bad,))
    for bad in ["theta_q[3:]", "theta_q[:, 1:1]"]:
        with pytest.raises(ValueError, match=r"selects nothing of '.*' \(shape"):
            trainable_mask(theta, (bad,))
    with pytest.raises(ValueError, match=r"2 slices for the 1 axes of 'b_q' \(shape \(3,\)\)"):
        trainable_mask(theta, ("b_q[:, :]",))


def test_blocks_of_one_field_add_up():
    theta = ha.init_meta_params(jax.random.key(0), 3, "paper")
    mask = trainable_mask(theta, ("theta_h[:, 1:3]", "theta_h[:, 4:6]", "theta_h[5:]", "b_h[-1:]"))
    expected = np.zeros((6, 12), bool)
    expected[:, [1, 2, 4, 5]] = True
    expected[5] = True
    np.testing.assert_array_equal(mask.theta_h, expected)
    np.testing.assert_array_equal(mask.b_h, np.arange(12) == 11)
    assert mask.theta_q is False


@pytest.mark.parametrize("chunk", [pytest.param(1, marks=pytest.mark.slow), 2,
                                   pytest.param(4, marks=pytest.mark.slow)])
def test_normalized_task_gradients_are_the_mean_of_unit_votes(chunk):
    """Against the raw gradient of each slot alone, normalised here in numpy over the
    trainable block (frozen entries neither count in the norm nor move)."""
    from hyperadam_optax.meta.estimators import ESTIMATORS

    opt = _tiny_hyperadam()
    family = tasks.random_quadratics(3)
    common = dict(num_tasks=4, unroll=8, trajectory=8, estimator="full",
                  trainable=("theta_q[1:]", "b_q"), task_chunk=chunk)
    raw_config = mt.MetaTrainConfig(**common)
    config = mt.MetaTrainConfig(**common, normalize_task_gradients=True)
    state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
    theta, slots, key = state.meta_params, state.slots[0], jax.random.key(1)
    def gradient(cfg):  # compiled once per config
        return jax.jit(functools.partial(ESTIMATORS["full"].gradient, opt, family, cfg))

    one = gradient(mt.MetaTrainConfig(**{**common, "num_tasks": 1, "task_chunk": 1}))
    votes = []
    for i in range(4):
        slot = jax.tree.map(lambda x: x[i:i + 1], slots)
        _, g, _, _ = one(theta, slot, key)
        block = np.concatenate([np.ravel(g.theta_q[1:]), np.ravel(g.b_q)])
        assert np.linalg.norm(block) > 0 and np.any(np.asarray(g.theta_h))  # frozen: nonzero
        norm = np.linalg.norm(block)
        votes.append((np.asarray(g.theta_q[1:]) / norm, np.asarray(g.b_q) / norm))
    loss, g, _, _ = gradient(config)(theta, slots, key)
    raw_loss, raw, _, _ = gradient(raw_config)(theta, slots, key)
    np.testing.assert_allclose(loss, raw_loss, rtol=1e-6)
    np.testing.assert_allclose(g.theta_q[1:], np.mean([v[0] for v in votes], 0), rtol=1e-4,
                               atol=1e-7)
    np.testing.assert_allclose(g.b_q, np.mean([v[1] for v in votes], 0), rtol=1e-4, atol=1e-7)
    assert not np.any(np.asarray(g.theta_q[0])) and not np.any(np.asarray(g.theta_h))
    assert not np.allclose(g.b_q, raw.b_q)


def test_normalized_task_gradients_need_per_task_gradients():
    with pytest.raises(ValueError, match="does not apply to estimator 'pes'; only tbptt and full"):
        mt.MetaTrainConfig(estimator="pes", normalize_task_gradients=True)
    with pytest.raises(ValueError, match="must be a bool, got 1"):
        mt.MetaTrainConfig(normalize_task_gradients=1)


def test_field_scales_tree_gives_each_entry_its_factor():
    theta = ha.init_meta_params(jax.random.PRNGKey(0), 3, "paper")
    scales = field_scales_tree(theta, ("theta_p=0.5", "theta_u=2", "theta_u[1:]=0.1"))
    assert scales.theta_p == 0.5
    np.testing.assert_allclose(scales.theta_u[0], 2.0)
    np.testing.assert_allclose(scales.theta_u[1:], 0.2)  # entries on the same rows multiply
    assert np.shape(scales.theta_u) == theta.theta_u.shape
    assert all(getattr(scales, n) == 1.0 for n in ha.HyperAdamParams._fields
               if n not in ("theta_p", "theta_u"))


@pytest.mark.parametrize("entry", ["theta_p", "theta_p=0", "theta_p=-1", "theta_p=nan",
                                   "theta_p=inf", "=2", "theta_p=two", "theta_p[1]=2"])
def test_bad_field_scales_are_refused_by_the_config(entry):
    with pytest.raises(ValueError, match="FIELD=FACTOR|FIELD\\[START:STOP"):
        mt.MetaTrainConfig(field_scales=(entry,))


def test_field_scales_of_unknown_fields_are_refused_naming_the_option():
    theta = ha.init_meta_params(jax.random.PRNGKey(0), 3, "paper")
    with pytest.raises(ValueError, match="field_scales fields \\['theta_z'\\]"):
        field_scales_tree(theta, ("theta_z=2",))
    with pytest.raises(ValueError, match="field_scales entry 'theta_u\\[9:\\]' selects nothing"):
        field_scales_tree(theta, ("theta_u[9:]=2",))


def test_scaled_noise_has_the_factors_std_and_the_estimate_divides_it_back():
    """ES/PES perturb a scaled field by factor · σ and divide their estimate by factor², so
    the estimate is of the gradient in θ: mean_p w_p ε_p / factor² with ε_p ~ N(0, (f σ)²)."""
    theta = ha.init_meta_params(jax.random.PRNGKey(0), 3, "paper")
    field_scales = ("theta_p=0.1", "theta_u[1:]=10")
    scales = field_scales_tree(theta, field_scales)
    noise = antithetic_noise(jax.random.PRNGKey(1), theta, 4000, 0.01, None, scales)
    np.testing.assert_allclose(np.std(noise.theta_p), 0.001, rtol=0.05)
    np.testing.assert_allclose(np.std(noise.theta_u[:, 0]), 0.01, rtol=0.05)
    np.testing.assert_allclose(np.std(noise.theta_u[:, 1:]), 0.1, rtol=0.05)
    np.testing.assert_allclose(np.std(noise.b_q), 0.01, rtol=0.05)
    weights = jax.random.normal(jax.random.PRNGKey(2), (4000,))
    estimate = weighted_mean(weights, noise, scales)
    plain = weighted_mean(weights, noise)
    np.testing.assert_allclose(estimate.theta_p, plain.theta_p / 0.01, rtol=1e-5)
    np.testing.assert_allclose(estimate.theta_u[1:], plain.theta_u[1:] / 100, rtol=1e-5)
    np.testing.assert_array_equal(estimate.b_q, plain.b_q)


def test_a_scaled_field_moves_by_its_factor_times_the_unscaled_step():
    """Exact gradients (tbptt), no clipping: the first outer Adam step is ±meta_lr per entry
    whatever the gradient's scale (where it is far above Adam's eps), so with factor f a field
    moves f times as far; the others move exactly alike."""
    opt = _tiny_hyperadam()
    family = tasks.random_quadratics(3)
    moves = {}
    for scales in (None, ("b_q=0.5", "theta_q[1:]=3")):
        config = mt.MetaTrainConfig(num_tasks=2, unroll=4, trajectory=8, meta_lr=1e-3,
                                    clip_norm=None, field_scales=scales)
        state = mt.init_meta_state(jax.random.PRNGKey(0), opt, family, config)
        start = jax.tree.map(np.array, state.meta_params)
        state, metrics = mt.make_meta_step(opt, family, config)(state)
        assert bool(metrics["finite"])
        moves[scales is None] = jax.tree.map(lambda a, b: np.asarray(a) - b,
                                             state.meta_params, start)
    plain, scaled = moves[True], moves[False]
    full = {name: np.abs(getattr(plain, name)) > 0.99e-3 for name in ("b_q", "theta_q", "b_h")}
    assert all(np.sum(m) >= 2 for m in full.values()), full  # entries at Adam's full step
    np.testing.assert_allclose(scaled.b_q[full["b_q"]], 0.5 * plain.b_q[full["b_q"]], rtol=1e-3)
    rows = full["theta_q"] & (np.arange(plain.theta_q.shape[0]) >= 1)[:, None]
    assert np.sum(rows) >= 1
    np.testing.assert_allclose(scaled.theta_q[rows], 3 * plain.theta_q[rows], rtol=1e-3)
    np.testing.assert_allclose(scaled.theta_q[0], plain.theta_q[0], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(scaled.b_h, plain.b_h, rtol=1e-6, atol=1e-12)


def test_field_scales_are_in_the_run_identity_only_when_set():
    assert "field_scales" not in mt.MetaTrainConfig().identity()
    assert mt.MetaTrainConfig(field_scales=("theta_p=0.5",)).identity()["field_scales"] == [
        "theta_p=0.5"]
