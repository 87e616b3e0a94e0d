"""RNNprop and the DMoptimizer against plain float64 NumPy references, and their gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hyperadam_optax as ha
from tests.helpers.gradcheck import assert_grad_matches_finite_differences
from tests.helpers.reference_hyperadam import elu, sigmoid


def _lstm(x, h, c, kernel, bias):
    H = h.shape[1]
    z = np.concatenate([x, h], axis=1) @ kernel + bias
    i, g, f, o = z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:]
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


class ReferenceRNNprop:
    def __init__(self, theta, p, b1=0.95, b2=0.95, eps=1e-8):
        self.t = {k: np.asarray(v, np.float64) for k, v in theta._asdict().items()}
        H = self.t["b_in"].shape[0]
        self.m, self.v, self.k = np.zeros(p), np.zeros(p), 0
        self.state = [np.zeros((p, H)) for _ in range(4)]
        self.b1, self.b2, self.eps = b1, b2, eps

    def direction(self, g):
        t, b1, b2 = self.t, self.b1, self.b2
        self.k += 1
        self.m = b1 * self.m + (1 - b1) * g
        self.v = b2 * self.v + (1 - b2) * g * g
        sv = np.sqrt(self.v / (1 - b2 ** self.k)) + self.eps
        inputs = np.stack([g / sv, self.m / (1 - b1 ** self.k) / sv], axis=1)
        x = elu(inputs @ t["theta_in"] + t["b_in"])
        h1, c1, h2, c2 = self.state
        h1, c1 = _lstm(x, h1, c1, t["theta_h1"], t["b_h1"])
        h2, c2 = _lstm(h1, h2, c2, t["theta_h2"], t["b_h2"])
        self.state = [h1, c1, h2, c2]
        return 0.1 * np.tanh(h2 @ t["theta_out"][:, 0] + t["b_out"][0])


class ReferenceDM:
    def __init__(self, theta, p, k=5.0, scale=0.01):
        self.t = {k_: np.asarray(v, np.float64) for k_, v in theta._asdict().items()}
        H = self.t["theta_out"].shape[0]
        self.state = [np.zeros((p, H)) for _ in range(4)]
        self.k, self.scale = k, scale

    def direction(self, g):
        t = self.t
        eps = np.finfo(np.float32).eps
        x = np.stack([np.maximum(np.log(np.abs(g) + eps) / self.k, -1.0),
                      np.clip(g * np.exp(self.k), -1.0, 1.0)], axis=1)
        h1, c1, h2, c2 = self.state
        h1, c1 = _lstm(x, h1, c1, t["theta_h1"], t["b_h1"])
        h2, c2 = _lstm(h1, h2, c2, t["theta_h2"], t["b_h2"])
        self.state = [h1, c1, h2, c2]
        return -self.scale * (h2 @ t["theta_out"][:, 0] + t["b_out"][0])


def _randomise_biases(theta, seed):
    ks = jax.random.split(jax.random.key(seed), len(theta))
    return type(theta)(*(v + 0.3 * jax.random.normal(k, v.shape, v.dtype)
                         if name.startswith("b_") else v
                         for (name, v), k in zip(theta._asdict().items(), ks)))


CASES = {
    "rnnprop": (lambda k, dt: ha.init_rnnprop_meta_params(k, 6, dtype=dt), ha.scale_by_rnnprop,
                lambda theta, p: ReferenceRNNprop(theta, p), {}),
    "dm": (lambda k, dt: ha.init_dm_meta_params(k, 6, dtype=dt), ha.scale_by_dm_optimizer,
           lambda theta, p: ReferenceDM(theta, p), {}),
    "dm-rnnprop-variant": (lambda k, dt: ha.init_dm_meta_params(k, 6, dtype=dt),
                           ha.scale_by_dm_optimizer,
                           lambda theta, p: ReferenceDM(theta, p, k=10.0, scale=0.1),
                           {"variant": "rnnprop"}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_float64_reference(x64, name):
    init, scale_by, reference, kwargs = CASES[name]
    theta = _randomise_biases(init(jax.random.key(0), jnp.float64), 1)
    tx = scale_by(theta, **kwargs)
    params = {"a": jnp.zeros(7, jnp.float64), "b": jnp.zeros((2, 3), jnp.float64)}
    state = tx.init(params)
    ref = reference(theta, 13)
    key = jax.random.key(2)
    for _ in range(12):
        key, k = jax.random.split(key)
        # Gradients over several orders of magnitude, so both preprocessing branches matter.
        flat = jax.random.normal(k, (13,), jnp.float64) * jnp.logspace(-4, 1, 13)
        g = {"a": flat[:7], "b": flat[7:].reshape(2, 3)}
        u, state = tx.update(g, state)
        want = ref.direction(np.asarray(flat))
        have = np.concatenate([np.asarray(u["a"]), np.asarray(u["b"]).ravel()])
        np.testing.assert_allclose(have, want, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["rnnprop", "dm"])
def test_meta_gradient_matches_finite_differences(x64, name):
    init, scale_by, _, _ = CASES[name]
    theta = _randomise_biases(init(jax.random.key(3), jnp.float64), 4)
    target = jnp.array([1.0, -2.0, 0.5, 0.03])

    def meta_loss(theta):
        tx = optax.chain(scale_by(theta), optax.scale_by_learning_rate(3.0))
        p = jnp.zeros(4, jnp.float64)
        state, total = tx.init(p), 0.0
        for _ in range(5):
            loss, g = jax.value_and_grad(lambda x: jnp.sum((x - target) ** 2))(p)
            u, state = tx.update(g, state)
            p = p + u
            total = total + loss
        return total

    assert_grad_matches_finite_differences(meta_loss, theta, seed=5)


def test_rnnprop_step_is_bounded_by_its_scale():
    theta = _randomise_biases(ha.init_rnnprop_meta_params(jax.random.key(0)), 2)
    theta = theta._replace(theta_out=100 * theta.theta_out)
    tx = ha.rnnprop(1.0, theta)
    p = jnp.zeros(50)
    u, _ = tx.update(jax.random.normal(jax.random.key(1), (50,)) * 1e3, tx.init(p))
    assert float(jnp.max(jnp.abs(u))) <= 0.1 + 1e-6


def test_learning_rate_multiplies_the_papers_step():
    theta = ha.init_dm_meta_params(jax.random.key(0))
    g = jnp.linspace(-1, 1, 9)
    plain = ha.scale_by_dm_optimizer(theta)
    d, _ = plain.update(g, plain.init(g))
    u, _ = ha.dm_optimizer(2.0, theta).update(g, ha.dm_optimizer(2.0, theta).init(g))
    np.testing.assert_allclose(u, -2.0 * d, rtol=1e-6)


def test_bad_meta_params_and_variant():
    theta = ha.init_rnnprop_meta_params(jax.random.key(0), 20)
    with pytest.raises(ValueError, match=r"theta_h2: expected \(40, 80\), found \(10, 80\)"):
        ha.scale_by_rnnprop(theta._replace(theta_h2=jnp.zeros((10, 80))))
    with pytest.raises(TypeError, match="expected DMParams"):
        ha.scale_by_dm_optimizer(theta)
    with pytest.raises(ValueError, match="variant"):
        ha.scale_by_dm_optimizer(ha.init_dm_meta_params(jax.random.key(0)), variant="google")


@pytest.mark.parametrize("init", [ha.init_rnnprop_meta_params, ha.init_dm_meta_params])
def test_save_load_roundtrip(tmp_path, init):
    theta = init(jax.random.key(7), 5)
    ha.save_meta_params(tmp_path / "t.npz", theta, {"n": 1})
    loaded = ha.load_meta_params(tmp_path / "t.npz")
    assert type(loaded) is type(theta)
    jax.tree.map(np.testing.assert_array_equal, loaded, theta)
