"""A recurrent classifier: an LSTM reads an 8x8 digit row by row (8 steps of 8 pixels) and a
dense layer on its last hidden state predicts the class (softmax cross-entropy)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from hyperadam_optax.optimizers.lstm import lstm_step
from hyperadam_optax.tasks.base import TaskFamily


def digits_rows_lstm(*, hidden: int = 16, batch_size: int = 64,
                     init_std: float = 0.1) -> TaskFamily:
    from hyperadam_optax.tasks.data import load_digits

    d = load_digits()
    x, y = jnp.asarray(d.x).reshape(-1, 8, 8), jnp.asarray(d.y)

    def init(key, task):
        k = jax.random.split(key, 4)
        return {"lstm": {"kernel": init_std * jax.random.normal(k[0], (8 + hidden, 4 * hidden)),
                         "bias": init_std * jax.random.normal(k[1], (4 * hidden,))},
                "out": {"w": init_std * jax.random.normal(k[2], (hidden, 10)),
                        "b": init_std * jax.random.normal(k[3], (10,))}}

    def logits(params, images):
        zeros = jnp.zeros((images.shape[0], hidden), images.dtype)

        def step(carry, row):
            return lstm_step(row, *carry, params["lstm"]["kernel"], params["lstm"]["bias"]), None

        (h, _), _ = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(images, 0, 1))
        return h @ params["out"]["w"] + params["out"]["b"][None, :]

    def sample_batch(key, task):
        idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
        return x[idx], y[idx]

    def loss(params, batch, task):
        images, labels = batch
        return optax.softmax_cross_entropy_with_integer_labels(logits(params, images), labels).mean()

    return TaskFamily(name=f"digits-rows-lstm-{hidden}-std{init_std:g}-b{batch_size}",
                      sample_task=lambda key: {}, init=init, sample_batch=sample_batch, loss=loss,
                      logits=lambda params, inputs: logits(params, inputs.reshape(-1, 8, 8)))
