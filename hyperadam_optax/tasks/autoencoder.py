"""An MLP autoencoder on scikit-learn's 8x8 digits: reconstruct the image through a bottleneck.

``64 - hidden... - 64``; the last layer's outputs go through a sigmoid (pixels are in [0, 1])
and the loss is the mean squared reconstruction error over pixels and the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hyperadam_optax.tasks.base import TaskFamily
from hyperadam_optax.tasks.mlp import init_mlp, mlp_logits


def digits_autoencoder(*, hidden: tuple[int, ...] = (32, 8, 32), activation: str = "softplus",
                       batch_size: int = 128, init_std: float = 0.1) -> TaskFamily:
    from hyperadam_optax.tasks.data import load_digits

    x = jnp.asarray(load_digits().x)
    sizes = (x.shape[1], *hidden, x.shape[1])

    def sample_batch(key, task):
        return x[jax.random.randint(key, (batch_size,), 0, x.shape[0])]

    def loss(params, batch, task):
        return jnp.mean(jnp.square(jax.nn.sigmoid(mlp_logits(params, batch, activation)) - batch))

    return TaskFamily(
        name=f"digits-autoencoder-{activation}-{'-'.join(map(str, sizes))}-std{init_std:g}",
        sample_task=lambda key: {},
        init=lambda key, task: init_mlp(key, sizes, init_std),
        sample_batch=sample_batch,
        loss=loss,
    )
