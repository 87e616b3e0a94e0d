"""RNNprop (Lv, Jiang & Li, ICML 2017) as an optax gradient transformation."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hyperadam_optax.optimizers.blocks import by_blocks, resolve_block_rows
from hyperadam_optax.optimizers.coordinatewise import (
    check_float_leaves,
    check_meta_params,
    check_number,
    check_same_structure,
    compute_dtype,
    map_leaves,
    state_dtype_for,
    zeros_state,
)
from hyperadam_optax.optimizers.lstm import (
    init_two_layer_lstm_output,
    trailing,
    truncated_normal,
    two_layer_lstm_output,
)
from hyperadam_optax.optimizers.spec import OptimizerSpec, TrainingRecipe, require_meta_params


class RNNpropParams(NamedTuple):
    """Meta-parameters of RNNprop; hidden size H = ``b_in.shape[0]`` (20 in the paper).

    Attributes:
      theta_in, b_in: ``(2, H)``, ``(H,)``: input layer, ``x = ELU([g/sv, m̂/sv] θ_in + b_in)``.
      theta_h1, b_h1: ``(2H, 4H)``, ``(4H,)``: first LSTM layer on ``[x, h1]``, gates (i, g, f, o).
      theta_h2, b_h2: ``(2H, 4H)``, ``(4H,)``: second LSTM layer on ``[h1, h2]``.
      theta_out, b_out: ``(H, 1)``, ``(1,)``: output layer, ``out = h2 θ_out + b_out``.
    """

    theta_in: jax.Array
    b_in: jax.Array
    theta_h1: jax.Array
    b_h1: jax.Array
    theta_h2: jax.Array
    b_h2: jax.Array
    theta_out: jax.Array
    b_out: jax.Array


def rnnprop_shapes(hidden: int) -> dict[str, tuple[int, ...]]:
    h = hidden
    return {"theta_in": (2, h), "b_in": (h,), "theta_h1": (2 * h, 4 * h), "b_h1": (4 * h,),
            "theta_h2": (2 * h, 4 * h), "b_h2": (4 * h,), "theta_out": (h, 1), "b_out": (1,)}


def init_rnnprop_meta_params(key: jax.Array, hidden: int = 20, init: str = "paper", *,
                             dtype=jnp.float32) -> RNNpropParams:
    """The RNNprop authors' initialisation: dense layers truncated normal (std 0.1) with zero
    bias; LSTM kernels Glorot-uniform (TensorFlow's default), forget bias 1, other biases 0."""
    k = jax.random.split(key, 4)
    core = init_two_layer_lstm_output(k[1:], hidden, hidden, init, dtype)
    return RNNpropParams(theta_in=truncated_normal(k[0], (2, hidden), dtype),
                         b_in=jnp.zeros((hidden,), dtype), **core)


class RNNpropState(NamedTuple):
    """``count``; Adam moments ``m``, ``v`` (param-shaped); the two LSTM layers' states
    ``h1, c1, h2, c2`` of shape ``param.shape + (H,)``."""

    count: jax.Array
    m: Any
    v: Any
    h1: Any
    c1: Any
    h2: Any
    c2: Any


def scale_by_rnnprop(meta_params: RNNpropParams, *, b1: float = 0.95, b2: float = 0.95,
                     eps: float = 1e-8, output_scale: float = 0.1, state_dtype: Any = None,
                     block_rows: int | None = None) -> optax.GradientTransformationExtraArgs:
    r"""RNNprop's direction ``d_t = output_scale · tanh(out_t)`` (paper Eq. 8-10, authors' code).

    Per coordinate: :math:`m_t = b_1 m_{t-1} + (1-b_1) g`, :math:`v_t = b_2 v_{t-1} + (1-b_2) g^2`,
    :math:`s_v = \sqrt{v_t / (1-b_2^t)} + \epsilon`, inputs
    :math:`[g / s_v, (m_t / (1-b_1^t)) / s_v]` → ELU dense → two LSTM layers → dense → tanh.
    The paper's update is ``w -= 0.1 · tanh(out)``: :func:`rnnprop` with ``learning_rate=1``.
    ``block_rows``: a leaf of at least 8 blocks of this many coordinates is updated block by
    block, in place (:mod:`~hyperadam_optax.optimizers.blocks`; the same arithmetic); ``None``:
    8,192 in a single-device CPU process, else 0 (off).
    """
    hidden = check_meta_params(meta_params, RNNpropParams, "b_in", rnnprop_shapes)
    for name, value in (("b1", b1), ("b2", b2)):
        check_number(value, name, 0.0, 1.0, open_low=False, open_high=True)
    check_number(eps, "eps", 0.0, 1.0)
    check_number(output_scale, "output_scale", 0.0, float("inf"), open_high=True)
    resolve_block_rows(block_rows)  # refuse a bad value now; the default is read at trace time
    mp = meta_params

    def init_fn(params):
        check_float_leaves(params, "RNNprop params")

        def fields(p):
            dt = state_dtype_for(p, state_dtype)
            return (zeros_state(p, None, dt), zeros_state(p, None, dt),
                    *(zeros_state(p, hidden, dt) for _ in range(4)))

        return RNNpropState(jnp.zeros([], jnp.int32), *map_leaves(fields, 6, params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_same_structure(updates, state.m, "gradients", "RNNprop state (from init)")
        check_float_leaves(updates, "RNNprop gradients")
        count = optax.safe_increment(state.count)

        def leaf(g, m, v, h1, c1, h2, c2):
            cdt = compute_dtype([m.dtype], mp)
            w = jax.tree.map(lambda x: x.astype(cdt), mp)
            t = count.astype(cdt)
            gf = g.astype(cdt)  # leaf-shaped throughout: shardings are kept
            m_new = b1 * m.astype(cdt) + (1 - b1) * gf
            v_new = b2 * v.astype(cdt) + (1 - b2) * jnp.square(gf)
            sv = jnp.sqrt(v_new / (1 - b2**t)) + eps
            inputs = jnp.stack([gf / sv, (m_new / (1 - b1**t)) / sv], axis=-1)
            x = jax.nn.elu(inputs @ w.theta_in + trailing(w.b_in, inputs.ndim))
            out, states = two_layer_lstm_output(
                x, *(a.astype(cdt) for a in (h1, c1, h2, c2)), w)
            d = output_scale * jnp.tanh(out)
            sd = m.dtype
            return (d.astype(g.dtype), m_new.astype(sd), v_new.astype(sd),
                    *(a.astype(sd) for a in states))

        leaf = by_blocks(leaf, resolve_block_rows(block_rows))
        d, *fields = map_leaves(leaf, 7, updates, *state[1:])
        return d, RNNpropState(count, *fields)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def rnnprop(learning_rate: optax.ScalarOrSchedule = 1.0, meta_params: RNNpropParams | None = None,
            *, b1: float = 0.95, b2: float = 0.95, eps: float = 1e-8, output_scale: float = 0.1,
            state_dtype: Any = None, block_rows: int | None = None
            ) -> optax.GradientTransformationExtraArgs:
    """RNNprop: ``w -= learning_rate · 0.1 · tanh(out)``; ``learning_rate = 1`` is the paper's step.

    ``learning_rate`` multiplies the paper's own scale (``output_scale=0.1``), so the largest
    step per coordinate is ``0.1 · learning_rate``. ``meta_params`` is required here
    (``hyperadam_optax.rnnprop`` loads the shipped weights when it is ``None``). Other
    arguments: :func:`scale_by_rnnprop`.
    """
    require_meta_params(meta_params, "rnnprop")
    return optax.chain(scale_by_rnnprop(meta_params, b1=b1, b2=b2, eps=eps, output_scale=output_scale,
                                        state_dtype=state_dtype, block_rows=block_rows),
                       optax.scale_by_learning_rate(learning_rate))


#: RNNprop in the optimizer registry: the paper's step (``learning_rate=1``), hidden 20; its
#: authors' recipe (Random Scaling + convex MNIST problem, last loss of a truncation, 1e-4).
SPEC = OptimizerSpec(
    name="rnnprop",
    params_type=RNNpropParams,
    size_field="b_in",
    shapes=rnnprop_shapes,
    init_meta_params=init_rnnprop_meta_params,
    make=rnnprop,
    default_learning_rate=1.0,
    recipe=TrainingRecipe(task="mnist-mlp-rs", meta_loss="last", meta_lr=1e-4),
)
