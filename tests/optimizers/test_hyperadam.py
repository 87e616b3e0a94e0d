"""HyperAdam against Alg. 2: independent reference, special cases, invariances, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hyperadam_optax as ha
from tests.helpers.gradcheck import assert_grad_matches_finite_differences
from tests.helpers.reference_hyperadam import ReferenceHyperAdam


def _gradient_sequence(key, shapes, steps):
    """A fixed sequence of gradients with different scales per coordinate."""
    out = []
    for _ in range(steps):
        key, *ks = jax.random.split(key, len(shapes) + 1)
        out.append({f"w{i}": jax.random.normal(k, s) * (1.0 + i) for i, (k, s) in
                    enumerate(zip(ks, shapes))})
    return out


def _updates(tx, params, grads_seq):
    state = tx.init(params)
    update = jax.jit(tx.update)
    out = []
    for g in grads_seq:
        u, state = update(g, state)
        out.append(u)
    return out


def _random_theta(seed, j=6, dtype=jnp.float32):
    mp = ha.init_meta_params(jax.random.key(seed), j, "paper", dtype=dtype)
    # Non-zero biases everywhere so every term of Alg. 2 matters.
    ks = jax.random.split(jax.random.key(seed + 100), len(mp))
    return ha.HyperAdamParams(*(
        v + 0.3 * jax.random.normal(k, v.shape, dtype) if name.startswith("b_") else v
        for (name, v), k in zip(mp._asdict().items(), ks)
    ))


def test_matches_float64_reference(x64):
    theta = _random_theta(0, j=5, dtype=jnp.float64)
    shapes = [(7,), (3, 4)]
    grads = _gradient_sequence(jax.random.key(1), shapes, 15)
    grads = [jax.tree.map(lambda x: x.astype(jnp.float64), g) for g in grads]
    params = {f"w{i}": jnp.zeros(s, jnp.float64) for i, s in enumerate(shapes)}
    got = _updates(ha.scale_by_hyperadam(theta), params, grads)
    ref = ReferenceHyperAdam(theta, p=19)
    for g, u in zip(grads, got):
        flat_g = np.concatenate([np.asarray(g["w0"]).ravel(), np.asarray(g["w1"]).ravel()])
        want = ref.direction(flat_g)
        have = np.concatenate([np.asarray(u["w0"]).ravel(), np.asarray(u["w1"]).ravel()])
        np.testing.assert_allclose(have, want, rtol=1e-10, atol=1e-12)


def test_global_rms_matches_float64_reference(x64):
    theta = _random_theta(10, j=5, dtype=jnp.float64)
    grads = _gradient_sequence(jax.random.key(11), [(7,), (3, 4)], 15)
    grads = [jax.tree.map(lambda x: x.astype(jnp.float64), g) for g in grads]
    params = {"w0": jnp.zeros(7, jnp.float64), "w1": jnp.zeros((3, 4), jnp.float64)}
    got = _updates(ha.scale_by_hyperadam(theta, normalization="global_rms"), params, grads)
    ref = ReferenceHyperAdam(theta, p=19, normalization="global_rms")
    l2 = _updates(ha.scale_by_hyperadam(theta), params, grads)
    for g, u, u_l2 in zip(grads, got, l2):
        flat = [np.concatenate([np.asarray(t["w0"]).ravel(), np.asarray(t["w1"]).ravel()])
                for t in (g, u, u_l2)]
        np.testing.assert_allclose(flat[1], ref.direction(flat[0]), rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(flat[1] - flat[2])) > 1e-3 * np.max(np.abs(flat[1]))  # not l2's


def test_global_rms_equivalent_takes_the_global_l2_steps_at_its_size():
    theta = _random_theta(12, j=8)
    shapes = [(30,), (4, 5)]
    grads = _gradient_sequence(jax.random.key(13), shapes, 20)
    params = {"w0": jnp.zeros(30), "w1": jnp.zeros((4, 5))}
    want = _updates(ha.scale_by_hyperadam(theta), params, grads)
    got = _updates(ha.scale_by_hyperadam(ha.contrib.global_rms_equivalent(theta, 50),
                                         normalization="global_rms"), params, grads)
    for a, b in zip(want, got):
        assert optax.tree.norm(jax.tree.map(jnp.subtract, a, b)) <= 1e-5 * optax.tree.norm(a)


@pytest.mark.parametrize("normalization,same", [("global_rms", True), ("global_l2", False)])
def test_global_rms_steps_do_not_depend_on_the_number_of_coordinates(normalization, same):
    """The problem w, and the same problem written twice ([w, w], same gradients): with the
    root-mean-square normalisation each copy takes w's steps; the Euclidean one shrinks the
    networks' inputs by 1/sqrt(2) and takes other steps."""
    theta = _random_theta(14, j=6)
    grads = _gradient_sequence(jax.random.key(15), [(40,)], 15)
    single = _updates(ha.scale_by_hyperadam(theta, normalization=normalization),
                      {"w0": jnp.zeros(40)}, grads)
    double = _updates(ha.scale_by_hyperadam(theta, normalization=normalization),
                      {"a": jnp.zeros(40), "b": jnp.zeros(40)},
                      [{"a": g["w0"], "b": g["w0"]} for g in grads])
    gaps = [float(jnp.max(jnp.abs(d["a"] - s["w0"])) / jnp.max(jnp.abs(s["w0"])))
            for s, d in zip(single, double)]
    np.testing.assert_allclose([d["a"] for d in double], [d["b"] for d in double])
    assert (max(gaps) < 1e-5) if same else (max(gaps) > 1e-3)


def test_unknown_normalization_is_refused():
    with pytest.raises(ValueError, match="global_l2.*global_rms"):
        ha.scale_by_hyperadam(_random_theta(0), normalization="rms")
    with pytest.raises(ValueError, match="positive int"):
        ha.contrib.global_rms_equivalent(_random_theta(0), 0)


def _clock_warm_start(scale, j=6):
    return ha.init_meta_params(jax.random.key(20), j, "adam", warm_start_scale=scale,
                               warm_start_step=4.0, warm_start_betas=(0.8, 0.9),
                               warm_start_decay=(10, 0.25))


def _assert_same_steps(theta_a, theta_b, normalization, key):
    """25 steps of the two weights on one gradient sequence agree to 1e-6 relative (each
    read with the sign agreement if its θ_p has two rows)."""
    grads = _gradient_sequence(key, [(30,), (4, 5)], 25)
    params = {"w0": jnp.zeros(30), "w1": jnp.zeros((4, 5))}

    def tx(theta):
        return ha.scale_by_hyperadam(theta, normalization=normalization,
                                     sign_agreement=theta.theta_p.shape[0] == 2)

    want = _updates(tx(theta_a), params, grads)
    got = _updates(tx(theta_b), params, grads)
    for a, b in zip(want, got):
        assert optax.tree.norm(jax.tree.map(jnp.subtract, a, b)) <= 1e-6 * optax.tree.norm(a)


@pytest.mark.parametrize("normalization", ha.optimizers.hyperadam.NORMALIZATIONS)
def test_open_input_path_keeps_the_steps_of_a_warm_start_with_zero_kernels(normalization):
    warm = _clock_warm_start(0.0)
    opened = ha.contrib.open_input_path(warm, jax.random.key(21))
    _assert_same_steps(warm, opened, normalization, jax.random.key(22))
    assert not jnp.any(opened.theta_q[1:]) and jnp.all(opened.theta_q[0] == warm.theta_q[0])


def test_open_input_path_gives_the_readout_a_task_dependent_meta_gradient():
    """max |d(Σ_t <d_t, w>)/dθ_q| over the free units' rows, relative to that of b_q: 6e-4
    for the Adam warm start (kernels 0.01: its free units' s_t is about 1e-3 and blind to
    the gradient), 0.34 opened."""
    grads = _gradient_sequence(jax.random.key(23), [(200,)], 10)
    weights = jax.random.normal(jax.random.key(24), (200,))

    def readout_to_bias_ratio(theta):
        def objective(mp):
            tx = ha.scale_by_hyperadam(mp, normalization="global_rms")
            state, total = tx.init({"w0": jnp.zeros(200)}), 0.0
            for g in grads:
                u, state = tx.update(g, state)
                total = total + jnp.dot(u["w0"], weights)
            return total
        grad = jax.grad(objective)(theta)
        return float(jnp.max(jnp.abs(grad.theta_q[1:])) / jnp.max(jnp.abs(grad.b_q)))

    warm = _clock_warm_start(0.01)
    assert readout_to_bias_ratio(warm) < 2e-3
    assert readout_to_bias_ratio(ha.contrib.open_input_path(warm, jax.random.key(25))) > 0.05


def test_open_input_path_refuses_bad_arguments():
    warm = _clock_warm_start(0.0)
    for bad in [(), (6,), (-1,), (0.5,)]:
        with pytest.raises(ValueError, match="keep_units"):
            ha.contrib.open_input_path(warm, jax.random.key(0), keep_units=bad)
    with pytest.raises(ValueError, match="input_scale"):
        ha.contrib.open_input_path(warm, jax.random.key(0), input_scale=0.0)


def test_sign_agreement_input_matches_float64_reference(x64):
    theta = ha.contrib.with_sign_agreement_input(_random_theta(13, j=5, dtype=jnp.float64),
                                         jax.random.key(14), scale=2.0)
    assert theta.theta_p.shape == (2, 5)
    grads = _gradient_sequence(jax.random.key(15), [(7,), (3, 4)], 15)
    grads = [jax.tree.map(lambda x: x.astype(jnp.float64), g) for g in grads]
    params = {"w0": jnp.zeros(7, jnp.float64), "w1": jnp.zeros((3, 4), jnp.float64)}
    got = _updates(ha.scale_by_hyperadam(theta, normalization="global_rms", sign_agreement=True),
                   params, grads)
    without = _updates(ha.scale_by_hyperadam(theta._replace(theta_p=theta.theta_p[:1]),
                                             normalization="global_rms"), params, grads)
    ref = ReferenceHyperAdam(theta, p=19, normalization="global_rms")
    for g, u in zip(grads, got):
        flat = [np.concatenate([np.asarray(t["w0"]).ravel(), np.asarray(t["w1"]).ravel()])
                for t in (g, u)]
        np.testing.assert_allclose(flat[1], ref.direction(flat[0]), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got[0]["w0"], without[0]["w0"])  # no moments yet: agreement 0
    assert float(jnp.max(jnp.abs(got[-1]["w0"] - without[-1]["w0"]))) > 1e-3


@pytest.mark.parametrize("normalization", ha.optimizers.hyperadam.NORMALIZATIONS)
def test_sign_agreement_input_keeps_the_steps_of_an_opened_warm_start(normalization):
    opened = ha.contrib.open_input_path(_clock_warm_start(0.0), jax.random.key(26))
    both = ha.contrib.with_sign_agreement_input(opened, jax.random.key(27), scale=3.0)
    _assert_same_steps(opened, both, normalization, jax.random.key(28))
    # The conversion between normalisations leaves the sign agreement's row alone.
    l2 = ha.contrib.global_rms_equivalent(both, 50)
    np.testing.assert_array_equal(l2.theta_p[1], both.theta_p[1])


def test_sign_agreement_input_is_refused_twice_and_other_row_counts_are_misshaped(tmp_path):
    both = ha.contrib.with_sign_agreement_input(_random_theta(0), jax.random.key(0))
    with pytest.raises(ValueError, match="already read 2 inputs"):
        ha.contrib.with_sign_agreement_input(both, jax.random.key(0))
    with pytest.raises(ValueError, match="scale must be positive"):
        ha.contrib.with_sign_agreement_input(_random_theta(0), jax.random.key(0), scale=0.0)
    three = both._replace(theta_p=jnp.zeros((3, 6)))
    with pytest.raises(ValueError, match=r"theta_p: expected \(1, 6\), found \(3, 6\)"):
        ha.scale_by_hyperadam(three)
    # The StateCell's inputs are an explicit argument, never inferred from θ_p's rows.
    with pytest.raises(ValueError, match=r"theta_p has 2 rows: normalised gradient, sign "
                                         r"agreement\): pass sign_agreement=True"):
        ha.scale_by_hyperadam(both)
    with pytest.raises(ValueError, match="sign_agreement=True needs meta_params whose theta_p "
                                         "has 2 rows"):
        ha.hyperadam(meta_params=_random_theta(0), sign_agreement=True)
    with pytest.raises(ValueError, match="sign_agreement must be a bool"):
        ha.scale_by_hyperadam(both, sign_agreement=1)
    ha.save_meta_params(tmp_path / "both.npz", both)
    loaded = ha.load_meta_params(tmp_path / "both.npz")
    np.testing.assert_array_equal(loaded.theta_p, both.theta_p)


def test_float32_matches_float64_reference():
    theta32 = _random_theta(3, j=20)
    grads = _gradient_sequence(jax.random.key(4), [(50,)], 20)
    got = _updates(ha.scale_by_hyperadam(theta32), {"w0": jnp.zeros(50)}, grads)
    ref = ReferenceHyperAdam(theta32, p=50)
    for g, u in zip(grads, got):
        want = ref.direction(np.asarray(g["w0"]))
        scale = np.max(np.abs(want))
        assert np.max(np.abs(np.asarray(u["w0"]) - want)) <= 1e-5 * scale


def test_global_norm_pytree_equals_flat_vector():
    theta = _random_theta(5)
    shapes = [(3, 4), (5,), (2, 1, 3)]
    grads = _gradient_sequence(jax.random.key(6), shapes, 10)
    params = {f"w{i}": jnp.zeros(s) for i, s in enumerate(shapes)}
    tree_updates = _updates(ha.scale_by_hyperadam(theta), params, grads)

    def flatten(t):
        return jnp.concatenate([t[f"w{i}"].ravel() for i in range(len(shapes))])

    flat_updates = _updates(ha.scale_by_hyperadam(theta), jnp.zeros(23),
                            [flatten(g) for g in grads])
    for a, b in zip(tree_updates, flat_updates):
        np.testing.assert_allclose(flatten(a), b, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_scale_invariance(c):
    theta = _random_theta(7, j=20)
    grads = _gradient_sequence(jax.random.key(8), [(30,), (4, 5)], 20)
    params = {"w0": jnp.zeros(30), "w1": jnp.zeros((4, 5))}
    base = _updates(ha.scale_by_hyperadam(theta), params, grads)
    scaled = _updates(ha.scale_by_hyperadam(theta), params,
                      [jax.tree.map(lambda x: c * x, g) for g in grads])
    for a, b in zip(base, scaled):
        num = optax.tree.norm(jax.tree.map(jnp.subtract, a, b))
        assert num <= 1e-3 * optax.tree.norm(a)


@pytest.mark.parametrize("b1,b2", [(0.9, 0.999), (0.5, 0.9)])
def test_adam_special_case(b1, b2):
    theta = ha.adam_meta_params(20, b1, b2)
    grads = _gradient_sequence(jax.random.key(9), [(40,), (3, 3)], 50)
    params = {"w0": jnp.zeros(40), "w1": jnp.zeros((3, 3))}
    ours = _updates(ha.scale_by_hyperadam(theta), params, grads)
    adam = _updates(optax.scale_by_adam(b1, b2, eps=0.0), params, grads)
    for a, b in zip(ours, adam):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-6)


def test_warm_start_behaves_like_adam():
    theta = ha.init_meta_params(jax.random.key(0), 20, "adam")
    grads = _gradient_sequence(jax.random.key(10), [(64,)], 30)
    ours = _updates(ha.scale_by_hyperadam(theta), {"w0": jnp.zeros(64)}, grads)
    adam = _updates(optax.scale_by_adam(0.9, 0.999, eps=0.0), {"w0": jnp.zeros(64)}, grads)
    for a, b in zip(ours, adam):
        rel = optax.tree.norm(jax.tree.map(jnp.subtract, a, b)) / optax.tree.norm(b)
        assert rel < 0.1


def test_meta_gradient_matches_finite_differences(x64):
    theta = _random_theta(11, j=3, dtype=jnp.float64)
    target = {"a": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([[0.3, -0.7]])}
    scales = {"a": jnp.array([1.0, 3.0, 0.2]), "b": jnp.array([[2.0, 0.5]])}

    def loss_fn(p):
        return sum(jnp.sum(s * (x - t) ** 2) for x, t, s in
                   zip(jax.tree.leaves(p), jax.tree.leaves(target), jax.tree.leaves(scales)))

    def meta_loss(theta):
        tx = ha.hyperadam(0.05, theta)
        params = jax.tree.map(jnp.zeros_like, target)
        state = tx.init(params)
        total = 0.0
        for _ in range(6):
            loss, g = jax.value_and_grad(loss_fn)(params)
            total = total + loss
            u, state = tx.update(g, state)
            params = optax.apply_updates(params, u)
        return total + loss_fn(params)

    assert_grad_matches_finite_differences(meta_loss, theta, seed=12, min_abs=1e-4)


@pytest.mark.slow
def test_every_meta_parameter_gets_gradient_from_warm_start():
    theta = ha.init_meta_params(jax.random.key(1), 8, "adam")
    params = jnp.array([1.0, -2.0, 3.0, 0.5])

    def meta_loss(theta):
        tx = ha.hyperadam(0.1, theta)
        p, state, total = params, tx.init(params), 0.0
        for _ in range(5):
            loss, g = jax.value_and_grad(lambda x: jnp.sum(x ** 4 + x ** 2))(p)
            u, state = tx.update(g, state)
            p = p + u
            total = total + loss
        return total

    grad = jax.grad(meta_loss)(theta)
    for name, g in grad._asdict().items():
        assert float(jnp.max(jnp.abs(g))) > 0.0, name


def test_state_holds_candidates_on_trailing_axis():
    theta = ha.init_meta_params(jax.random.key(0), 7)
    params = {"w": jnp.zeros((3, 5)), "b": jnp.zeros(())}
    state = ha.scale_by_hyperadam(theta).init(params)
    assert isinstance(state, ha.HyperAdamState)
    for field in ("m", "v", "beta_hat", "gamma_hat", "h", "c"):
        leaves = getattr(state, field)
        assert leaves["w"].shape == (3, 5, 7) and leaves["b"].shape == (7,)
    assert state.count.dtype == jnp.int32
