"""Research-only rewriters of HyperAdam weights (nothing shipped needs them): each returns
weights that take exactly the given weights' steps but expose something new to
meta-training. Public as ``hyperadam_optax.contrib``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from hyperadam_optax.optimizers.hyperadam.core import (
    STATE_CELL_INPUTS,
    HyperAdamParams,
    num_candidates,
)
from hyperadam_optax.optimizers.hyperadam.init import gate_columns
from hyperadam_optax.optimizers.lstm import glorot_uniform, lstm_bias_init


def global_rms_equivalent(meta_params: HyperAdamParams, num_coordinates: int) -> HyperAdamParams:
    """Θ' with which ``normalization="global_rms"`` takes exactly the steps that Θ takes with
    ``"global_l2"`` on every problem of ``num_coordinates`` coordinates (on others it differs):
    ``θ_p`` (its gradient row; the sign agreement's does not depend on N), ``θ_u, θ_r``
    divided by ``√N``, the rest unchanged."""
    if not (isinstance(num_coordinates, int) and num_coordinates >= 1):
        raise ValueError(f"num_coordinates must be a positive int, got {num_coordinates!r}")
    shrink = 1.0 / math.sqrt(num_coordinates)
    return meta_params._replace(theta_p=meta_params.theta_p.at[0].multiply(shrink),
                                theta_u=meta_params.theta_u * shrink,
                                theta_r=meta_params.theta_r * shrink)


def open_input_path(meta_params: HyperAdamParams, key: jax.Array, *,
                    keep_units: tuple[int, ...] = (0,),
                    input_scale: float = 1.0) -> HyperAdamParams:
    """Θ' that takes Θ's steps but whose free LSTM units read the gradient at size O(1).

    A warm start such as :func:`init_meta_params` ``(init="adam")`` reaches the step from the
    gradient only through ``θ_p``, ``θ_h`` and ``θ_q`` in series, all of size 0.01, so the
    path is about 1e-6 and each kernel's meta-gradient is proportional to the other two:
    the LSTM never sees the task. Here, for every unit ``u`` not in ``keep_units``:

    - ``θ_p``, ``b_p``: ``θ_p ~ N(0, input_scale²)`` (every unit of ``x``), ``b_p = 0``;
    - ``θ_h`` columns and ``b_h`` of unit ``u``'s four gates: the paper's init
      (Glorot-uniform kernel, forget bias +1), so ``s_t[u]`` is O(1) and follows ``ĝ``;
    - the readout from ``s_t[u]`` is zero: row ``u`` of ``θ_q`` (ρ_t, Eq. 6) and row
      ``J + u`` of ``θ_u``, ``θ_r`` (the ``nrm(s_t)`` part of Eq. 4-5);

    and the kept units (e.g. the warm start's clock, unit 0 of :func:`decay_counter_weights`)
    stop reading ``x`` and the free units (those rows of their gate columns are zeroed; their
    own recurrences stay). So Θ' takes exactly Θ's steps when those zeroed entries were zero
    (a warm start with ``warm_start_scale=0``; on meta-trained weights the kept units move a
    little), while the meta-gradient of the readout rows is O(1) and task-dependent from the
    first meta-step. ``ĝ`` is of size 1 only with ``normalization="global_rms"``; with
    ``"global_l2"`` it is ``1/√N``.
    """
    j = num_candidates(meta_params)
    keep = sorted(set(keep_units))
    if not keep_units or any(not isinstance(u, int) or not 0 <= u < j for u in keep_units):
        raise ValueError(f"keep_units must be unit indices in [0, {j}), got {keep_units!r}")
    if not (input_scale > 0 and math.isfinite(input_scale)):
        raise ValueError(f"input_scale must be positive and finite, got {input_scale!r}")
    mp = meta_params
    dtype = mp.b_u.dtype
    free = jnp.array([u for u in range(j) if u not in keep], jnp.int32)
    kept = jnp.array(keep, jnp.int32)
    free_cols, kept_cols = gate_columns(free, j), gate_columns(kept, j)
    k_p, k_h = jax.random.split(key)
    fresh_h = glorot_uniform(k_h, mp.theta_h.shape, dtype)
    theta_h = mp.theta_h.at[:, free_cols].set(fresh_h[:, free_cols])
    kept_rows = jnp.setdiff1d(jnp.arange(2 * j), j + kept)  # x and the free units' s
    theta_h = theta_h.at[kept_rows[:, None], kept_cols[None, :]].set(0.0)
    return mp._replace(
        theta_p=input_scale * jax.random.normal(k_p, mp.theta_p.shape, dtype),
        b_p=jnp.zeros_like(mp.b_p),
        theta_h=theta_h,
        b_h=mp.b_h.at[free_cols].set(lstm_bias_init(j, 1.0, dtype)[free_cols]),
        theta_u=mp.theta_u.at[j + free].set(0.0),
        theta_r=mp.theta_r.at[j + free].set(0.0),
        theta_q=mp.theta_q.at[free].set(0.0),
    )


def with_sign_agreement_input(meta_params: HyperAdamParams, key: jax.Array, *,
                              scale: float = 1.0) -> HyperAdamParams:
    """Θ' whose StateCell also reads the gradient's sign agreement (a second row of ``θ_p``,
    ``~ N(0, scale²)``; :class:`HyperAdamParams`), everything else Θ's; run it with
    ``hyperadam(..., sign_agreement=True)`` (save it with ``{"make_kwargs":
    {"sign_agreement": True}}`` so that evaluation and ``--init-from`` do).

    Our extension, not the paper's: ``ĝ`` is an odd function of the gradient, so units
    reading it tell little about whether the step is too large (measured in
    research/record.md), while the sign agreement, the classic signal of Rprop and
    delta-bar-delta, carries it. Θ' takes Θ's steps exactly when every unit that reads
    ``x`` has a zero readout, as after :func:`open_input_path`: then only the readout (rows
    of ``θ_q``, ``θ_u``, ``θ_r``) decides whether the new input matters.
    """
    j = num_candidates(meta_params)
    if meta_params.theta_p.shape[0] != 1:
        raise ValueError(f"meta_params already read {meta_params.theta_p.shape[0]} inputs "
                         f"({', '.join(STATE_CELL_INPUTS)})")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    row = scale * jax.random.normal(key, (1, j), meta_params.theta_p.dtype)
    return meta_params._replace(theta_p=jnp.concatenate([meta_params.theta_p, row]))


