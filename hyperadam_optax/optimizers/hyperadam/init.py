"""HyperAdam's initial meta-parameters: the authors' initialisation, Adam as a special case,
and the Adam warm start (constant or falling rate, the fall counted by an LSTM unit set up as
a clock) that the shipped weights started from."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from hyperadam_optax.optimizers.coordinatewise import check_number
from hyperadam_optax.optimizers.hyperadam.core import HyperAdamParams, hyperadam_shapes
from hyperadam_optax.optimizers.lstm import glorot_uniform, lstm_bias_init, truncated_normal


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def init_hyperadam_meta_params(
    key: jax.Array,
    num_candidates: int = 20,
    init: str = "paper",
    *,
    dtype=jnp.float32,
    warm_start_scale: float = 0.01,
    warm_start_step: float = 1.0,
    warm_start_betas: tuple[float, float] = (0.9, 0.999),
    warm_start_decay: tuple[float, float] | None = None,
    warm_start_clock: str = "cell_input",
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
        ``tanh(1/2)`` (about step ``horizon``), where the clock stops, so the step
        falls almost linearly from ``step`` to ``floor · step`` and then stays there
        (:func:`decay_counter_weights`). ``floor`` in (0, 1].
      warm_start_clock: where the decay clock's rate lives (:data:`CLOCKS`): ``"cell_input"``
        (the shipped weights' start) or ``"input_gate"`` (in log space, for meta-training).
    """
    if not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(f"num_candidates must be a positive int, got {num_candidates!r}")
    warm = {"warm_start_scale": (warm_start_scale, 0.01), "warm_start_step": (warm_start_step, 1.0),
            "warm_start_betas": (tuple(warm_start_betas), (0.9, 0.999)),
            "warm_start_decay": (warm_start_decay, None),
            "warm_start_clock": (warm_start_clock, "cell_input")}
    changed = [name for name, (value, default) in warm.items() if value != default]
    if init != "adam" and changed:
        raise ValueError(f"{' and '.join(changed)} apply to HyperAdam's Adam warm start only "
                         f"(init='adam'), not init={init!r}")
    if not (warm_start_step > 0 and math.isfinite(warm_start_step)):
        raise ValueError(f"warm_start_step must be positive and finite, got {warm_start_step!r}")
    b1, b2 = warm_start_betas
    if not (0 < b1 < 1 and 0 < b2 < 1):
        raise ValueError(f"warm_start_betas must be two decay rates in (0, 1), "
                         f"got {warm_start_betas!r}")
    if warm_start_decay is not None:
        horizon, floor = warm_start_decay
        if not (horizon >= 1 and 0 < floor <= 1):
            raise ValueError("warm_start_decay must be (horizon >= 1, floor in (0, 1]), "
                             f"got {warm_start_decay!r}")
    if check_clock(warm_start_clock) != "cell_input" and warm_start_decay is None:
        raise ValueError("warm_start_clock is the clock of warm_start_decay, which is not set")
    keys = dict(zip(["theta_p", "theta_h", "theta_u", "theta_r", "theta_q"],
                    jax.random.split(key, 5)))
    if init == "paper":
        return _paper_init(keys, num_candidates, dtype)
    if init == "adam":
        return _adam_warm_start(keys, num_candidates, dtype, warm_start_scale, warm_start_step,
                                (b1, b2), warm_start_decay, warm_start_clock)
    raise ValueError(f"init must be 'paper' or 'adam', got {init!r}")


def _paper_init(keys: dict, j: int, dtype) -> HyperAdamParams:
    """The authors' code: dense layers truncated normal (0.1), LSTM and AdamCell kernels
    Glorot-uniform, zero biases except the LSTM forget gate (+1)."""
    shapes = hyperadam_shapes(j)
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


def _adam_warm_start(keys: dict, j: int, dtype, scale: float, step: float,
                     betas: tuple[float, float], decay: tuple[float, float] | None,
                     clock: str = "cell_input") -> HyperAdamParams:
    """Adam(*betas) at rate ``α · step`` (falling over time with ``decay``), kernels
    ``N(0, scale²)`` (:func:`init_meta_params`)."""
    shapes = hyperadam_shapes(j)

    def small(name):
        return scale * jax.random.normal(keys[name], shapes[name], dtype)

    theta_h, b_h = small("theta_h"), lstm_bias_init(j, 1.0, dtype)
    theta_q = small("theta_q")
    if decay is not None:
        theta_h, b_h, theta_q = decay_counter_weights(theta_h, b_h, theta_q, step, *decay,
                                                      clock=clock)
    return HyperAdamParams(
        theta_p=small("theta_p"),
        b_p=jnp.zeros((j,), dtype),
        theta_h=theta_h,
        b_h=b_h,
        theta_u=small("theta_u"),
        b_u=jnp.full((j,), _logit(betas[0]), dtype),
        theta_r=small("theta_r"),
        b_r=jnp.full((j,), _logit(betas[1]), dtype),
        theta_q=theta_q,
        b_q=jnp.full((j,), step / j, dtype),
    )


#: Gate bias that saturates the sigmoid in float32 (σ(30) rounds to 1).
_OPEN_GATE = 30.0
#: Steepness of the decay counter's input gate around its stop level.
_COUNTER_SHARPNESS = 400.0

def gate_columns(units, num_units: int) -> jax.Array:
    """The columns of ``θ_h`` (and entries of ``b_h``) that feed the four gates ``(i, g, f,
    o)`` of the LSTM units ``units``: ``[g · J + u for g in 0..3 for u in units]``."""
    return (jnp.arange(4)[:, None] * num_units + jnp.asarray(units, jnp.int32)[None]).ravel()


#: Where the decay clock's rate δ lives (:func:`decay_counter_weights`).
CLOCKS = ("cell_input", "input_gate")


def check_clock(clock: str) -> str:
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
    return clock


def decay_counter_weights(theta_h, b_h, theta_q, step: float, horizon: float, floor: float,
                          *, clock: str = "cell_input"):
    """Make LSTM unit 0 a clock that lowers the step ``Σρ`` from ``step`` to ``floor · step``.

    Unit 0 (gate order ``(i, g, f, o)``): forget and output gates open (bias 30), so
    ``c_t = c_{t-1} + σ(i) tanh(g)``, ``s_t = tanh(c_t)``, with ``δ = 1 / (2 · horizon)``,
    ``s* = tanh(1/2)``, and the clock stopping once ``s`` reaches ``s*`` (about
    ``t = horizon``). ``clock`` says where ``δ`` and the stop live:

    - ``"cell_input"`` (the shipped weights' start): ``tanh(g) = δ`` and the input gate
      ``σ(k (1 - s_{t-1} / s*))``, ``k = 400``, closes at ``s*`` (it creeps on: the step is
      about 8% below ``floor · step`` after 10,000 steps). ``δ`` is a bias of size
      ``1/(2 horizon)``: a meta-optimizer's step of ``1e-5`` on it moves the horizon by
      ``2e-3`` of itself (at horizon 100).
    - ``"input_gate"``: ``σ(i) = δ`` (bias ``logit δ``, so such a step moves the horizon by
      ``1e-5`` of itself) and ``tanh(g) = tanh(k (1 - s_{t-1} / s*))`` with
      ``k = 0.294 / δ``, which reaches 0 at ``s*``: the clock stops there for good,
      approached with a contraction of 1/2 per step.

    Every weight ``ρ_j = ELU(s_t θ_q + b_q)_j``
    gets ``θ_q[0, j] = -step (1 - floor) / (J s*)``; with ``b_q = step / J`` their sum falls
    from ``step`` to ``floor · step``. The clock's own kernel columns are zeroed (else the
    warm start's small random kernels jitter its tiny increment δ per coordinate); other units
    and kernel entries are left as given.
    Returns ``(theta_h, b_h, theta_q)``.
    """
    check_clock(clock)
    j = b_h.shape[0] // 4
    s_stop, delta = math.tanh(0.5), 0.5 / horizon
    if clock == "cell_input":  # i: open until s_{t-1} = s*; g: δ
        stop_gate, sharpness, b_i, b_g = 0, _COUNTER_SHARPNESS, _COUNTER_SHARPNESS, math.atanh(delta)
    else:  # i: δ; g: tanh(k (1 - s_{t-1}/s*)), k δ (1 - s*²) / s* = 1/2
        sharpness = 0.5 * s_stop / ((1.0 - s_stop**2) * delta)
        stop_gate, b_i, b_g = j, _logit(delta), sharpness
    b_h = (b_h.at[0].set(b_i).at[j].set(b_g)
           .at[2 * j].set(_OPEN_GATE)  # forget gate
           .at[3 * j].set(_OPEN_GATE))  # output gate
    theta_h = (theta_h.at[:, gate_columns([0], j)].set(0.0)  # the clock ignores the inputs: no jitter in δ
               .at[j, stop_gate].set(-sharpness / s_stop))  # s_{t-1}[0] -> the stopping gate
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
    check_number(b1, "b1", 0.0, 1.0, open_high=True)
    check_number(b2, "b2", 0.0, 1.0, open_high=True)
    j = num_candidates
    shapes = hyperadam_shapes(j)
    zeros = {k: jnp.zeros(s, dtype) for k, s in shapes.items()}
    return HyperAdamParams(**{
        **zeros,
        "b_h": lstm_bias_init(j, 1.0, dtype),
        "b_u": jnp.full((j,), _logit(b1), dtype),
        "b_r": jnp.full((j,), _logit(b2), dtype),
        "b_q": jnp.zeros((j,), dtype).at[0].set(1.0),
    })

