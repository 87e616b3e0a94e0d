"""The paper's sine-sequence LSTM optimizee (Table 2) as a task family.

Each example: ``f(x) = A sin(w x + φ)`` with ``A ~ U(0, 10)``, ``w ~ U(0, π/2)``,
``φ ~ U(0, 2π)``; the input sequence is ``f(0), …, f(9)`` plus Gaussian noise (std 0.1, or
0.01 for "small noise"), the target ``f(10)``; an LSTM (hidden 20, one or two layers) reads the
sequence and a dense layer predicts the target; the loss is the mean squared error.
Minibatches are fresh sequences drawn on device. (Reference notes; batch size 128 and the
N(0, 0.1²) initialisation are guesses, as for the MLP.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hyperadam_optax.optimizers.lstm import lstm_step
from hyperadam_optax.tasks.base import TaskFamily


def sine_batch(key: jax.Array, batch_size: int, noise: float, length: int = 10):
    """``(inputs (batch, length), targets (batch,))``."""
    k_a, k_w, k_p, k_n = jax.random.split(key, 4)
    a = jax.random.uniform(k_a, (batch_size, 1), minval=0.0, maxval=10.0)
    w = jax.random.uniform(k_w, (batch_size, 1), minval=0.0, maxval=jnp.pi / 2)
    phi = jax.random.uniform(k_p, (batch_size, 1), minval=0.0, maxval=2 * jnp.pi)
    x = jnp.arange(length + 1, dtype=jnp.float32)[None, :]
    f = a * jnp.sin(w * x + phi)
    inputs = f[:, :length] + noise * jax.random.normal(k_n, (batch_size, length))
    return inputs, f[:, length]


def sine_lstm(*, layers: int = 1, hidden: int = 20, noise: float = 0.1, batch_size: int = 128,
              init_std: float = 0.1) -> TaskFamily:
    """Sine-sequence regression with an LSTM of ``layers`` layers of ``hidden`` units."""

    def init(key, task):
        keys = jax.random.split(key, 2 * layers + 2)
        params = {}
        n_in = 1
        for i in range(layers):
            params[f"lstm{i}"] = {
                "kernel": init_std * jax.random.normal(keys[2 * i], (n_in + hidden, 4 * hidden)),
                "bias": init_std * jax.random.normal(keys[2 * i + 1], (4 * hidden,)),
            }
            n_in = hidden
        params["out"] = {"w": init_std * jax.random.normal(keys[-2], (hidden, 1)),
                         "b": init_std * jax.random.normal(keys[-1], (1,))}
        return params

    def predict(params, inputs):
        batch = inputs.shape[0]
        zeros = jnp.zeros((batch, hidden), inputs.dtype)

        def step(carry, x_t):
            states = list(carry)
            h = x_t[:, None]
            for i in range(layers):
                hi, ci = states[i]
                hi, ci = lstm_step(h, hi, ci, params[f"lstm{i}"]["kernel"],
                                   params[f"lstm{i}"]["bias"])
                states[i] = (hi, ci)
                h = hi
            return tuple(states), None

        carry = tuple((zeros, zeros) for _ in range(layers))
        carry, _ = jax.lax.scan(step, carry, inputs.T)
        h_last = carry[-1][0]
        return (h_last @ params["out"]["w"])[:, 0] + params["out"]["b"][0]

    def loss(params, batch, task):
        inputs, targets = batch
        return jnp.mean(jnp.square(predict(params, inputs) - targets))

    name = (f"sine-lstm{'' if layers == 1 else f'-{layers}layer'}"
            f"{'' if hidden == 20 else f'-hidden{hidden}'}-noise{noise:g}")
    return TaskFamily(
        name=name,
        sample_task=lambda key: {},
        init=init,
        sample_batch=lambda key, task: sine_batch(key, batch_size, noise),
        loss=loss,
    )
