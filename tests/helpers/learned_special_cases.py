"""Hand-built meta-parameters with a known behaviour, for tests.

Each LSTM layer is made a monotone pass-through of one unit: input and output gates open
(bias +10), forget gate shut (bias -10), the candidate gate reading one input with weight 1,
so ``h ≈ tanh(tanh(input))``. The output layer then makes the update a sign-preserving,
bounded function of an Adam-like quantity: a descent method whose step is at most the
optimizer's own scale times its learning rate.
"""

import jax.numpy as jnp

import hyperadam_optax as ha


def _pass_through_lstm(n_in: int, hidden: int, source_row: int):
    kernel = jnp.zeros((n_in + hidden, 4 * hidden)).at[source_row, hidden].set(1.0)
    bias = jnp.zeros((4 * hidden,))
    bias = bias.at[:hidden].set(10.0).at[2 * hidden:3 * hidden].set(-10.0)
    bias = bias.at[3 * hidden:].set(10.0)
    return kernel, bias


def rnnprop_descent(hidden: int = 20) -> ha.RNNpropParams:
    """``out = 3 h2_0`` with ``h2_0`` increasing in ``m̂ / sv``: a bounded Adam-sign step."""
    k1, b1 = _pass_through_lstm(hidden, hidden, 0)
    k2, b2 = _pass_through_lstm(hidden, hidden, 0)
    return ha.RNNpropParams(
        theta_in=jnp.zeros((2, hidden)).at[1, 0].set(1.0), b_in=jnp.zeros((hidden,)),
        theta_h1=k1, b_h1=b1, theta_h2=k2, b_h2=b2,
        theta_out=jnp.zeros((hidden, 1)).at[0, 0].set(3.0), b_out=jnp.zeros((1,)))


def dm_descent(hidden: int = 20) -> ha.DMParams:
    """``out = -3 h2_0`` with ``h2_0`` increasing in the sign feature ``clip(g e^5, -1, 1)``:
    sign descent (linear only for ``|g| < e^-5``)."""
    k1, b1 = _pass_through_lstm(2, hidden, 1)
    k2, b2 = _pass_through_lstm(hidden, hidden, 0)
    return ha.DMParams(theta_h1=k1, b_h1=b1, theta_h2=k2, b_h2=b2,
                       theta_out=jnp.zeros((hidden, 1)).at[0, 0].set(-3.0),
                       b_out=jnp.zeros((1,)))


def l2o_scale_decaying_descent(rate: float = 0.005) -> ha.L2OScaleParams:
    """Every RNN weight zero, the shortcut reading the fastest RMS-scaled momentum (decay 0.5,
    ``asinh(a_1 / sqrt(ms_1))``), the log rate falling by ``rate`` per step from
    ``exp(l + c) = 1``: normalised momentum descent whose step length is
    ``learning_rate · e^{-rate·t}`` per unit-RMS direction."""
    import math

    import jax

    zero = jax.tree.map(jnp.zeros_like, ha.init_l2o_scale_meta_params(jax.random.key(0)))
    p = zero.param_cand_b.shape[0]
    return zero._replace(
        param_gate_b=jnp.zeros((2 * p,)).at[p:].set(-10.0),  # u = 0: h follows its input
        shortcut_w=jnp.zeros_like(zero.shortcut_w).at[0].set(1.0),
        lr_b=jnp.array(-rate), ms_decay_b=jnp.array(3.2),
        lr_momentum_logit=jnp.array(-30.0),  # the kept rate is the step's
        lr_offset=jnp.array(-math.log(1e-3)))  # cancels the default initial_log_lr
