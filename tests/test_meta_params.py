"""Meta-parameter initialisation, validation, file format and the pretrained loader."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import hyperadam_optax as ha


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


def test_unknown_init():
    with pytest.raises(ValueError, match="'paper' or 'adam'"):
        ha.init_meta_params(jax.random.key(0), 20, "glorot")


def test_shape_disagreement_named():
    mp = ha.init_meta_params(jax.random.key(0), 20)
    bad = mp._replace(theta_q=jnp.zeros((10, 10)))
    with pytest.raises(ValueError, match=r"theta_q: expected \(20, 20\), found \(10, 10\)"):
        ha.scale_by_hyperadam(bad)


def test_save_load_roundtrip(tmp_path):
    mp = ha.init_meta_params(jax.random.key(3), 7)
    path = tmp_path / "theta.npz"
    ha.save_meta_params(path, mp, {"steps": 12, "note": "test"})
    loaded, meta = ha.load_meta_params(path, with_metadata=True)
    assert isinstance(loaded, ha.HyperAdamParams) and meta == {"steps": 12, "note": "test"}
    jax.tree.map(np.testing.assert_array_equal, loaded, mp)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_load_rejects_wrong_shapes(tmp_path):
    mp = ha.init_meta_params(jax.random.key(3), 7)
    path = tmp_path / "theta.npz"
    ha.save_meta_params(path, mp)
    with np.load(path) as data:
        arrays = dict(data)
    arrays["theta_r"] = np.zeros((3, 3), np.float32)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"expected shapes.*'theta_r': \(14, 7\)"):
        ha.load_meta_params(path)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04garbage"])
def test_load_rejects_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a readable meta-parameter"):
        ha.load_meta_params(path)


def test_load_refuses_pickled_objects(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, theta_u=np.array([object()], dtype=object))
    with pytest.raises(ValueError):
        ha.load_meta_params(path)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not a readable"):
        ha.load_meta_params(tmp_path / "absent.npz")
