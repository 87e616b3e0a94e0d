"""HyperAdam's meta-parameters Θ (Wang, Sun & Xu, AAAI 2019, Alg. 2 and Eqs. 4-6)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from hyperadam_optax._coordinatewise import check_meta_params
from hyperadam_optax._lstm import glorot_uniform, lstm_bias_init, truncated_normal


class HyperAdamParams(NamedTuple):
    """Meta-parameters Θ = {Θh, Θu, Θr, Θq} of HyperAdam; J candidates, J = ``b_u.shape[0]``.

    StateCell (Alg. 2 line 8, Fig. 3), with ``ĝ = g / ||g||₂`` over all coordinates:
      ``x = ELU(ĝ θ_p + b_p)``, then ``s_t, c_t = LSTM([x, s_{t-1}]; θ_h, b_h)``.

    AdamCell decay rates (Eq. 4-5), ``nrm`` normalising each of the J columns over all
    coordinates: ``β_t = σ([nrm(m_{t-1}), nrm(s_t)] θ_u + b_u)``,
    ``γ_t = σ([nrm(m_{t-1}), nrm(s_t)] θ_r + b_r)``.

    WeightCell (Eq. 6): ``ρ_t = ELU(s_t θ_q + b_q)``.

    Attributes:
      theta_p: ``(1, J)`` StateCell preprocessing kernel.
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


def expected_shapes(num_candidates: int) -> dict[str, tuple[int, ...]]:
    """The shape of every field of :class:`HyperAdamParams` for ``J = num_candidates``."""
    j = num_candidates
    return {
        "theta_p": (1, j),
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


def num_candidates(meta_params: HyperAdamParams) -> int:
    """J, read from the shapes; raises ``ValueError`` if the fields disagree about it."""
    return check_meta_params(meta_params, HyperAdamParams, "b_u", expected_shapes)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def init_meta_params(
    key: jax.Array,
    num_candidates: int = 20,
    init: str = "paper",
    *,
    dtype=jnp.float32,
    warm_start_scale: float = 0.01,
    warm_start_step: float = 1.0,
    warm_start_betas: tuple[float, float] = (0.9, 0.999),
    warm_start_decay: tuple[float, float] | None = None,
) -> HyperAdamParams:
    """Initial meta-parameters.

    Args:
      key: a PRNG key.
      num_candidates: J, the number of Adam-like candidates (20 in the paper).
      init: ``"paper"``: the authors' code: dense layers (``θ_p``, ``θ_q``) truncated normal
        with std 0.1, LSTM and AdamCell kernels Glorot-uniform, zero biases except the
        LSTM forget gate (+1), so the initial decay rates are about 0.5.
        ``"adam"``: a warm start that behaves like Adam(b1, b2) = ``warm_start_betas``
        with learning rate ``α · warm_start_step``: ``b_u = logit(b1)``, ``b_r = logit(b2)``,
        ``b_q = warm_start_step / J`` (equal weights ρ summing to ``warm_start_step``), and
        every kernel ``N(0, warm_start_scale²)`` so every meta-parameter still gets gradient.
      dtype: floating dtype of the meta-parameters.
      warm_start_scale: std of the kernels of the ``"adam"`` warm start.
      warm_start_step: sum of the warm start's weights ρ (the step relative to Adam at α).
      warm_start_betas: Adam's decay rates ``(b1, b2)`` for the ``"adam"`` warm start, each
        in (0, 1).
      warm_start_decay: ``(horizon, floor)`` or None. If set, the ``"adam"`` warm start's
        step decays with time: ``Σρ_t = step · (1 - (1 - floor) tanh(c_t) / tanh(1/2))`` with
        ``c_t = t / (2 · horizon)`` counted by LSTM unit 0 until ``tanh(c_t)`` reaches
        ``tanh(1/2)`` (about step ``horizon``), where its input gate closes, so the step
        falls almost linearly from ``step`` to ``floor · step`` and then stays there
        (:func:`decay_counter_weights`). ``floor`` in (0, 1].
    """
    if not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(f"num_candidates must be a positive int, got {num_candidates!r}")
    if not warm_start_step > 0:
        raise ValueError(f"warm_start_step must be positive, got {warm_start_step!r}")
    b1, b2 = warm_start_betas
    if not (0 < b1 < 1 and 0 < b2 < 1):
        raise ValueError(f"warm_start_betas must be two decay rates in (0, 1), "
                         f"got {warm_start_betas!r}")
    if warm_start_decay is not None:
        horizon, floor = warm_start_decay
        if not (horizon >= 1 and 0 < floor <= 1):
            raise ValueError("warm_start_decay must be (horizon >= 1, floor in (0, 1]), "
                             f"got {warm_start_decay!r}")
        if init != "adam":
            raise ValueError("warm_start_decay needs init='adam'")
    shapes = expected_shapes(num_candidates)
    j = num_candidates
    keys = dict(zip(["theta_p", "theta_h", "theta_u", "theta_r", "theta_q"],
                    jax.random.split(key, 5)))
    if init == "paper":
        return HyperAdamParams(
            theta_p=truncated_normal(keys["theta_p"], shapes["theta_p"], dtype, 0.1),
            b_p=jnp.zeros((j,), dtype),
            theta_h=glorot_uniform(keys["theta_h"], shapes["theta_h"], dtype),
            b_h=lstm_bias_init(j, 1.0, dtype),
            theta_u=glorot_uniform(keys["theta_u"], shapes["theta_u"], dtype),
            b_u=jnp.zeros((j,), dtype),
            theta_r=glorot_uniform(keys["theta_r"], shapes["theta_r"], dtype),
            b_r=jnp.zeros((j,), dtype),
            theta_q=truncated_normal(keys["theta_q"], shapes["theta_q"], dtype, 0.1),
            b_q=jnp.zeros((j,), dtype),
        )
    if init == "adam":
        def small(name):
            return warm_start_scale * jax.random.normal(keys[name], shapes[name], dtype)

        theta_h, b_h = small("theta_h"), lstm_bias_init(j, 1.0, dtype)
        theta_q = small("theta_q")
        if warm_start_decay is not None:
            theta_h, b_h, theta_q = decay_counter_weights(theta_h, b_h, theta_q,
                                                          warm_start_step, *warm_start_decay)
        return HyperAdamParams(
            theta_p=small("theta_p"),
            b_p=jnp.zeros((j,), dtype),
            theta_h=theta_h,
            b_h=b_h,
            theta_u=small("theta_u"),
            b_u=jnp.full((j,), _logit(b1), dtype),
            theta_r=small("theta_r"),
            b_r=jnp.full((j,), _logit(b2), dtype),
            theta_q=theta_q,
            b_q=jnp.full((j,), warm_start_step / j, dtype),
        )
    raise ValueError(f"init must be 'paper' or 'adam', got {init!r}")


#: Gate bias that saturates the sigmoid in float32 (σ(30) rounds to 1).
_OPEN_GATE = 30.0
#: Steepness of the decay counter's input gate around its stop level.
_COUNTER_SHARPNESS = 400.0


def decay_counter_weights(theta_h, b_h, theta_q, step: float, horizon: float, floor: float):
    """Make LSTM unit 0 a clock that lowers the step ``Σρ`` from ``step`` to ``floor · step``.

    Unit 0 (gate order ``(i, g, f, o)``): forget and output gates open (bias 30), cell
    input ``tanh(g) = δ = 1 / (2 · horizon)``, so ``c_t = t δ`` and ``s_t = tanh(c_t)``; the
    input gate ``σ(k (1 - s_{t-1} / s*))`` with ``s* = tanh(1/2)``, ``k = 400`` closes once
    ``s`` reaches ``s*`` (about ``t = horizon``), so the clock stops there (it creeps on: the step is
    about 8% below ``floor · step`` after 10,000 steps). Every weight ``ρ_j = ELU(s_t θ_q + b_q)_j``
    gets ``θ_q[0, j] = -step (1 - floor) / (J s*)``; with ``b_q = step / J`` their sum falls
    from ``step`` to ``floor · step``. The clock's own kernel columns are zeroed (else the
    warm start's small random kernels jitter its tiny increment δ per coordinate); other units
    and kernel entries are left as given.
    Returns ``(theta_h, b_h, theta_q)``.
    """
    j = b_h.shape[0] // 4
    s_stop = math.tanh(0.5)
    b_h = (b_h.at[0].set(_COUNTER_SHARPNESS)  # input gate: open until s_{t-1} = s*
           .at[j].set(math.atanh(0.5 / horizon))  # cell input δ
           .at[2 * j].set(_OPEN_GATE)  # forget gate
           .at[3 * j].set(_OPEN_GATE))  # output gate
    clock = jnp.array([0, j, 2 * j, 3 * j])
    theta_h = (theta_h.at[:, clock].set(0.0)  # the clock ignores the inputs: no jitter in δ
               .at[j, 0].set(-_COUNTER_SHARPNESS / s_stop))  # s_{t-1}[0] -> input gate
    theta_q = theta_q.at[0, :].set(-step * (1.0 - floor) / (j * s_stop))
    return theta_h, b_h, theta_q


def adam_meta_params(
    num_candidates: int = 20, b1: float = 0.9, b2: float = 0.999, dtype=jnp.float32
) -> HyperAdamParams:
    """Θ for which HyperAdam is exactly Adam(b1, b2) with ε≈0 (all kernels zero).

    ``θ_u = θ_r = θ_q = 0``, ``b_u = logit(b1)``, ``b_r = logit(b2)``, ``b_q = (1, 0, …, 0)``:
    the decay rates are constant, candidate 1 is Adam's bias-corrected step and the
    others get weight ``ELU(0) = 0``.
    """
    j = num_candidates
    shapes = expected_shapes(j)
    zeros = {k: jnp.zeros(s, dtype) for k, s in shapes.items()}
    return HyperAdamParams(**{
        **zeros,
        "b_h": lstm_bias_init(j, 1.0, dtype),
        "b_u": jnp.full((j,), _logit(b1), dtype),
        "b_r": jnp.full((j,), _logit(b2), dtype),
        "b_q": jnp.zeros((j,), dtype).at[0].set(1.0),
    })
