"""HyperAdam (Wang, Sun & Xu, AAAI 2019, Alg. 2 and Eqs. 4-6) as an optax transformation.

Its meta-parameters Θ (:class:`HyperAdamParams`, :func:`init_meta_params`, the Adam special
case :func:`adam_meta_params`), its state and direction (:func:`scale_by_hyperadam`), the
alias :func:`hyperadam`, what it decides per step (:func:`hyperadam_internals`) and its
registry entry :data:`SPEC` (shapes, its paper's training recipe).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from hyperadam_optax.optimizers.coordinatewise import (
    check_float_leaves,
    check_meta_params,
    check_number,
    check_same_structure,
    compute_dtype,
    state_dtype_for,
    zeros_state,
)
from hyperadam_optax.optimizers.lstm import (
    glorot_uniform,
    lstm_bias_init,
    lstm_step,
    sigmoid,
    split_columns,
    trailing,
    truncated_normal,
)
from hyperadam_optax.optimizers.spec import OptimizerSpec, TrainingRecipe, require_meta_params


class HyperAdamParams(NamedTuple):
    """Meta-parameters Θ = {Θh, Θu, Θr, Θq} of HyperAdam; J candidates, J = ``b_u.shape[0]``.

    StateCell (Alg. 2 line 8, Fig. 3), with ``ĝ = g / ||g||₂`` over all coordinates:
      ``x = ELU(ĝ θ_p + b_p)``, then ``s_t, c_t = LSTM([x, s_{t-1}]; θ_h, b_h)``.
      With a second row of ``θ_p`` (our extension, not the paper's), the StateCell also
      reads the gradient's sign agreement ``a_{t-1}``, the mean over the J candidates of
      ``|m̂_{t-1}|`` (Alg. 2 lines 15-16 on the previous moments: near 1 where the
      gradient's sign has held, near 0 where it flips; 0 at the first step):
      ``x = ELU(ĝ θ_p[0] + a_{t-1} θ_p[1] + b_p)`` (:func:`with_sign_agreement_input`).

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


def expected_shapes(num_candidates: int, num_inputs: int = 1) -> dict[str, tuple[int, ...]]:
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
    return check_meta_params(meta_params, HyperAdamParams, SIZE_FIELDS, expected_shapes)[0]


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
        if init != "adam":
            raise ValueError("warm_start_decay needs init='adam'")
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
    shapes = expected_shapes(j)
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
    shapes = expected_shapes(j)

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
    shapes = expected_shapes(j)
    zeros = {k: jnp.zeros(s, dtype) for k, s in shapes.items()}
    return HyperAdamParams(**{
        **zeros,
        "b_h": lstm_bias_init(j, 1.0, dtype),
        "b_u": jnp.full((j,), _logit(b1), dtype),
        "b_r": jnp.full((j,), _logit(b2), dtype),
        "b_q": jnp.zeros((j,), dtype).at[0].set(1.0),
    })

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
    ``~ N(0, scale²)``; :class:`HyperAdamParams`), everything else Θ's.

    Our extension, not the paper's: ``ĝ`` is an odd function of the gradient, so units
    reading it tell little about whether the step is too large (measured in
    docs/experiments.md), while the sign agreement, the classic signal of Rprop and
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

    With a second row of ``θ_p`` the StateCell also reads the sign agreement of the previous
    moments (our extension, :class:`HyperAdamParams`).

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

    Returns:
      An ``optax.GradientTransformationExtraArgs``; extra arguments are ignored.
    """
    j = num_candidates(meta_params)
    check_normalization(normalization)
    check_number(eps, "eps", 0.0, 1.0)

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
                                     normalization=normalization)
        d, *new_fields = (jax.tree.unflatten(treedef, leaves) for leaves in new_leaves)
        new_state = HyperAdamState(optax.safe_increment(state.count), *new_fields)
        return d, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _hyperadam_step(mp: HyperAdamParams, grads, ms, vs, bhs, ghs, hs, cs, *, eps,
                    normalization: str = "global_l2", internals: bool = False):
    """One step of Alg. 2 on lists of leaves; returns lists (d, m, v, β̂, γ̂, h, c), and with
    ``internals=True`` also lists (β, γ, ρ) of shape ``leaf.shape + (J,)``."""
    j = mp.b_u.shape[0]
    if not grads:  # e.g. optax.masked with every leaf masked out
        return [[] for _ in range(10 if internals else 7)]
    state_dtypes = [m.dtype for m in ms]
    cdt = compute_dtype(state_dtypes, mp)
    mp = jax.tree.map(lambda x: x.astype(cdt), mp)
    # Every array keeps its leaf's shape (candidates or LSTM units on a trailing axis), so a
    # sharded parameter's state and update keep its sharding on every axis.
    g = [x.astype(cdt) for x in grads]
    m, v, bh, gh, h, c = ([x.astype(cdt) for x in xs] for xs in (ms, vs, bhs, ghs, hs, cs))

    def sum_sq(xs, keep_last: bool = False):
        """Σ x² over every coordinate of every leaf (per trailing column if ``keep_last``)."""
        return sum(jnp.sum(jnp.square(x), axis=tuple(range(x.ndim - keep_last))) for x in xs)

    # 1/||x|| over all N coordinates; times √N for the root mean square.
    size = sum(gi.size for gi in g)
    to_unit = math.sqrt(size) if normalization == "global_rms" else 1.0

    # StateCell (line 8): global gradient normalisation, ELU preprocessing, LSTM.
    inv_gnorm = jax.lax.rsqrt(sum_sq(g) + NORM_EPS) * to_unit

    def cell_input(gi, mi, vi, bhi, ghi):
        pre = ((gi * inv_gnorm)[..., None] * trailing(mp.theta_p[0], gi.ndim + 1)
               + trailing(mp.b_p, gi.ndim + 1))
        if mp.theta_p.shape[0] == 2:  # the sign agreement of the previous moments
            agree = jnp.mean(jnp.abs(mi / (bhi + eps)) * jax.lax.rsqrt(vi / (ghi + eps) + eps),
                             axis=-1)
            pre = pre + agree[..., None] * trailing(mp.theta_p[1], gi.ndim + 1)
        return jax.nn.elu(pre)

    lstm = [lstm_step(cell_input(gi, mi, vi, bhi, ghi), hi, ci, mp.theta_h, mp.b_h)
            for gi, mi, vi, bhi, ghi, hi, ci in zip(g, m, v, bh, gh, h, c)]
    s = [hc[0] for hc in lstm]

    # AdamCell decay rates (Eq. 4-5) and WeightCell (Eq. 6). The column normalisation
    # nrm(a) = a / ||a[..., j]|| is folded into the kernels' rows, and θ_u, θ_r, θ_q share
    # two fused matmuls: m @ [θ_u|θ_r]_m and s @ [θ_u|θ_r|θ_q]_s.
    rm = jax.lax.rsqrt(sum_sq(m, keep_last=True) + NORM_EPS) * to_unit
    rs = jax.lax.rsqrt(sum_sq(s, keep_last=True) + NORM_EPS) * to_unit
    theta_ur = jnp.concatenate([mp.theta_u, mp.theta_r], axis=1)
    w_m = theta_ur[:j] * rm[:, None]
    w_s = jnp.concatenate([theta_ur[j:] * rs[:, None], mp.theta_q], axis=1)
    b_s = jnp.concatenate([mp.b_u, mp.b_r, mp.b_q])

    out = [[] for _ in range(10 if internals else 7)]
    for idx, (gi, mi, vi, bhi, ghi, si, (_, ci)) in enumerate(zip(g, m, v, bh, gh, s, lstm)):
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
        d = jnp.sum(rho * m_hat, axis=-1)
        out[0].append(d.astype(grads[idx].dtype))
        for k, x in enumerate((mi, vi, bhi, ghi, si, ci), start=1):
            out[k].append(x.astype(state_dtypes[idx]))
        if internals:
            for k, x in enumerate((beta, gamma, rho), start=7):
                out[k].append(x)
    return out


def hyperadam_internals(meta_params: HyperAdamParams, updates, state: HyperAdamState,
                        *, eps: float = 1e-24, normalization: str = "global_l2") -> dict:
    """The decay rates and weights HyperAdam uses in the step from ``state`` on ``updates``.

    Returns ``{"beta": β_t, "gamma": γ_t, "rho": ρ_t}`` (Alg. 2 lines 9, 10, 17), each a
    pytree like ``updates`` with leaves of shape ``leaf.shape + (J,)``: what the learned
    optimizer decides per coordinate and candidate. ``state`` is the state of
    :func:`scale_by_hyperadam` (``opt_state[0]`` of :func:`hyperadam`), ``normalization``
    the one it runs with.
    """
    if not isinstance(state, HyperAdamState):
        raise TypeError(f"state must be the HyperAdamState of scale_by_hyperadam (opt_state[0] "
                        f"of hyperadam), got {type(state).__name__}")
    grads, treedef, fields = _flat_leaves(updates, state)
    *_, beta, gamma, rho = _hyperadam_step(meta_params, grads, *fields, eps=eps,
                                           normalization=check_normalization(normalization),
                                           internals=True)
    return {k: jax.tree.unflatten(treedef, v) for k, v in
            (("beta", beta), ("gamma", gamma), ("rho", rho))}


def hyperadam(
    learning_rate: optax.ScalarOrSchedule = 0.005,
    meta_params: HyperAdamParams | None = None,
    *,
    eps: float = 1e-24,
    state_dtype: Any = None,
    normalization: str = "global_l2",
) -> optax.GradientTransformationExtraArgs:
    """HyperAdam: ``w_t = w_{t-1} - α d_t`` (Alg. 2 line 19).

    ``optax.chain(scale_by_hyperadam(meta_params, ...), optax.scale_by_learning_rate(α))``.

    Args:
      learning_rate: α, a float or an optax schedule (the paper uses 0.005).
      meta_params: the meta-parameters Θ. Here they are required; the package-level
        ``hyperadam_optax.hyperadam`` loads the pretrained weights shipped in the package
        when ``None`` (and raises :class:`~hyperadam_optax.PretrainedWeightsUnavailableError`
        if there are none). Random weights are never used silently.
      eps, state_dtype, normalization: see :func:`scale_by_hyperadam`.
    """
    require_meta_params(meta_params, "hyperadam")
    return optax.chain(
        scale_by_hyperadam(meta_params, eps=eps, state_dtype=state_dtype,
                           normalization=normalization),
        optax.scale_by_learning_rate(learning_rate),
    )


#: HyperAdam in the optimizer registry: α = 0.005, J = 20; the authors' training recipe
#: (Random Scaling + convex MNIST problem, mean of the losses, meta Adam 1e-4).
SPEC = OptimizerSpec(
    name="hyperadam",
    params_type=HyperAdamParams,
    size_field=SIZE_FIELDS,
    shapes=expected_shapes,
    init_meta_params=init_meta_params,
    make=hyperadam,
    default_learning_rate=0.005,
    recipe=TrainingRecipe(task="mnist-mlp-rs", meta_loss="mean", meta_lr=1e-4),
)
