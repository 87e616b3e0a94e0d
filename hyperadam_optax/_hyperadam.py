"""HyperAdam as an optax gradient transformation (Wang, Sun & Xu, AAAI 2019, Alg. 2)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hyperadam_optax._coordinatewise import compute_dtype, state_dtype_for, zeros_state
from hyperadam_optax._lstm import lstm_step, sigmoid, split_columns
from hyperadam_optax._meta_params import HyperAdamParams, num_candidates
from hyperadam_optax._tree_checks import check_float_leaves, check_same_structure

#: Added inside the square root of every global norm (the authors' later PyTorch port).
NORM_EPS = 1e-16


class HyperAdamState(NamedTuple):
    """Per-coordinate state of HyperAdam.

    Every field but ``count`` is a pytree like the params whose leaves have shape
    ``param.shape + (J,)``: one entry per candidate.

    Attributes:
      count: number of updates so far (int32 scalar).
      m, v: first and second moments of each candidate (Alg. 2 lines 11-12).
      beta_hat, gamma_hat: running bias corrections (lines 13-14; ``1 - β^t`` for
        constant ``β``, Lemma 1).
      h, c: StateCell LSTM hidden state ``s_t`` and cell state (line 8).
    """

    count: jax.Array
    m: Any
    v: Any
    beta_hat: Any
    gamma_hat: Any
    h: Any
    c: Any


def _flat_leaves(updates, state: HyperAdamState):
    """Gradient leaves, their treedef and the state's per-leaf fields (m, v, β̂, γ̂, h, c)."""
    grads, treedef = jax.tree.flatten(updates)
    return grads, treedef, [treedef.flatten_up_to(x) for x in state[1:]]


def _flat(x, j: int):
    return x.reshape(-1, j)


def scale_by_hyperadam(
    meta_params: HyperAdamParams,
    *,
    eps: float = 1e-24,
    state_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""HyperAdam's search direction :math:`d_t` (Alg. 2 line 18).

    For every coordinate, with J candidates (``J = meta_params.b_u.shape[0]``):

    .. math::
      s_t, c_t &= \mathrm{LSTM}(\mathrm{ELU}(\theta_p\, g_t/\lVert g_t\rVert + b_p), s_{t-1}, c_{t-1})\\
      \beta_t &= \sigma([\mathrm{nrm}(m_{t-1}), \mathrm{nrm}(s_t)]\theta_u + b_u),\quad
      \gamma_t = \sigma([\mathrm{nrm}(m_{t-1}), \mathrm{nrm}(s_t)]\theta_r + b_r)\\
      m_t &= \beta_t m_{t-1} + (1-\beta_t) g_t,\quad v_t = \gamma_t v_{t-1} + (1-\gamma_t) g_t^2\\
      \hat\beta_t &= \beta_t\hat\beta_{t-1} + 1 - \beta_t,\quad
      \hat\gamma_t = \gamma_t\hat\gamma_{t-1} + 1 - \gamma_t\\
      \hat m_t &= \frac{m_t/(\hat\beta_t+\epsilon)}{\sqrt{v_t/(\hat\gamma_t+\epsilon)+\epsilon}},\quad
      \rho_t = \mathrm{ELU}(s_t\theta_q + b_q),\quad d_t = \textstyle\sum_j \rho^j_t \hat m^j_t

    ``‖g_t‖`` and ``nrm`` (each of the J columns divided by its Euclidean norm) are
    GLOBAL: they reduce over every coordinate of every leaf the transform sees, with
    ``1e-16`` added under the square root. Inside ``optax.partition`` or ``optax.masked``
    the transform only sees its own subset of leaves, so the norms are over that subset.
    Placement of ε follows the authors' code (``ε = 1e-24``).

    Args:
      meta_params: the meta-parameters Θ (:class:`HyperAdamParams`).
      eps: ε of the candidate update.
      state_dtype: dtype of the per-coordinate state; default: the parameter's dtype
        promoted to at least float32. The maths runs in at least float32.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; extra arguments are ignored.
    """
    j = num_candidates(meta_params)

    def init_fn(params):
        check_float_leaves(params, "HyperAdam params")

        def zeros(p):
            return zeros_state(p, j, state_dtype_for(p, state_dtype))

        # Six separate buffers (not one shared), so the state can be donated to jit.
        return HyperAdamState(jnp.zeros([], jnp.int32),
                              *(jax.tree.map(zeros, params) for _ in range(6)))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_same_structure(updates, state.m, "gradients", "HyperAdam state (from init)")
        check_float_leaves(updates, "HyperAdam gradients")
        grads, treedef, fields = _flat_leaves(updates, state)
        new_leaves = _hyperadam_step(meta_params, grads, *fields, eps=eps)
        d, *new_fields = (jax.tree.unflatten(treedef, leaves) for leaves in new_leaves)
        new_state = HyperAdamState(optax.safe_increment(state.count), *new_fields)
        return d, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _hyperadam_step(mp: HyperAdamParams, grads, ms, vs, bhs, ghs, hs, cs, *, eps,
                    internals: bool = False):
    """One step of Alg. 2 on lists of leaves; returns lists (d, m, v, β̂, γ̂, h, c), and with
    ``internals=True`` also lists (β, γ, ρ) of shape ``leaf.shape + (J,)``."""
    j = mp.b_u.shape[0]
    state_dtypes = [m.dtype for m in ms]
    cdt = compute_dtype(state_dtypes, mp)
    mp = jax.tree.map(lambda x: x.astype(cdt), mp)
    g = [x.astype(cdt).reshape(-1) for x in grads]
    m, v, bh, gh, h, c = ([_flat(x.astype(cdt), j) for x in xs]
                          for xs in (ms, vs, bhs, ghs, hs, cs))

    def sum_sq(xs, axis=None):
        return sum(jnp.sum(jnp.square(x), axis=axis) for x in xs)

    # StateCell (line 8): global gradient normalisation, ELU preprocessing, LSTM.
    inv_gnorm = jax.lax.rsqrt(sum_sq(g) + NORM_EPS)
    lstm = [
        lstm_step(jax.nn.elu((gi * inv_gnorm)[:, None] * mp.theta_p + mp.b_p[None, :]),
                  hi, ci, mp.theta_h, mp.b_h)
        for gi, hi, ci in zip(g, h, c)
    ]
    s = [hc[0] for hc in lstm]

    # AdamCell decay rates (Eq. 4-5) and WeightCell (Eq. 6). The column normalisation
    # nrm(a) = a / ||a[:, j]|| is folded into the kernels' rows, and θ_u, θ_r, θ_q share
    # two fused matmuls: m @ [θ_u|θ_r]_m and s @ [θ_u|θ_r|θ_q]_s.
    rm = jax.lax.rsqrt(sum_sq(m, axis=0) + NORM_EPS)
    rs = jax.lax.rsqrt(sum_sq(s, axis=0) + NORM_EPS)
    theta_ur = jnp.concatenate([mp.theta_u, mp.theta_r], axis=1)
    w_m = theta_ur[:j] * rm[:, None]
    w_s = jnp.concatenate([theta_ur[j:] * rs[:, None], mp.theta_q], axis=1)
    b_s = jnp.concatenate([mp.b_u, mp.b_r, mp.b_q])[None, :]

    out = [[] for _ in range(10 if internals else 7)]
    for idx, (gi, mi, vi, bhi, ghi, si, (_, ci)) in enumerate(zip(g, m, v, bh, gh, s, lstm)):
        pre_m = mi @ w_m
        pre_s = si @ w_s + b_s
        pm_beta, pm_gamma = split_columns(pre_m, 2)
        ps_beta, ps_gamma, ps_rho = split_columns(pre_s, 3)
        beta = sigmoid(pm_beta + ps_beta)
        gamma = sigmoid(pm_gamma + ps_gamma)
        rho = jax.nn.elu(ps_rho)
        gcol = gi[:, None]
        # Moments and bias corrections from the RAW gradient (lines 11-14).
        mi = beta * mi + (1 - beta) * gcol
        vi = gamma * vi + (1 - gamma) * jnp.square(gcol)
        bhi = beta * bhi + (1 - beta)
        ghi = gamma * ghi + (1 - gamma)
        # Candidates (lines 15-16) combined by the weight field (line 18).
        m_hat = (mi / (bhi + eps)) * jax.lax.rsqrt(vi / (ghi + eps) + eps)
        d = jnp.sum(rho * m_hat, axis=-1)
        shape = grads[idx].shape
        out[0].append(d.reshape(shape).astype(grads[idx].dtype))
        for k, x in enumerate((mi, vi, bhi, ghi, si, ci), start=1):
            out[k].append(x.reshape(shape + (j,)).astype(state_dtypes[idx]))
        if internals:
            for k, x in enumerate((beta, gamma, rho), start=7):
                out[k].append(x.reshape(shape + (j,)))
    return out


def hyperadam_internals(meta_params: HyperAdamParams, updates, state: HyperAdamState,
                        *, eps: float = 1e-24) -> dict:
    """The decay rates and weights HyperAdam uses in the step from ``state`` on ``updates``.

    Returns ``{"beta": β_t, "gamma": γ_t, "rho": ρ_t}`` (Alg. 2 lines 9, 10, 17), each a
    pytree like ``updates`` with leaves of shape ``leaf.shape + (J,)``: what the learned
    optimizer decides per coordinate and candidate. ``state`` is the state of
    :func:`scale_by_hyperadam` (``opt_state[0]`` of :func:`hyperadam`).
    """
    grads, treedef, fields = _flat_leaves(updates, state)
    *_, beta, gamma, rho = _hyperadam_step(meta_params, grads, *fields, eps=eps, internals=True)
    return {k: jax.tree.unflatten(treedef, v) for k, v in
            (("beta", beta), ("gamma", gamma), ("rho", rho))}


def hyperadam(
    learning_rate: optax.ScalarOrSchedule = 0.005,
    meta_params: HyperAdamParams | None = None,
    *,
    eps: float = 1e-24,
    state_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """HyperAdam: ``w_t = w_{t-1} - α d_t`` (Alg. 2 line 19).

    ``optax.chain(scale_by_hyperadam(meta_params, ...), optax.scale_by_learning_rate(α))``.

    Args:
      learning_rate: α, a float or an optax schedule (the paper uses 0.005).
      meta_params: the meta-parameters Θ; ``None`` loads the pretrained weights shipped in
        the package and raises :class:`~hyperadam_optax.PretrainedWeightsUnavailableError`
        if there are none. Random weights are never used silently.
      eps, state_dtype: see :func:`scale_by_hyperadam`.
    """
    if meta_params is None:
        from hyperadam_optax._pretrained import load_pretrained

        meta_params = load_pretrained("hyperadam")
    return optax.chain(
        scale_by_hyperadam(meta_params, eps=eps, state_dtype=state_dtype),
        optax.scale_by_learning_rate(learning_rate),
    )
