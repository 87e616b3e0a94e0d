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
    """
    if not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(f"num_candidates must be a positive int, got {num_candidates!r}")
    if not warm_start_step > 0:
        raise ValueError(f"warm_start_step must be positive, got {warm_start_step!r}")
    b1, b2 = warm_start_betas
    if not (0 < b1 < 1 and 0 < b2 < 1):
        raise ValueError(f"warm_start_betas must be two decay rates in (0, 1), "
                         f"got {warm_start_betas!r}")
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

        return HyperAdamParams(
            theta_p=small("theta_p"),
            b_p=jnp.zeros((j,), dtype),
            theta_h=small("theta_h"),
            b_h=lstm_bias_init(j, 1.0, dtype),
            theta_u=small("theta_u"),
            b_u=jnp.full((j,), _logit(b1), dtype),
            theta_r=small("theta_r"),
            b_r=jnp.full((j,), _logit(b2), dtype),
            theta_q=small("theta_q"),
            b_q=jnp.full((j,), warm_start_step / j, dtype),
        )
    raise ValueError(f"init must be 'paper' or 'adam', got {init!r}")


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
