"""L2O-Scale against an independent float64 reference, finite differences, its invariances
and its hierarchy (the optax conformance suite covers it through ``test_conformance``)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hyperadam_optax as ha
from hyperadam_optax.optimizers.l2o_scale import clip_straight_through
from tests.helpers.gradcheck import assert_grad_matches_finite_differences
from tests.helpers.learned_special_cases import l2o_scale_decaying_descent
from tests.helpers.reference_l2o_scale import ReferenceL2OScale


def _theta(seed, dtype=jnp.float32, **sizes):
    """Random meta-parameters with every field away from its special init (so each is used)."""
    theta = ha.init_l2o_scale_meta_params(jax.random.key(seed), dtype=dtype, **sizes)
    keys = jax.random.split(jax.random.key(seed + 1), len(theta))
    return type(theta)(*(x + 0.3 * jax.random.normal(k, x.shape, dtype)
                         for x, k in zip(theta, keys)))


def _params():
    return {"w": jnp.array([[0.5, -1.0, 2.0], [0.1, 0.3, -0.7]]), "b": jnp.array([0.2, -0.4]),
            "s": jnp.array(1.5)}


def _grads(i):
    return jax.tree.map(lambda p: jnp.sin((i + 1) * (p + 0.37)) * (1.0 + i), _params())


def test_matches_float64_reference(x64):
    theta = _theta(3, jnp.float64, param_size=4, tensor_size=5, global_size=3, timescales=3)
    params = jax.tree.map(lambda x: x.astype(jnp.float64), _params())
    tx = ha.scale_by_l2o_scale(theta, initial_log_lr=-4.0)
    state = tx.init(params)
    leaves, treedef = jax.tree.flatten(params)
    ref = ReferenceL2OScale(theta, [x.shape for x in leaves], -4.0)
    for i in range(5):
        g = jax.tree.map(lambda x: x.astype(jnp.float64), _grads(i))
        got, state = jax.jit(tx.update)(g, state)
        want = ref.step(jax.tree.leaves(g))
        for a, b in zip(jax.tree.leaves(got), want):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(state.global_state, ref.glob, rtol=1e-10)
    for a, b in zip(jax.tree.leaves(state.log_lr), ref.log_lr):
        np.testing.assert_allclose(a, b, rtol=1e-10)


@pytest.mark.slow
def test_meta_gradient_matches_finite_differences(x64):
    theta = _theta(5, jnp.float64, param_size=3, tensor_size=4, global_size=3, timescales=3)
    target = {"a": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([[0.3, -0.7]])}
    scales = {"a": jnp.array([1.0, 3.0, 0.2]), "b": jnp.array([[2.0, 0.5]])}

    def loss_fn(p):
        return sum(jnp.sum(s * (x - t) ** 2) for x, t, s in
                   zip(jax.tree.leaves(p), jax.tree.leaves(target), jax.tree.leaves(scales)))

    def meta_loss(theta):
        tx = ha.l2o_scale(1.0, theta, initial_log_lr=-2.0)
        params = jax.tree.map(jnp.zeros_like, target)
        state, total = tx.init(params), 0.0
        for _ in range(5):
            loss, g = jax.value_and_grad(loss_fn)(params)
            total = total + loss
            u, state = tx.update(g, state)
            params = optax.apply_updates(params, u)
        return total + loss_fn(params)

    assert_grad_matches_finite_differences(meta_loss, theta, seed=6, min_abs=1e-4)


@pytest.mark.slow
def test_every_field_gets_a_meta_gradient():
    theta = _theta(7)
    params = _params()

    def meta_loss(theta):
        tx = ha.l2o_scale(1.0, theta)
        p, state, total = params, tx.init(params), 0.0
        for i in range(3):
            u, state = tx.update(_grads(i), state)
            p = optax.apply_updates(p, u)
            total = total + sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p))
        return total

    grads = jax.grad(meta_loss)(theta)
    silent = [k for k, v in grads._asdict().items() if not np.any(np.asarray(v) != 0)]
    assert silent == [], silent


@pytest.mark.slow
def test_steps_do_not_depend_on_the_gradient_scale(x64):
    """Its inputs are ratios and differences of logs of the moments, the direction is
    normalised: a problem whose gradients are 1e2x or 1e5x larger gets the same steps (at
    smaller gradients the moments' epsilons, 1e-12 and 1e-16, start to count)."""
    theta = _theta(9, jnp.float64)
    tx = ha.scale_by_l2o_scale(theta)
    outs = {}
    for c in (1.0, 1e2, 1e5):
        state, steps = tx.init(_params()), []
        for i in range(6):
            u, state = tx.update(jax.tree.map(lambda g: c * g, _grads(i)), state)
            steps.append(u)
        outs[c] = steps
    for c in (1e2, 1e5):
        for a, b in zip(outs[c], outs[1.0]):
            jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5), a, b)


def test_hierarchy():
    """A leaf's Tensor RNN sees its own coordinates, not another leaf's (the global state,
    the only channel between leaves, changes only after the first step); the Global RNN
    sees every leaf."""
    theta = _theta(11)
    tx = ha.scale_by_l2o_scale(theta)
    params = _params()
    g = _grads(0)

    def after(grads_seq):
        state = tx.init(params)
        for grads in grads_seq:
            _, state = tx.update(grads, state)
        return state

    base = after([g])
    own = after([{**g, "w": g["w"].at[1, 2].add(0.5)}])
    other = after([{**g, "b": g["b"].at[0].add(5.0)}])
    assert not np.allclose(own.tensor_state["w"], base.tensor_state["w"])
    np.testing.assert_array_equal(other.tensor_state["w"], base.tensor_state["w"])
    assert np.any(other.global_state != base.global_state)
    # Through the global state, the next step's tensor state of "w" does depend on "b".
    g2 = _grads(1)
    two = after([g, g2])
    two_other = after([{**g, "b": g["b"].at[0].add(5.0)}, g2])
    assert np.any(two.tensor_state["w"] != two_other.tensor_state["w"])


def test_relative_log_rate_is_relative_to_every_leaf():
    """The log learning rate input is each coordinate's minus the mean over all leaves: adding
    a constant to every coordinate's initial log rate changes only the step length."""
    theta = _theta(13)
    a, b = ha.scale_by_l2o_scale(theta, initial_log_lr=-3.0), \
        ha.scale_by_l2o_scale(theta, initial_log_lr=-5.0)
    sa, sb = a.init(_params()), b.init(_params())
    for i in range(3):
        ua, sa = a.update(_grads(i), sa)
        ub, sb = b.update(_grads(i), sb)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y * math.exp(2.0), rtol=1e-4), ua, ub)


def test_decaying_descent_special_case():
    """Hand-built weights (tests.helpers): the step is ``lr · e^{-0.005 t}`` times the leaf-RMS
    normalised ``asinh(a_1 / sqrt(ms_1))``, which at the first step is ``asinh(sign g)``."""
    tx = ha.l2o_scale(0.1, l2o_scale_decaying_descent())
    g = {"w": jnp.array([0.3, -2.0, 5.0, -1e-3])}
    u, _ = tx.update(g, tx.init(g))
    direction = np.arcsinh(np.sign(g["w"]) * (1 - 1e-12))  # |a| / sqrt(a² + 1e-12) ≈ 1
    direction = direction / np.sqrt(np.mean(direction ** 2))
    np.testing.assert_allclose(u["w"], -0.1 * math.exp(-0.005) * direction, rtol=1e-5)


def test_log_rate_clip_is_straight_through():
    x = jnp.array([-40.0, 0.5, 50.0])
    np.testing.assert_array_equal(clip_straight_through(x, 33.0), [-33.0, 0.5, 33.0])
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(clip_straight_through(v, 33.0)))(x),
                                  [1.0, 1.0, 1.0])


def test_bad_meta_params_and_sizes():
    theta = ha.init_l2o_scale_meta_params(jax.random.key(0))
    with pytest.raises(ValueError, match="lr_w: expected \\(10,\\), found \\(7,\\)"):
        ha.scale_by_l2o_scale(theta._replace(lr_w=jnp.zeros(7)))
    with pytest.raises(TypeError, match="expected L2OScaleParams"):
        ha.scale_by_l2o_scale(ha.init_meta_params(jax.random.key(0)))
    with pytest.raises(ValueError, match="timescales >= 2"):
        ha.init_l2o_scale_meta_params(jax.random.key(0), timescales=1)
    with pytest.raises(ValueError, match="init must be 'paper'"):
        ha.init_l2o_scale_meta_params(jax.random.key(0), init="adam")
    sizes = ha.init_l2o_scale_meta_params(jax.random.key(0), 5, 10, 7, 3)
    assert sizes.param_gate_w.shape == (9 + 5, 10) and sizes.global_cand_w.shape == (17, 7)


def test_untrained_weights_descend_on_a_quadratic():
    """Even from the paper's initialisation the step descends (the shortcut is 1/K per rescaled
    momentum), slowly: its first steps are about e^-1 · 1e-3 per unit-RMS direction."""
    tx = ha.l2o_scale(1.0, ha.init_l2o_scale_meta_params(jax.random.key(0)))
    p = {"x": jnp.linspace(-2.0, 3.0, 10)}
    loss = lambda p: jnp.sum(p["x"] ** 2)  # noqa: E731
    state = tx.init(p)
    for _ in range(50):
        u, state = tx.update(jax.grad(loss)(p), state)
        p = optax.apply_updates(p, u)
    assert float(loss(p)) < 0.99 * float(jnp.sum(jnp.linspace(-2.0, 3.0, 10) ** 2))
