"""Coordinatewise LSTM cell shared by the learned optimizers.

Every optimizee coordinate runs its own copy of the same small LSTM (the weights are
shared, the state is per coordinate), so the cell works on 2-D arrays of shape
``(n_coordinates, features)`` and its cost is two skinny matmuls per step.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp


def glorot_uniform(key, shape, dtype=jnp.float32) -> jax.Array:
    """Glorot/Xavier uniform on ``U[±sqrt(6 / (fan_in + fan_out))]`` (TensorFlow's default)."""
    limit = math.sqrt(6.0 / (shape[0] + shape[1]))
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def truncated_normal(key, shape, dtype=jnp.float32, std: float = 0.1) -> jax.Array:
    """``std`` times a standard normal truncated at ±2 (TensorFlow's ``truncated_normal``)."""
    return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


def sigmoid(x: jax.Array) -> jax.Array:
    """``σ(x) = (1 + tanh(x / 2)) / 2``: the same function as ``jax.nn.sigmoid`` with one
    transcendental instead of an exp and a division (about 8% faster per HyperAdam update
    on CPU, measured when it was made)."""
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def split_columns(x: jax.Array, parts: int) -> tuple[jax.Array, ...]:
    """``jnp.split(x, parts, axis=-1)`` whose backward is one ``concatenate`` of the parts'
    cotangents (autodiff builds it as a sum of zero-padded arrays, which XLA:CPU evaluates
    several times slower)."""
    return tuple(jnp.split(x, parts, axis=-1))


def _split_columns_fwd(x, parts):
    return split_columns(x, parts), None


def _split_columns_bwd(parts, _, cotangents):
    return (jax.lax.optimization_barrier(jnp.concatenate(cotangents, axis=-1)),)


split_columns.defvjp(_split_columns_fwd, _split_columns_bwd)


def trailing(v: jax.Array, ndim: int) -> jax.Array:
    """``v`` of shape ``(k,)`` as ``(1, ..., 1, k)`` with ``ndim`` axes: an explicit broadcast
    along a trailing axis (works under ``jax_numpy_rank_promotion="raise"``)."""
    return v.reshape((1,) * (ndim - 1) + v.shape)


def leading(v: jax.Array, ndim: int) -> jax.Array:
    """``v`` of shape ``(k,)`` as ``(k, 1, ..., 1)`` with ``ndim`` axes: an explicit broadcast
    along a leading axis."""
    return v.reshape(v.shape + (1,) * (ndim - 1))


def contract_features(w: jax.Array, x: jax.Array) -> jax.Array:
    """``Σ_i w[i] x[i]`` over the leading (feature) axis of ``x``: ``w`` ``(F,)`` or ``(F, M)``
    against ``x`` ``(F, rows...)`` gives ``(rows...)`` or ``(M, rows...)``, for cells computed
    features first (L2O-Scale's: faster on a CPU where its small matmuls dominate)."""
    return jnp.tensordot(w, x, axes=(0, 0))


def lstm_bias_init(hidden: int, forget_bias: float = 1.0, dtype=jnp.float32) -> jax.Array:
    """Gate biases of shape ``(4 * hidden,)``: zero except the forget gate.

    The gate order is ``(i, g, f, o)`` as in TensorFlow's ``LSTMCell``, whose
    ``forget_bias=1.0`` the authors' code used; here it is a learnable initial value.
    """
    b = jnp.zeros((4 * hidden,), dtype)
    return b.at[2 * hidden : 3 * hidden].set(forget_bias)


def lstm_step(
    x: jax.Array,
    h: jax.Array,
    c: jax.Array,
    kernel: jax.Array,
    bias: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """One LSTM step for every coordinate.

    ``z = [x, h] @ kernel + bias`` split into gates ``(i, g, f, o)``;
    ``c' = σ(f) c + σ(i) tanh(g)``, ``h' = σ(o) tanh(c')``.

    Args:
      x: inputs, shape ``(..., d_in)`` (any leading coordinate axes, e.g. a parameter's).
      h, c: hidden and cell state, shape ``(..., H)``.
      kernel: shape ``(d_in + H, 4H)``; the concatenation ``[x, h]`` is never built,
        the kernel is split into its input and recurrent blocks instead.
      bias: shape ``(4H,)``.

    Returns:
      ``(h', c')``, each of shape ``(..., H)``.
    """
    d_in = x.shape[-1]
    z = x @ kernel[:d_in] + h @ kernel[d_in:] + trailing(bias, x.ndim)
    i, g, f, o = split_columns(z, 4)
    c = sigmoid(f) * c + sigmoid(i) * jnp.tanh(g)
    h = sigmoid(o) * jnp.tanh(c)
    return h, c


def two_layer_lstm_output(x, h1, c1, h2, c2, w) -> tuple[jax.Array, tuple]:
    """RNNprop's and the DMoptimizer's shared core: two stacked LSTM layers and a dense output.

    ``w`` has fields ``theta_h1, b_h1, theta_h2, b_h2, theta_out, b_out``; states are
    ``(..., H)``. Returns ``out`` of shape ``(...)`` and the new ``(h1, c1, h2, c2)``.
    """
    h1, c1 = lstm_step(x, h1, c1, w.theta_h1, w.b_h1)
    h2, c2 = lstm_step(h1, h2, c2, w.theta_h2, w.b_h2)
    return (h2 @ w.theta_out)[..., 0] + w.b_out[0], (h1, c1, h2, c2)


def init_two_layer_lstm_output(keys, n_in: int, hidden: int, init: str, dtype) -> dict:
    """The fields of :func:`two_layer_lstm_output` for input width ``n_in``: LSTM kernels
    Glorot-uniform with forget bias 1, output layer truncated normal (std 0.1), zero bias.

    ``keys``: three PRNG keys (first layer, second layer, output layer).
    """
    if init != "paper":
        raise ValueError(f"init must be 'paper', got {init!r}")
    if not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"hidden must be a positive int, got {hidden!r}")
    k_h1, k_h2, k_out = keys
    return {
        "theta_h1": glorot_uniform(k_h1, (n_in + hidden, 4 * hidden), dtype),
        "b_h1": lstm_bias_init(hidden, 1.0, dtype),
        "theta_h2": glorot_uniform(k_h2, (2 * hidden, 4 * hidden), dtype),
        "b_h2": lstm_bias_init(hidden, 1.0, dtype),
        "theta_out": truncated_normal(k_out, (hidden, 1), dtype),
        "b_out": jnp.zeros((1,), dtype),
    }
