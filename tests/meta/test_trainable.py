"""MetaTrainConfig.trainable: only the named fields of the meta-parameters train."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hyperadam_optax as ha
import hyperadam_optax.meta as mt
from hyperadam_optax import tasks
from hyperadam_optax.meta.estimators.perturb import antithetic_noise
from hyperadam_optax.meta.trainable import field_names, trainable_mask


def _tiny_hyperadam(j=3):
    return mt.LearnedOptimizer("hyperadam", lambda k: ha.init_meta_params(k, j, "paper"),
                               lambda theta: ha.hyperadam(0.05, theta))


@pytest.mark.parametrize("estimator", ["pes", "tbptt"])
def test_only_the_trainable_fields_move(estimator):
    opt = _tiny_hyperadam()
    family = tasks.random_quadratics(3)
    config = mt.MetaTrainConfig(num_tasks=2, unroll=4, trajectory=8, meta_lr=1e-2,
                                estimator=estimator, num_particles=2,
                                trainable=("theta_q", "b_q"))
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
