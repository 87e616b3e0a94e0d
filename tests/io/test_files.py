"""Meta-parameter files: round trip, refused shapes, corrupt files, no pickle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hyperadam_optax as ha


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


def test_not_an_npz_archive_is_named(tmp_path):
    theta = ha.init_meta_params(jax.random.key(0), 3)
    npy = tmp_path / "weights.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match="expected an .npz .zip. archive, found a .npy array"):
        ha.load_meta_params(npy)
    noise = tmp_path / "noise.npz"
    noise.write_bytes(np.random.default_rng(0).bytes(256))
    with pytest.raises(ValueError, match="not a zip archive"):
        ha.load_meta_params(noise)
    nan = tmp_path / "nan.npz"
    ha.save_meta_params(nan, theta)  # save refuses NaN: written around it, as a bad file would be
    with np.load(nan) as data:
        arrays = dict(data)
    arrays["b_u"][1] = np.nan
    np.savez(nan, **arrays)
    with pytest.raises(ValueError, match=r"fields \['b_u'\] of HyperAdamParams hold NaN"):
        ha.load_meta_params(nan)


def test_save_refuses_what_load_would_refuse_and_names_the_users_path(tmp_path):
    mp = ha.init_meta_params(jax.random.key(3), 7)
    with pytest.raises(ValueError, match=r"fields \['b_q'\] of HyperAdamParams are not finite"):
        ha.save_meta_params(tmp_path / "nan.npz", mp._replace(b_q=mp.b_q * jnp.nan))
    with pytest.raises(ValueError, match=rf"cannot save to {tmp_path}: it is a directory"):
        ha.save_meta_params(tmp_path, mp)
    with pytest.raises(ValueError, match="no directory"):
        ha.save_meta_params(tmp_path / "missing" / "theta.npz", mp)
    with pytest.raises(ValueError, match=r"expected shapes.*'b_q': \(7,\)"):
        ha.save_meta_params(tmp_path / "short.npz", mp._replace(b_q=mp.b_q[:3]))
    with pytest.raises(ValueError, match="metadata is not JSON"):
        ha.save_meta_params(tmp_path / "meta.npz", mp, {"when": object()})
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file either
