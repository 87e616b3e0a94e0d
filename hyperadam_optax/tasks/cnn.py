"""Convolutional optimizees as task families: the paper's MNIST CNNs (Fig. 6) and a digits one.

CNN-1 is c-c-p-f and CNN-2 c-c-p-c-c-p-f-f: 3x3 "SAME" convolutions with ReLU, 2x2 max-pool
with stride 2, CNN-2's hidden fully connected layer of 64 units; weights ~ N(0, 0.1²).
Channels: 16 then 32 (reference notes); in CNN-2 each pair of convolutions shares its width
(16, 16, then 32, 32): a guess, the notes give only "16 then 32". ``digits`` is c-p-c-p-f
(8 then 16 channels, 1,898 parameters) on scikit-learn's 8x8 digits, a cheap meta-training task.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from hyperadam_optax.tasks.base import TaskFamily

ARCHITECTURES = {
    # (conv channels per block, fully connected hidden units)
    "cnn1": (((16, 32),), ()),
    "cnn2": (((16, 16), (32, 32)), (64,)),
    "digits": (((8,), (16,)), ()),
}


def _conv(x, w, b):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + b[None, None, None, :]


def _max_pool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def init_cnn(key, architecture: str = "cnn1", std: float = 0.1, n_classes: int = 10,
             side: int = 28) -> dict:
    """Weights and biases ``~ N(0, std²)`` for ``side x side`` one-channel images."""
    blocks, hidden = ARCHITECTURES[architecture]
    params, c_in, size, i = {}, 1, side, 0
    keys = iter(jax.random.split(key, 64))
    for block in blocks:
        for c_out in block:
            params[f"conv{i}"] = {"w": std * jax.random.normal(next(keys), (3, 3, c_in, c_out)),
                                  "b": std * jax.random.normal(next(keys), (c_out,))}
            c_in, i = c_out, i + 1
        size //= 2
    n_in = size * size * c_in
    for j, n_out in enumerate((*hidden, n_classes)):
        params[f"fc{j}"] = {"w": std * jax.random.normal(next(keys), (n_in, n_out)),
                            "b": std * jax.random.normal(next(keys), (n_out,))}
        n_in = n_out
    return params


def cnn_logits(params: dict, images: jax.Array, architecture: str = "cnn1") -> jax.Array:
    """``images``: (batch, side²) in [0, 1], square."""
    blocks, hidden = ARCHITECTURES[architecture]
    side = math.isqrt(images.shape[-1])
    x = images.reshape(-1, side, side, 1)
    i = 0
    for block in blocks:
        for _ in block:
            x = jax.nn.relu(_conv(x, params[f"conv{i}"]["w"], params[f"conv{i}"]["b"]))
            i += 1
        x = _max_pool(x)
    x = x.reshape(x.shape[0], -1)
    n_fc = len(hidden) + 1
    for j in range(n_fc):
        x = x @ params[f"fc{j}"]["w"] + params[f"fc{j}"]["b"][None, :]
        if j < n_fc - 1:
            x = jax.nn.relu(x)
    return x


def mnist_cnn(x, y, *, architecture: str = "cnn1", batch_size: int = 128,
              init_std: float = 0.1) -> TaskFamily:
    """The CNN ``architecture`` on square images ``x`` (rows of ``side²`` pixels), labels ``y``."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, "
                         f"got {architecture!r}")
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
        raise ValueError(f"images must be square: rows of side² pixels, got {x.shape[1]}")
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)

    def sample_batch(key, task):
        idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
        return x[idx], y[idx]

    def loss(params, batch, task):
        logits = cnn_logits(params, batch[0], architecture)
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

    dataset = "mnist" if side == 28 else f"{side}x{side}"
    return TaskFamily(name=f"{dataset}-{architecture}-std{init_std:g}-n{x.shape[0]}",
                      sample_task=lambda key: {},
                      init=lambda key, task: init_cnn(key, architecture, init_std, side=side),
                      sample_batch=sample_batch, loss=loss,
                      logits=lambda params, images: cnn_logits(params, images, architecture))


def digits_cnn(*, batch_size: int = 128, init_std: float = 0.1) -> TaskFamily:
    """The ``digits`` convnet (c-p-c-p-f) on scikit-learn's 1,797 8x8 digits."""
    from hyperadam_optax.tasks.data import load_digits

    d = load_digits()
    return mnist_cnn(d.x, d.y, architecture="digits", batch_size=batch_size, init_std=init_std)
