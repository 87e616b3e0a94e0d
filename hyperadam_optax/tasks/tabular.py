"""Real tabular data sets that ship inside scikit-learn (no download) as task families.

``breast_cancer`` (569 x 30, two classes), ``wine`` (178 x 13, three classes) and
``diabetes`` (442 x 10, a regression target): features standardised to mean 0 and variance 1
over the data set, the regression target too. Minibatches are drawn on device with
replacement. Classifiers are MLPs of :mod:`~hyperadam_optax.tasks.mlp` (``hidden=()`` is
multinomial logistic regression, a convex task); the regressor is an MLP with one output
scored by the mean squared error.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hyperadam_optax.tasks.base import TaskFamily
from hyperadam_optax.tasks.data import Dataset
from hyperadam_optax.tasks.mlp import init_mlp, mlp_logits, mlp_loss

#: name -> (scikit-learn loader, "classification" or "regression")
TABULAR = {"breast_cancer": ("load_breast_cancer", "classification"),
           "wine": ("load_wine", "classification"),
           "diabetes": ("load_diabetes", "regression")}


@functools.cache
def load_tabular(name: str) -> Dataset:
    """Standardised features (float32) and labels (int32) or standardised targets (float32)."""
    if name not in TABULAR:
        raise ValueError(f"unknown tabular data set {name!r}; expected one of {sorted(TABULAR)}")
    try:
        from sklearn import datasets
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"the {name} data needs scikit-learn: pip install 'hyperadam-optax[data]'") from e
    loader, kind = TABULAR[name]
    x, y = getattr(datasets, loader)(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    if kind == "regression":
        return Dataset(x.astype(np.float32), ((y - y.mean()) / y.std()).astype(np.float32))
    return Dataset(x.astype(np.float32), y.astype(np.int32))


def _batches(x, y, batch_size: int):
    def sample_batch(key, task):
        idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
        return x[idx], y[idx]

    return sample_batch


def tabular_classifier(name: str, *, hidden: tuple[int, ...] = (), activation: str = "relu",
                       batch_size: int = 32, init_std: float = 0.1) -> TaskFamily:
    """Softmax cross-entropy of an MLP ``features-hidden-classes`` on data set ``name``."""
    if TABULAR.get(name, (None, None))[1] != "classification":
        raise ValueError(f"{name!r} is not a classification data set of {sorted(TABULAR)}")
    d = load_tabular(name)
    x, y = jnp.asarray(d.x), jnp.asarray(d.y)
    sizes = (x.shape[1], *hidden, int(d.y.max()) + 1)
    return TaskFamily(
        name=(f"{name}-{f'mlp-{activation}' if hidden else 'logistic'}-"
              f"{'-'.join(map(str, sizes))}-std{init_std:g}-b{batch_size}"),
        sample_task=lambda key: {},
        init=lambda key, task: init_mlp(key, sizes, init_std),
        sample_batch=_batches(x, y, batch_size),
        loss=lambda params, batch, task: mlp_loss(params, *batch, activation),
        logits=lambda params, inputs: mlp_logits(params, inputs, activation),
    )


def tabular_regression(name: str, *, hidden: tuple[int, ...] = (32,), activation: str = "tanh",
                       batch_size: int = 32, init_std: float = 0.1) -> TaskFamily:
    """Mean squared error of an MLP ``features-hidden-1`` on the regression data set ``name``."""
    if TABULAR.get(name, (None, None))[1] != "regression":
        raise ValueError(f"{name!r} is not a regression data set of {sorted(TABULAR)}")
    d = load_tabular(name)
    x, y = jnp.asarray(d.x), jnp.asarray(d.y)
    sizes = (x.shape[1], *hidden, 1)

    def loss(params, batch, task):
        inputs, targets = batch
        return jnp.mean(jnp.square(mlp_logits(params, inputs, activation)[:, 0] - targets))

    return TaskFamily(
        name=f"{name}-regression-{activation}-{'-'.join(map(str, sizes))}-std{init_std:g}-b{batch_size}",
        sample_task=lambda key: {},
        init=lambda key, task: init_mlp(key, sizes, init_std),
        sample_batch=_batches(x, y, batch_size),
        loss=loss,
    )
