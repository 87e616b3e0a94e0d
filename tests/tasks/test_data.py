"""The embedded data (real MNIST-5k, digits) and full MNIST from a user's files."""

import gzip

import numpy as np
import pytest

from hyperadam_optax.tasks.data import load_digits, load_mnist_5k, load_mnist_dir


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


def test_embedded_mnist_is_real_mnist():
    d = load_mnist_5k()
    assert d.x.shape == (5000, 784) and d.x.dtype == np.float32
    assert 0.0 == d.x.min() and d.x.max() == 1.0
    assert sorted(np.unique(d.y)) == list(range(10))
    # MNIST digits: about 19% of pixels are ink, the border is blank.
    assert 0.1 < float((d.x > 0.5).mean()) < 0.3
    assert float(d.x.reshape(-1, 28, 28)[:, 0, :].max()) == 0.0


def test_digits():
    d = load_digits()
    assert d.x.shape == (1797, 64) and d.x.max() == 1.0
