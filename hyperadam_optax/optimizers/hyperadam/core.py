"""HyperAdam's core: Alg. 2 of Wang, Sun & Xu (AAAI 2019) and Eqs. 4-6 as an optax transform.

The meta-parameters Θ (:class:`HyperAdamParams`, their shapes :func:`hyperadam_shapes`), the
state, the direction :func:`scale_by_hyperadam`, the alias :func:`hyperadam` and what a step
decides (:func:`hyperadam_internals`). Initialisations are in
:mod:`~hyperadam_optax.optimizers.hyperadam.init`; research weight rewriters in
:mod:`~hyperadam_optax.optimizers.hyperadam.rewrite` (``hyperadam_optax.contrib``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hyperadam_optax.optimizers.blocks import map_rows_in_place, resolve_block_rows, use_blocks
from hyperadam_optax.optimizers.coordinatewise import (
    check_float_leaves,
    check_meta_params,
    check_number,
    check_same_structure,
    compute_dtype,
    state_dtype_for,
    zeros_state,
)
from hyperadam_optax.optimizers.lstm import lstm_step, sigmoid, split_columns, trailing
from hyperadam_optax.optimizers.spec import require_meta_params


class HyperAdamParams(NamedTuple):
    """Meta-parameters Θ = {Θh, Θu, Θr, Θq} of HyperAdam; J candidates, J = ``b_u.shape[0]``.

    StateCell (Alg. 2 line 8, Fig. 3), with ``ĝ = g / ||g||₂`` over all coordinates:
      ``x = ELU(ĝ θ_p + b_p)``, then ``s_t, c_t = LSTM([x, s_{t-1}]; θ_h, b_h)``.
      With ``sign_agreement=True`` and a second row of ``θ_p`` (our extension, not the
      paper's), the StateCell also reads the gradient's sign agreement ``a_{t-1}``, the
      mean over the J candidates of ``|m̂_{t-1}|`` (Alg. 2 lines 15-16 on the previous
      moments: near 1 where the gradient's sign has held, near 0 where it flips; 0 at the
      first step):
      ``x = ELU(ĝ θ_p[0] + a_{t-1} θ_p[1] + b_p)``
      (``hyperadam_optax.contrib.with_sign_agreement_input``).

    AdamCell decay rates (Eq. 4-5), ``nrm`` normalising each of the J columns over all
    coordinates: ``β_t = σ([nrm(m_{t-1}), nrm(s_t)] θ_u + b_u)``,
    ``γ_t = σ([nrm(m_{t-1}), nrm(s_t)] θ_r + b_r)``.

    WeightCell (Eq. 6): ``ρ_t = ELU(s_t θ_q + b_q)``.

    Attributes:
      theta_p: ``(1, J)`` StateCell preprocessing kernel (``(2, J)``: also reading the sign
        agreement).
      b_p: ``(J,)`` StateCell preprocessing bias.
      theta_h: ``(2J, 4J)`` StateCell LSTM kernel acting on ``[x, s_{t-1}]``; gate order
        ``(i, g, f, o)``.
      b_h: ``(4J,)`` StateCell LSTM bias.
      theta_u: ``(2J, J)`` first-moment decay-rate kernel.
      b_u: ``(J,)`` first-moment decay-rate bias (``logit(β)``).
      theta_r: ``(2J, J)`` second-moment decay-rate kernel.
      b_r: ``(J,)`` second-moment decay-rate bias (``logit(γ)``).
      theta_q: ``(J, J)`` WeightCell kernel.
      b_q: ``(J,)`` WeightCell bias.
    """

    theta_p: jax.Array
    b_p: jax.Array
    theta_h: jax.Array
    b_h: jax.Array
    theta_u: jax.Array
    b_u: jax.Array
    theta_r: jax.Array
    b_r: jax.Array
    theta_q: jax.Array
    b_q: jax.Array


#: The StateCell's inputs, one per row of ``θ_p``.
STATE_CELL_INPUTS = ("normalised gradient", "sign agreement")


def hyperadam_shapes(num_candidates: int, num_inputs: int = 1) -> dict[str, tuple[int, ...]]:
    """The shape of every field of :class:`HyperAdamParams` for ``J = num_candidates`` and
    ``num_inputs`` rows of ``θ_p`` (1 or 2, :data:`STATE_CELL_INPUTS`; any other count is
    answered with 1, so such weights are refused as mis-shaped)."""
    j = num_candidates
    rows = num_inputs if 1 <= num_inputs <= len(STATE_CELL_INPUTS) else 1
    return {
        "theta_p": (rows, j),
        "b_p": (j,),
        "theta_h": (2 * j, 4 * j),
        "b_h": (4 * j,),
        "theta_u": (2 * j, j),
        "b_u": (j,),
        "theta_r": (2 * j, j),
        "b_r": (j,),
        "theta_q": (j, j),
        "b_q": (j,),
    }


#: J from ``b_u``, the StateCell's input count from ``θ_p``.
SIZE_FIELDS = ("b_u", "theta_p")


def num_candidates(meta_params: HyperAdamParams) -> int:
    """J, read from the shapes; raises ``ValueError`` if the fields disagree about it."""
    return check_meta_params(meta_params, HyperAdamParams, SIZE_FIELDS, hyperadam_shapes)[0]


#: Added inside the square root of every global norm (the authors' later PyTorch port).
NORM_EPS = 1e-16

#: How the StateCell's gradient and the AdamCell's ``m``, ``s`` are normalised over the N
#: coordinates: ``"global_l2"`` divides by the Euclidean norm (the authors' code), so each
#: entry is of size ``1/√N``; ``"global_rms"`` divides by the root mean square ``‖·‖/√N``
#: (a deviation: entries of size 1 whatever N, so the networks see the task at any size).
NORMALIZATIONS = ("global_l2", "global_rms")


def check_normalization(normalization: str) -> str:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    return normalization


def check_sign_agreement(meta_params: HyperAdamParams, sign_agreement: bool) -> None:
    """``θ_p`` has one row per StateCell input: 2 with ``sign_agreement``, else 1."""
    if not isinstance(sign_agreement, bool):
        raise ValueError(f"sign_agreement must be a bool, got {sign_agreement!r}")
    rows = meta_params.theta_p.shape[0]
    if rows != 1 + sign_agreement:
        if sign_agreement:
            raise ValueError("sign_agreement=True needs meta_params whose theta_p has 2 rows "
                             f"(hyperadam_optax.contrib.with_sign_agreement_input), got {rows}")
        raise ValueError(f"these meta_params read {rows} StateCell inputs (theta_p has {rows} "
                         f"rows: {', '.join(STATE_CELL_INPUTS[:rows])}): pass "
                         "sign_agreement=True")


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


def scale_by_hyperadam(
    meta_params: HyperAdamParams,
    *,
    eps: float = 1e-24,
    state_dtype: Any = None,
    normalization: str = "global_l2",
    sign_agreement: bool = False,
    block_rows: int | None = None,
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

    With ``sign_agreement=True`` the StateCell also reads the sign agreement of the previous
    moments through a second row of ``θ_p`` (our extension, :class:`HyperAdamParams`).

    With ``normalization="global_rms"`` every one of these norms is divided by ``√N`` (N the
    number of coordinates): the same as ``"global_l2"`` with ``θ_p``, ``θ_u`` and ``θ_r``
    multiplied by ``√N``, so the networks' inputs are of size 1 on a problem of any size.

    Args:
      meta_params: the meta-parameters Θ (:class:`HyperAdamParams`).
      eps: ε of the candidate update.
      state_dtype: dtype of the per-coordinate state; default: the parameter's dtype
        promoted to at least float32. The maths runs in at least float32.
      normalization: ``"global_l2"`` (the authors' code, the default) or ``"global_rms"``
        (:data:`NORMALIZATIONS`); weights meta-trained with one are meant for that one.
      sign_agreement: whether the StateCell also reads the sign agreement (``θ_p`` with two
        rows); weights are refused when their ``θ_p`` does not match it.
      block_rows: a leaf of at least 8 blocks of this many coordinates is updated
        block by block, in place (:mod:`~hyperadam_optax.optimizers.blocks`: no leaf-sized
        temporaries; the same arithmetic, equal to float rounding). ``None``: 8,192 in a
        single-device CPU process, else 0 (off); 0: never.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; extra arguments are ignored.
    """
    j = num_candidates(meta_params)
    check_normalization(normalization)
    check_sign_agreement(meta_params, sign_agreement)
    check_number(eps, "eps", 0.0, 1.0)
    resolve_block_rows(block_rows)  # refuse a bad value now; the default is read at trace time

    def init_fn(params):
        check_float_leaves(params, "HyperAdam params")

        def zeros(p):
            return zeros_state(p, j, state_dtype_for(p, state_dtype))

        # Six separate buffers (not one shared), so the state can be donated to jit.
        return HyperAdamState(jnp.zeros([], jnp.int32),
                              *(jax.tree.map(zeros, params) for _ in range(6)))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_same_structure(updates, state.m, "gradients", "HyperAdam state (from init)",
                             trailing=1)
        check_float_leaves(updates, "HyperAdam gradients")
        grads, treedef, fields = _flat_leaves(updates, state)
        new_leaves = _hyperadam_step(meta_params, grads, *fields, eps=eps,
                                     normalization=normalization,
                                     sign_agreement=sign_agreement,
                                     block_rows=resolve_block_rows(block_rows))[:7]
        d, *new_fields = (jax.tree.unflatten(treedef, leaves) for leaves in new_leaves)
        new_state = HyperAdamState(optax.safe_increment(state.count), *new_fields)
        return d, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _hyperadam_step(mp: HyperAdamParams, grads, ms, vs, bhs, ghs, hs, cs, *, eps,
                    normalization: str = "global_l2", sign_agreement: bool = False,
                    block_rows: int = 0):
    """One step of Alg. 2 on lists of leaves; returns lists (d, m, v, β̂, γ̂, h, c, β, γ, ρ),
    the last three of shape ``leaf.shape + (J,)`` (what the step decided; a caller that
    drops them costs nothing: XLA removes unused outputs).

    A leaf of at least 8 blocks of ``block_rows`` coordinates is updated block by block in
    place (:mod:`~hyperadam_optax.optimizers.blocks`; the same arithmetic per coordinate, its
    β, γ, ρ are not returned: ``block_rows=0`` for them)."""
    j = mp.b_u.shape[0]
    if not grads:  # e.g. optax.masked with every leaf masked out
        return [[] for _ in range(10)]
    state_dtypes = [m.dtype for m in ms]
    cdt = compute_dtype(state_dtypes, mp)
    mp = jax.tree.map(lambda x: x.astype(cdt), mp)
    # Every array keeps its leaf's shape (candidates or LSTM units on a trailing axis), so a
    # sharded parameter's state and update keep its sharding on every axis. A blocked leaf is
    # seen as rows: (N,) and (N, J), reshapes that move no data.
    blocked = [use_blocks(gi.size, block_rows) for gi in grads]

    def sum_sq(xs, keep_last: bool = False):
        """Σ x² over every coordinate of every leaf (per trailing column if ``keep_last``)."""
        return sum(jnp.sum(jnp.square(x.astype(cdt)), axis=tuple(range(x.ndim - keep_last)))
                   for x in xs)

    # 1/||x|| over all N coordinates; times √N for the root mean square.
    size = sum(gi.size for gi in grads)
    to_unit = math.sqrt(size) if normalization == "global_rms" else 1.0

    # StateCell (line 8): global gradient normalisation, ELU preprocessing, LSTM.
    inv_gnorm = jax.lax.rsqrt(sum_sq(grads) + NORM_EPS) * to_unit
    rm = jax.lax.rsqrt(sum_sq(ms, keep_last=True) + NORM_EPS) * to_unit

    def state_cell(gi, hi, ci, mi=None, vi=None, bhi=None, ghi=None):
        gi, hi, ci = gi.astype(cdt), hi.astype(cdt), ci.astype(cdt)
        pre = ((gi * inv_gnorm)[..., None] * trailing(mp.theta_p[0], gi.ndim + 1)
               + trailing(mp.b_p, gi.ndim + 1))
        if sign_agreement:  # of the previous moments, read through θ_p's second row
            mi, vi, bhi, ghi = (x.astype(cdt) for x in (mi, vi, bhi, ghi))
            agree = jnp.mean(jnp.abs(mi / (bhi + eps)) * jax.lax.rsqrt(vi / (ghi + eps) + eps),
                             axis=-1)
            pre = pre + agree[..., None] * trailing(mp.theta_p[1], gi.ndim + 1)
        return lstm_step(jax.nn.elu(pre), hi, ci, mp.theta_h, mp.b_h)

    moments = list(zip(ms, vs, bhs, ghs)) if sign_agreement else [()] * len(grads)
    s, c, ss_blocked = [], [], jnp.zeros((j,), cdt)
    for gi, hi, ci, mom, blocked_leaf in zip(grads, hs, cs, moments, blocked):
        if not blocked_leaf:
            si, ci = state_cell(gi, hi, ci, *mom)
            s.append(si)
            c.append(ci)
            continue

        def cell_block(blocks, inputs, valid):
            si, ci = state_cell(inputs[0], *blocks, *inputs[1:])
            return (si, ci), jnp.sum(jnp.where(valid[:, None], jnp.square(si), 0.0), axis=0)

        (si, ci), ss_blocked = map_rows_in_place(
            cell_block, [rows(hi, j), rows(ci, j)],
            [gi.reshape(-1), *(rows(x, j) for x in mom)], block_rows, ss_blocked)
        s.append(si)  # the new h of the state, in its dtype
        c.append(ci)

    # AdamCell decay rates (Eq. 4-5) and WeightCell (Eq. 6). The column normalisation
    # nrm(a) = a / ||a[..., j]|| is folded into the kernels' rows, and θ_u, θ_r, θ_q share
    # two fused matmuls: m @ [θ_u|θ_r]_m and s @ [θ_u|θ_r|θ_q]_s.
    plain_s = [si for si, blocked_leaf in zip(s, blocked) if not blocked_leaf]
    rs = jax.lax.rsqrt(sum_sq(plain_s, keep_last=True) + ss_blocked + NORM_EPS) * to_unit
    theta_ur = jnp.concatenate([mp.theta_u, mp.theta_r], axis=1)
    w_m = theta_ur[:j] * rm[:, None]
    w_s = jnp.concatenate([theta_ur[j:] * rs[:, None], mp.theta_q], axis=1)
    b_s = jnp.concatenate([mp.b_u, mp.b_r, mp.b_q])

    def adam_cell(gi, mi, vi, bhi, ghi, si):
        gi, mi, vi, bhi, ghi, si = (x.astype(cdt) for x in (gi, mi, vi, bhi, ghi, si))
        pre_m = mi @ w_m
        pre_s = si @ w_s + trailing(b_s, si.ndim)
        pm_beta, pm_gamma = split_columns(pre_m, 2)
        ps_beta, ps_gamma, ps_rho = split_columns(pre_s, 3)
        beta = sigmoid(pm_beta + ps_beta)
        gamma = sigmoid(pm_gamma + ps_gamma)
        rho = jax.nn.elu(ps_rho)
        gcol = gi[..., None]
        # Moments and bias corrections from the RAW gradient (lines 11-14).
        mi = beta * mi + (1 - beta) * gcol
        vi = gamma * vi + (1 - gamma) * jnp.square(gcol)
        bhi = beta * bhi + (1 - beta)
        ghi = gamma * ghi + (1 - gamma)
        # Candidates (lines 15-16) combined by the weight field (line 18).
        m_hat = (mi / (bhi + eps)) * jax.lax.rsqrt(vi / (ghi + eps) + eps)
        return jnp.sum(rho * m_hat, axis=-1), mi, vi, bhi, ghi, beta, gamma, rho

    out = [[] for _ in range(10)]
    for idx, (gi, mi, vi, bhi, ghi, si, ci) in enumerate(zip(grads, ms, vs, bhs, ghs, s, c)):
        sd = state_dtypes[idx]
        if blocked[idx]:
            def adam_block(blocks, inputs, valid):
                d, *moments = adam_cell(inputs[0], *blocks[:4], inputs[1])[:5]
                return (*moments, d), 0.0

            (mi, vi, bhi, ghi, d), _ = map_rows_in_place(
                adam_block, [rows(x, j) for x in (mi, vi, bhi, ghi)] + [jnp.zeros_like(gi).reshape(-1)],
                [gi.reshape(-1), si], block_rows, 0.0)
            shape = gi.shape
            out[0].append(d.reshape(shape))
            for k, x in enumerate((mi, vi, bhi, ghi, si, ci), start=1):
                out[k].append(x.reshape(shape + (j,)))
            for k in (7, 8, 9):  # not kept by blocks (hyperadam_internals: block_rows=0)
                out[k].append(None)
            continue
        d, mi, vi, bhi, ghi, beta, gamma, rho = adam_cell(gi, mi, vi, bhi, ghi, si)
        out[0].append(d.astype(gi.dtype))
        for k, x in enumerate((mi, vi, bhi, ghi, si, ci), start=1):
            out[k].append(x.astype(sd))
        for k, x in enumerate((beta, gamma, rho), start=7):
            out[k].append(x)
    return out


def rows(x: jax.Array, j: int) -> jax.Array:
    """A ``leaf.shape + (J,)`` state field as ``(N, J)`` rows (a reshape: no data moves)."""
    return x.reshape(-1, j)


def hyperadam_internals(meta_params: HyperAdamParams, updates, state: HyperAdamState,
                        *, eps: float = 1e-24, normalization: str = "global_l2",
                        sign_agreement: bool = False) -> dict:
    """The decay rates and weights HyperAdam uses in the step from ``state`` on ``updates``.

    Returns ``{"beta": β_t, "gamma": γ_t, "rho": ρ_t}`` (Alg. 2 lines 9, 10, 17), each a
    pytree like ``updates`` with leaves of shape ``leaf.shape + (J,)``: what the learned
    optimizer decides per coordinate and candidate. ``state`` is the state of
    :func:`scale_by_hyperadam` (``opt_state[0]`` of :func:`hyperadam`), ``normalization``
    and ``sign_agreement`` the ones it runs with.
    """
    if not isinstance(state, HyperAdamState):
        raise TypeError(f"state must be the HyperAdamState of scale_by_hyperadam (opt_state[0] "
                        f"of hyperadam), got {type(state).__name__}")
    check_sign_agreement(meta_params, sign_agreement)
    grads, treedef, fields = _flat_leaves(updates, state)
    *_, beta, gamma, rho = _hyperadam_step(meta_params, grads, *fields, eps=eps,
                                           normalization=check_normalization(normalization),
                                           sign_agreement=sign_agreement)
    return {k: jax.tree.unflatten(treedef, v) for k, v in
            (("beta", beta), ("gamma", gamma), ("rho", rho))}


def hyperadam(
    learning_rate: optax.ScalarOrSchedule = 0.005,
    meta_params: HyperAdamParams | None = None,
    *,
    eps: float = 1e-24,
    state_dtype: Any = None,
    normalization: str = "global_l2",
    sign_agreement: bool = False,
    block_rows: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """HyperAdam: ``w_t = w_{t-1} - α d_t`` (Alg. 2 line 19).

    ``optax.chain(scale_by_hyperadam(meta_params, ...), optax.scale_by_learning_rate(α))``.

    Args:
      learning_rate: α, a float or an optax schedule (the paper uses 0.005).
      meta_params: the meta-parameters Θ. Here they are required; the package-level
        ``hyperadam_optax.hyperadam`` loads the pretrained weights shipped in the package
        when ``None`` (and raises :class:`~hyperadam_optax.PretrainedWeightsUnavailableError`
        if there are none). Random weights are never used silently.
      eps, state_dtype, normalization, sign_agreement, block_rows: see
        :func:`scale_by_hyperadam`.
    """
    require_meta_params(meta_params, "hyperadam")
    return optax.chain(
        scale_by_hyperadam(meta_params, eps=eps, state_dtype=state_dtype,
                           normalization=normalization, sign_agreement=sign_agreement,
                           block_rows=block_rows),
        optax.scale_by_learning_rate(learning_rate),
    )


