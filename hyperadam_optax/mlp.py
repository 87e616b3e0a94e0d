"""The paper's MLP optimizee (784-20-10 sigmoid by default) as pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax

ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "tanh": jnp.tanh,
    # Not in the paper's tables: validation and meta-training MLPs (tasks.VALIDATION_ACTIVATIONS).
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "gelu": jax.nn.gelu,
    "leaky_relu": lambda x: jax.nn.leaky_relu(x, 0.1),
}


def init_mlp(key: jax.Array, sizes: Sequence[int] = (784, 20, 10), std: float = 0.1) -> dict:
    """Weights and biases ``~ N(0, std²)`` (the authors' code uses std 0.1 for both)."""
    params = {}
    keys = jax.random.split(key, 2 * (len(sizes) - 1))
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"layer{i}"] = {
            "w": std * jax.random.normal(keys[2 * i], (n_in, n_out)),
            "b": std * jax.random.normal(keys[2 * i + 1], (n_out,)),
        }
    return params


def mlp_logits(params: dict, x: jax.Array, activation: str = "sigmoid") -> jax.Array:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    act = ACTIVATIONS[activation]
    n_layers = len(params)
    for i in range(n_layers):
        layer = params[f"layer{i}"]
        x = x @ layer["w"] + layer["b"][None, :]
        if i < n_layers - 1:
            x = act(x)
    return x


def mlp_loss(params: dict, x: jax.Array, y: jax.Array, activation: str = "sigmoid") -> jax.Array:
    """Mean softmax cross-entropy over the batch."""
    logits = mlp_logits(params, x, activation)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
