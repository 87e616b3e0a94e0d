"""HyperAdam's meta-parameters: the authors' init, the Adam warm starts, shape checks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hyperadam_optax as ha


def _clock_steps(step, horizon, floor, steps, j=20, clock="cell_input"):
    """Σρ_t of the decaying warm start from its definition, a scalar float64 recurrence written
    out here (not the package's LSTM): s_t = tanh(c_t), Σρ_t = J ELU(step/J - step (1 - floor)
    s_t / (J s*)), and c_t = c_{t-1} + σ(400 (1 - s_{t-1}/s*)) δ (``cell_input``) or
    c_{t-1} + δ tanh(k (1 - s_{t-1}/s*)) with k δ (1 - s*²)/s* = 1/2 (``input_gate``)."""
    s_stop, delta = np.tanh(0.5), 0.5 / horizon
    k = 0.5 * s_stop / ((1 - s_stop**2) * delta)
    c = h = 0.0
    out = []
    for _ in range(steps):
        if clock == "cell_input":
            c += delta / (1.0 + np.exp(-400.0 * (1.0 - h / s_stop)))
        else:
            c += delta * np.tanh(k * (1.0 - h / s_stop))
        h = np.tanh(c)
        z = step / j - step * (1.0 - floor) * h / (j * s_stop)
        out.append(j * (z if z > 0 else np.expm1(z)))
    return np.array(out)


@pytest.mark.parametrize("init", ["paper", "adam"])
@pytest.mark.parametrize("j", [1, 5, 20])
def test_init_shapes(init, j):
    mp = ha.init_meta_params(jax.random.key(0), j, init)
    assert mp.theta_u.shape == (2 * j, j) and mp.b_u.shape == (j,)
    assert mp.theta_q.shape == (j, j) and mp.theta_h.shape == (2 * j, 4 * j)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in mp)


def test_paper_init_matches_authors_code():
    mp = ha.init_meta_params(jax.random.key(0), 20, "paper")
    np.testing.assert_array_equal(mp.b_u, 0.0)  # initial decay rates sigmoid(0) = 0.5
    np.testing.assert_array_equal(mp.b_h[40:60], 1.0)  # forget gate
    assert float(jnp.max(jnp.abs(mp.theta_q))) <= 0.2 + 1e-6  # truncated at 2 std
    assert abs(float(jnp.std(mp.theta_q)) - 0.088) < 0.02  # std of N(0, 0.1) cut at 2σ
    glorot = np.sqrt(6.0 / (40 + 20))
    assert float(jnp.max(jnp.abs(mp.theta_u))) <= glorot


def test_adam_init():
    mp = ha.init_meta_params(jax.random.key(0), 20, "adam")
    np.testing.assert_allclose(jax.nn.sigmoid(mp.b_u), 0.9, rtol=1e-6)
    np.testing.assert_allclose(jax.nn.sigmoid(mp.b_r), 0.999, rtol=1e-6)
    np.testing.assert_allclose(jnp.sum(mp.b_q), 1.0, rtol=1e-6)
    assert all(float(jnp.max(jnp.abs(k))) > 0 for k in
               (mp.theta_p, mp.theta_h, mp.theta_u, mp.theta_r, mp.theta_q))


@pytest.mark.parametrize("betas", [None, (0.8, 0.9)])
def test_adam_warm_start_step_is_adam_at_the_scaled_rate(betas):
    kw = {} if betas is None else {"warm_start_betas": betas}
    mp = ha.init_meta_params(jax.random.key(0), 20, "adam", warm_start_scale=0.0,
                             warm_start_step=3.0, **kw)
    params = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
    loss = lambda p: jnp.sum(jnp.array([1.0, 10.0, 0.1]) * p["w"] ** 2) + jnp.cos(p["b"])
    b1, b2 = betas or (0.9, 0.999)
    ours = ha.hyperadam(0.005, mp)
    adam = optax.adam(0.015, b1=b1, b2=b2, eps=0.0, eps_root=1e-24)
    p1, s1, p2, s2 = params, ours.init(params), params, adam.init(params)
    for _ in range(30):
        u1, s1 = ours.update(jax.grad(loss)(p1), s1, p1)
        u2, s2 = adam.update(jax.grad(loss)(p2), s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    chex.assert_trees_all_close(p1, p2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="warm_start_step must be positive"):
        ha.init_meta_params(jax.random.key(0), 4, "adam", warm_start_step=0.0)
    with pytest.raises(ValueError, match=r"warm_start_betas must be two decay rates in \(0, 1\)"):
        ha.init_meta_params(jax.random.key(0), 4, "adam", warm_start_betas=(0.9, 1.0))


@pytest.mark.parametrize("clock", ["cell_input", "input_gate"])
def test_decaying_warm_start_is_adam_with_a_falling_rate(clock):
    """HyperAdam from ``warm_start_decay=(horizon, floor)`` (kernels otherwise zero) is Adam
    whose rate is 0.005 Σρ_t of the recurrence above; that rate falls almost linearly to
    ``floor`` times its start at ``horizon`` and stays within 10% of it to step 2,000."""
    step, horizon, floor = 6.0, 40, 0.25
    mp = ha.init_meta_params(jax.random.key(0), 20, "adam", warm_start_scale=0.0,
                             warm_start_step=step, warm_start_betas=(0.8, 0.9),
                             warm_start_decay=(horizon, floor), warm_start_clock=clock)
    rates = 0.005 * _clock_steps(step, horizon, floor, 2000, clock=clock)
    assert rates[0] == pytest.approx(0.005 * step, rel=0.03)
    assert rates[horizon // 2 - 1] == pytest.approx(0.005 * step * (1 + floor) / 2, rel=0.05)
    assert rates[horizon - 1] == pytest.approx(0.005 * step * floor, rel=0.05)
    np.testing.assert_allclose(rates[horizon:], 0.005 * step * floor, rtol=0.1)
    params = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
    loss = lambda p: jnp.sum(jnp.array([1.0, 10.0, 0.1]) * p["w"] ** 2) + jnp.cos(p["b"])
    ours = ha.hyperadam(0.005, mp)
    adam = optax.adam(lambda count: jnp.asarray(rates, jnp.float32)[count], b1=0.8, b2=0.9,
                      eps=0.0, eps_root=1e-24)
    p1, s1, p2, s2 = params, ours.init(params), params, adam.init(params)
    for _ in range(2 * horizon):
        u1, s1 = ours.update(jax.grad(loss)(p1), s1, p1)
        u2, s2 = adam.update(jax.grad(loss)(p2), s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    chex.assert_trees_all_close(p1, p2, rtol=1e-4, atol=1e-5)
    for bad in [(0.5, 0.25), (100, 0.0), (100, 1.5)]:
        with pytest.raises(ValueError, match=r"warm_start_decay must be \(horizon >= 1"):
            ha.init_meta_params(jax.random.key(0), 4, "adam", warm_start_decay=bad)
    with pytest.raises(ValueError, match="warm_start_decay apply to HyperAdam's Adam warm start only"):
        ha.init_meta_params(jax.random.key(0), 4, "paper", warm_start_decay=(100, 0.25))


def _sum_rho(mp, steps):
    """Σρ_t of HyperAdam with ``mp`` over ``steps`` steps of a fixed gradient (the clock
    runs whatever the gradient)."""
    tx = ha.scale_by_hyperadam(mp)
    grads = jnp.array([1.0, -2.0, 0.5])

    def step(state, _):
        rho = ha.hyperadam_internals(mp, grads, state)["rho"]
        return tx.update(grads, state)[1], jnp.sum(rho[0])

    return np.asarray(jax.lax.scan(step, tx.init(jnp.zeros(3)), length=steps)[1])


@pytest.mark.parametrize("clock,most", [("cell_input", 0.5), ("input_gate", 0.005)])
def test_the_input_gate_clock_keeps_its_horizon_under_a_meta_step_on_its_rate(clock, most):
    """Adam moves every meta-parameter by about its rate per meta-step whatever its size: a
    move of 1e-3 on the clock's rate bias shifts the step at the clock's midpoint by 10% of
    its fall when the rate is the cell input δ = 0.005 (``cell_input``), by 0.05% when it is
    the input gate's logit (``input_gate``)."""
    horizon, step, floor = 100, 8.0, 0.25
    mp = ha.init_meta_params(jax.random.key(0), 4, "adam", warm_start_scale=0.0,
                             warm_start_step=step, warm_start_decay=(horizon, floor),
                             warm_start_clock=clock)
    rate_bias = 4 if clock == "cell_input" else 0  # b_h of unit 0's g or i gate (J = 4)
    before = _sum_rho(mp, horizon)
    after = _sum_rho(mp._replace(b_h=mp.b_h.at[rate_bias].add(1e-3)), horizon)
    shift = abs(after[horizon // 2] - before[horizon // 2]) / (step * (1 - floor))
    assert shift < most and (clock == "input_gate" or shift > 0.05), shift
    with pytest.raises(ValueError, match="clock must be one of"):
        ha.init_meta_params(jax.random.key(0), 4, "adam", warm_start_decay=(10, 0.5),
                            warm_start_clock="gate")


def test_unknown_init():
    with pytest.raises(ValueError, match="'paper' or 'adam'"):
        ha.init_meta_params(jax.random.key(0), 20, "glorot")


def test_shape_disagreement_named():
    mp = ha.init_meta_params(jax.random.key(0), 20)
    bad = mp._replace(theta_q=jnp.zeros((10, 10)))
    with pytest.raises(ValueError, match=r"theta_q: expected \(20, 20\), found \(10, 10\)"):
        ha.scale_by_hyperadam(bad)
