"""L2O-Scale (Wichrowska et al., ICML 2017): the hierarchical RNN optimizer as an optax transform.

Three levels of GRUs (paper Sec. 3.1, Fig. 1): a small Parameter RNN per coordinate, a Tensor
RNN per parameter leaf, one Global RNN per problem. Each level's state is injected as a bias
into the level below; each level's new state, averaged, is the input of the level above.
The details follow the authors' TensorFlow code (``hierarchical_rnn.py``, ``rnn_cells.py``);
deliberate deviations:

- the Global RNN's input is the mean of the new per-tensor states (the paper's text; the code
  passes only the last tensor's state);
- every coordinate's log learning rate starts at ``initial_log_lr`` (an argument, default
  ``log 1e-3``): optax's ``init`` takes no PRNG key, and the code's random draw (a sum of two
  log-uniforms over ``[1e-3, 1e-1]``, median 1e-4) would make ``l2o_scale()`` give a
  different run each time. Meta-training still sees varied scales through the tasks'
  parameter-scale augmentation;
- attention (the Nesterov-like offset, Eq. 6 and 9) is not implemented; it is off by default
  in the code too;
- each GRU's candidate has its own learned bias besides the injected one (the code's
  ``affine`` carries one), zero-initialised.

The state keeps each coordinate's features on a trailing axis (``param.shape + (K,)``); the
per-coordinate work turns them to the leading axis first (:func:`bias_gru`: about 3x faster on
a CPU, ``docs/benchmarks.md``) and back.
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
    check_same_structure,
    compute_dtype,
    state_dtype_for,
    zeros_state,
)
from hyperadam_optax.optimizers.lstm import contract_features, leading, sigmoid, trailing
from hyperadam_optax.optimizers.spec import OptimizerSpec, TrainingRecipe, require_meta_params

#: The code's clipping range of the log learning rate.
LOG_LR_CLIP = 33.0


class L2OScaleParams(NamedTuple):
    """Meta-parameters of L2O-Scale. Sizes: K timescales (``shortcut_w.shape[0]``, 4), the
    Parameter, Tensor and Global RNN widths P, T, G (10, 20, 20); F = 3K input features.

    Attributes:
      param_gate_w, param_gate_b: ``(F+P, 2P)``, ``(2P,)``: Parameter GRU reset/update gates
        on ``[x, h]`` (gate bias initialised to 2.2).
      param_cand_w, param_cand_b: ``(F+P, P)``, ``(P,)``: its candidate on ``[x, r*h]``.
      tensor_gate_w, tensor_gate_b, tensor_cand_w, tensor_cand_b: the Tensor GRU's, input
        ``P+F`` (the leaf's mean of ``[new h, x]``), width T.
      global_gate_w, global_gate_b, global_cand_w, global_cand_b: the Global GRU's, input T
        (the mean of the new per-tensor states), width G.
      tensor_to_param_w, tensor_to_param_b: ``(T, 3P)``, ``(3P,)``: previous tensor state ->
        the Parameter GRU's injected (r, u, c) bias; with ``global_to_param_*`` ``(G, 3P)``.
      global_to_tensor_w, global_to_tensor_b: ``(G, 3T)``, ``(3T,)``: the Tensor GRU's.
      update_w: ``(P,)``: direction readout (no bias, paper Sec. 3.3).
      shortcut_w: ``(K,)``: the direction's shortcut from the K rescaled momenta (init 1/K).
      lr_w, lr_b: ``(P,)``, ``()``: the change of the log learning rate (Eq. 7).
      decay_w, decay_b: ``(P,)``, ``()``: the shortest momentum timescale's logit (Eq. 1;
        bias init 2.2, decay about 0.9).
      ms_decay_w, ms_decay_b: ``(P,)``, ``()``: the second-moment decay's logit (Eq. 2; 3.2).
      lr_momentum_logit: ``()``: the log rate's running-average momentum logit (Eq. 8; 3.2).
      lr_offset: ``()``: added to the log rate of the step taken (init -1).
      param_init, tensor_init, global_init: ``(P,)``, ``(T,)``, ``(G,)``: learned initial
        states of the three levels (init U(-1, 1)).
    """

    param_gate_w: jax.Array
    param_gate_b: jax.Array
    param_cand_w: jax.Array
    param_cand_b: jax.Array
    tensor_gate_w: jax.Array
    tensor_gate_b: jax.Array
    tensor_cand_w: jax.Array
    tensor_cand_b: jax.Array
    global_gate_w: jax.Array
    global_gate_b: jax.Array
    global_cand_w: jax.Array
    global_cand_b: jax.Array
    tensor_to_param_w: jax.Array
    tensor_to_param_b: jax.Array
    global_to_param_w: jax.Array
    global_to_param_b: jax.Array
    global_to_tensor_w: jax.Array
    global_to_tensor_b: jax.Array
    update_w: jax.Array
    shortcut_w: jax.Array
    lr_w: jax.Array
    lr_b: jax.Array
    decay_w: jax.Array
    decay_b: jax.Array
    ms_decay_w: jax.Array
    ms_decay_b: jax.Array
    lr_momentum_logit: jax.Array
    lr_offset: jax.Array
    param_init: jax.Array
    tensor_init: jax.Array
    global_init: jax.Array


def l2o_scale_shapes(timescales: int, param_size: int, tensor_size: int,
                     global_size: int) -> dict[str, tuple[int, ...]]:
    k, p, t, g = timescales, param_size, tensor_size, global_size
    f = 3 * k
    return {
        "param_gate_w": (f + p, 2 * p), "param_gate_b": (2 * p,),
        "param_cand_w": (f + p, p), "param_cand_b": (p,),
        "tensor_gate_w": (p + f + t, 2 * t), "tensor_gate_b": (2 * t,),
        "tensor_cand_w": (p + f + t, t), "tensor_cand_b": (t,),
        "global_gate_w": (t + g, 2 * g), "global_gate_b": (2 * g,),
        "global_cand_w": (t + g, g), "global_cand_b": (g,),
        "tensor_to_param_w": (t, 3 * p), "tensor_to_param_b": (3 * p,),
        "global_to_param_w": (g, 3 * p), "global_to_param_b": (3 * p,),
        "global_to_tensor_w": (g, 3 * t), "global_to_tensor_b": (3 * t,),
        "update_w": (p,), "shortcut_w": (k,), "lr_w": (p,), "lr_b": (),
        "decay_w": (p,), "decay_b": (), "ms_decay_w": (p,), "ms_decay_b": (),
        "lr_momentum_logit": (), "lr_offset": (),
        "param_init": (p,), "tensor_init": (t,), "global_init": (g,),
    }


#: The fields whose leading dimension gives the sizes (K, P, T, G).
SIZE_FIELDS = ("shortcut_w", "param_cand_b", "tensor_cand_b", "global_cand_b")

#: Initial values of the fields that are not drawn at random (the code's).
_CONSTANT_INIT = {"lr_b": 0.0, "decay_b": 2.2, "ms_decay_b": 3.2, "lr_momentum_logit": 3.2,
                  "lr_offset": -1.0, "param_cand_b": 0.0, "tensor_cand_b": 0.0,
                  "global_cand_b": 0.0, "tensor_to_param_b": 0.0, "global_to_param_b": 0.0,
                  "global_to_tensor_b": 0.0, "param_gate_b": 2.2, "tensor_gate_b": 2.2,
                  "global_gate_b": 2.2}


def init_l2o_scale_meta_params(key: jax.Array, param_size: int = 10, tensor_size: int = 20,
                               global_size: int = 20, timescales: int = 4, *,
                               init: str = "paper", dtype=jnp.float32) -> L2OScaleParams:
    """The authors' initialisation (``init="paper"``, the only one): weights
    ``N(0, (0.5 / sqrt(fan_in))²)``, gate biases 2.2, decay logits 2.2 and 3.2, rate momentum
    logit 3.2, rate offset -1, shortcut ``1/K``, initial states ``U(-1, 1)``, other biases 0."""
    if init != "paper":
        raise ValueError(f"init must be 'paper' for L2O-Scale, got {init!r}")
    if min(param_size, tensor_size, global_size) < 1 or timescales < 2:
        raise ValueError("L2O-Scale needs RNN sizes >= 1 and timescales >= 2, got "
                         f"{(param_size, tensor_size, global_size)} and {timescales}")
    shapes = l2o_scale_shapes(timescales, param_size, tensor_size, global_size)
    keys = dict(zip(shapes, jax.random.split(key, len(shapes))))
    fields = {}
    for name, shape in shapes.items():
        if name in _CONSTANT_INIT:
            fields[name] = jnp.full(shape, _CONSTANT_INIT[name], dtype)
        elif name == "shortcut_w":
            fields[name] = jnp.full(shape, 1.0 / timescales, dtype)
        elif name.endswith("_init"):
            fields[name] = jax.random.uniform(keys[name], shape, dtype, -1.0, 1.0)
        else:  # a weight: fan_in is its first axis (P for the readout vectors)
            fields[name] = 0.5 / math.sqrt(shape[0]) * jax.random.normal(keys[name], shape, dtype)
    return L2OScaleParams(**fields)


class L2OScaleState(NamedTuple):
    """``count``; per coordinate (leaves shaped like the params, trailing axis last):
    ``momentum`` and ``ms`` ``param.shape + (K,)`` (Eq. 1-2), ``log_lr`` ``param.shape``
    (Eq. 8), ``param_state`` ``param.shape + (P,)``; per leaf ``tensor_state`` ``(T,)``;
    ``global_state`` ``(G,)``."""

    count: jax.Array
    momentum: Any
    ms: Any
    log_lr: Any
    param_state: Any
    tensor_state: Any
    global_state: jax.Array


def bias_gru(x, h, gate_w, gate_b, cand_w, cand_b, bias):
    """The code's ``BiasGRUCell``: a GRU with an injected ``bias = [b_r, b_u, b_c]``.

    ``r, u = σ([x, h] W_g + b_g + [b_r, b_u])``, ``c = tanh([x, r·h] W_c + b_c + b_c')``,
    ``h' = u·h + (1 - u)·c``. Features first: ``x`` ``(F, rows...)``, ``h`` ``(n, rows...)``
    (the rows of many coordinates, or none), ``bias`` ``(3n,)``; on a CPU this layout runs the
    per-coordinate GRU about 3x faster than features last (a (rows, F) matrix times a small
    one is slow there).
    """
    n = h.shape[0]
    gates = sigmoid(contract_features(gate_w, jnp.concatenate([x, h], 0))
                    + leading(gate_b + bias[:2 * n], h.ndim))
    r, u = gates[:n], gates[n:]
    c = jnp.tanh(contract_features(cand_w, jnp.concatenate([x, r * h], 0))
                 + leading(cand_b + bias[2 * n:], h.ndim))
    return u * h + (1 - u) * c


def clip_straight_through(x, bound: float):
    """``clip(x, -bound, bound)`` in the forward pass, the identity's gradient (the code's)."""
    return x + jax.lax.stop_gradient(jnp.clip(x, -bound, bound) - x)


def _features(g, momentum, ms, log_lr, h, first, mean_log_lr, w):
    """Eq. 1-4 for one leaf: the new moments and the Parameter RNN's ``3K`` inputs, features
    first (``momentum``, ``ms`` ``(K, rows...)``, ``h`` ``(P, rows...)``, ``g`` and ``log_lr``
    ``(rows...)``).

    Decays come from the previous state ``h``: ``d_1 = σ(h·w_d + b_d)``,
    ``d_{i+1} = sqrt(d_i)``; ``s = σ(h·w_s + b_s)`` (0 at the first step). Then
    ``a_i ← (1-d_i) g + d_i a_i``, ``ms_i ← (1-s)(a_i² + 1e-12) + s·ms_i``; inputs:
    ``asinh(a_i / sqrt(ms_i + 1e-16))`` (K), their neighbours' products (K-1),
    ``log(ms_i + 1e-16)`` minus its mean over i (K), ``log_lr`` minus its problem mean (1).
    """
    decays = [sigmoid(contract_features(w.decay_w, h) + w.decay_b)]
    for _ in range(momentum.shape[0] - 1):
        decays.append(jnp.sqrt(decays[-1]))
    decays = jnp.stack(decays)
    s = jnp.where(first, 0.0, sigmoid(contract_features(w.ms_decay_w, h) + w.ms_decay_b))[None]
    momentum = (1 - decays) * g[None] + decays * momentum
    ms = (1 - s) * (jnp.square(momentum) + 1e-12) + s * ms
    scaled = jnp.arcsinh(momentum / jnp.sqrt(ms + 1e-16))
    log_ms = jnp.log(ms + 1e-16)
    x = jnp.concatenate([
        scaled,
        scaled[:-1] * scaled[1:],
        log_ms - jnp.mean(log_ms, axis=0, keepdims=True),
        (log_lr - mean_log_lr)[None],
    ], axis=0)
    return momentum, ms, scaled, x


def _per_coordinate(g, momentum, ms, log_lr, h, bias, first, mean_log_lr, lr_momentum, w):
    """Eq. 1-4, the Parameter GRU and Eq. 7-8, features first: the new ``(momentum, ms, h,
    log_lr)``, the Tensor GRU's input terms ``[h, x]``, the direction ``δ`` before its RMS
    (Eq. 5) and the step before it, ``exp(l' + c) · δ`` with ``l' = clip(l + h·w_l + b_l)``;
    the kept log rate is ``m l + (1-m) l'``."""
    momentum, ms, scaled, x = _features(g, momentum, ms, log_lr, h, first, mean_log_lr, w)
    h = bias_gru(x, h, w.param_gate_w, w.param_gate_b, w.param_cand_w, w.param_cand_b, bias)
    direction = contract_features(w.update_w, h) + contract_features(w.shortcut_w, scaled)
    step_log_lr = clip_straight_through(log_lr + contract_features(w.lr_w, h) + w.lr_b, LOG_LR_CLIP)
    new_log_lr = lr_momentum * log_lr + (1 - lr_momentum) * step_log_lr
    return ((momentum, ms, h, new_log_lr), jnp.concatenate([h, x], 0), direction,
            jnp.exp(step_log_lr + w.lr_offset) * direction)


def _leaf_by_blocks(g, momentum, ms, log_lr, h, bias, first, mean_log_lr, lr_momentum, w, cdt,
                    block_rows):
    """:func:`_per_coordinate` of one leaf over blocks of rows in place
    (:mod:`~hyperadam_optax.optimizers.blocks`), each block turned features first, summing
    ``[h, x]`` (the Tensor GRU's input) and ``δ²`` (its RMS). Returns the new ``(momentum,
    ms, h, log_lr)`` (features last), the two sums and the step before the RMS."""
    n = g.size
    width = h.shape[-1] + 3 * momentum.shape[-1]  # [h, x]: P + 3K

    def block(blocks, inputs, valid):
        momentum, ms, h = (b.astype(cdt).T for b in blocks[:3])
        new, hx, direction, step = _per_coordinate(
            inputs[0].astype(cdt), momentum, ms, blocks[3].astype(cdt), h, bias, first,
            mean_log_lr, lr_momentum, w)
        return [a.T for a in new[:3]] + [new[3], step], (
            jnp.sum(jnp.where(valid[None], hx, 0.0), axis=1),
            jnp.sum(jnp.where(valid, jnp.square(direction), 0.0)))

    fields = [momentum.reshape(n, -1), ms.reshape(n, -1), h.reshape(n, -1), log_lr.reshape(n),
              jnp.zeros(n, cdt)]
    (momentum, ms, h, log_lr, step), sums = map_rows_in_place(
        block, fields, [g.reshape(n)], block_rows, (jnp.zeros((width,), cdt), jnp.zeros((), cdt)))
    return (momentum, ms, h, log_lr), sums, step


def scale_by_l2o_scale(meta_params: L2OScaleParams, *, initial_log_lr: float = math.log(1e-3),
                       state_dtype: Any = None, block_rows: int | None = None
                       ) -> optax.GradientTransformationExtraArgs:
    r"""L2O-Scale's step ``exp(l'_t + c) · δ_t`` (paper Eq. 5, 7, 8, 10-13; the authors' code).

    Per coordinate: the moments and inputs ``x`` of :func:`_features`; the Parameter GRU
    ``h ← GRU(x, h; bias = A_t(tensor state) + A_g(global state))``; per leaf the Tensor GRU
    on the leaf's mean of ``[h, x]`` (bias ``A(global state)``); the Global GRU on the mean
    of the new tensor states. Direction :math:`\delta = h w_u + \mathrm{asinh\ momenta} \cdot
    w_{sc}`, divided by its root mean square over the leaf (Eq. 5); log rate
    :math:`l' = \mathrm{clip}(l + h w_l + b_l, \pm 33)` (straight-through), kept as
    :math:`l \leftarrow m l + (1-m) l'`, :math:`m = \sigma(\text{logit})` (Eq. 7-8).

    Per-tensor means are over each leaf this transform is given; the relative log rate and
    the Global RNN see all of them: inside ``optax.partition`` or ``optax.masked`` "the
    problem" is the leaves routed here. ``initial_log_lr``: every coordinate's starting log
    rate (module docstring), finite and within ±33; sane: about log(1e-6) to log(1).
    ``block_rows``: a leaf of at least 8 blocks of this many coordinates is updated block by
    block, in place (:mod:`~hyperadam_optax.optimizers.blocks`; the same arithmetic);
    ``None``: 8,192 in a single-device CPU process, else 0 (off).
    Returns ``+`` the step: :func:`l2o_scale` negates it.
    """
    sizes = check_meta_params(meta_params, L2OScaleParams, SIZE_FIELDS, l2o_scale_shapes)
    timescales, param_size = sizes[0], sizes[1]
    if isinstance(initial_log_lr, (int, float)) and not abs(initial_log_lr) <= LOG_LR_CLIP:
        raise ValueError(f"initial_log_lr must be finite and within ±{LOG_LR_CLIP} (the clip of "
                         "the log rate); sane values are about log(1e-6) to log(1), steps of "
                         f"1e-6 to 1 per unit-RMS direction; got {initial_log_lr!r}")
    resolve_block_rows(block_rows)  # refuse a bad value now; the default is read at trace time
    mp = meta_params
    #: The per-tensor and global states' dtype: float32, or the meta-parameters' if wider.
    level_dtype = compute_dtype([], mp)

    def init_fn(params):
        check_float_leaves(params, "L2O-Scale params")
        leaves, treedef = jax.tree.flatten(params)

        def per_leaf(make):
            return jax.tree.unflatten(treedef, [make(p) for p in leaves])

        def dtype(p):
            return state_dtype_for(p, state_dtype)

        return L2OScaleState(
            count=jnp.zeros([], jnp.int32),
            momentum=per_leaf(lambda p: zeros_state(p, timescales, dtype(p))),
            ms=per_leaf(lambda p: zeros_state(p, timescales, dtype(p))),
            log_lr=per_leaf(lambda p: zeros_state(p, None, dtype(p)) + initial_log_lr),
            param_state=per_leaf(lambda p: zeros_state(p, param_size, dtype(p))
                                 + trailing(mp.param_init.astype(dtype(p)), p.ndim + 1)),
            tensor_state=per_leaf(lambda p: jnp.array(mp.tensor_init, level_dtype)),
            global_state=jnp.array(mp.global_init, level_dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_same_structure(updates, state.log_lr, "gradients", "L2O-Scale state (from init)")
        check_float_leaves(updates, "L2O-Scale gradients")
        count = optax.safe_increment(state.count)
        grads, treedef = jax.tree.flatten(updates)
        if not grads:
            return updates, state._replace(count=count)
        fields = [treedef.flatten_up_to(f) for f in state[1:6]]
        cdt = compute_dtype([m.dtype for m in fields[0]], mp)
        w = jax.tree.map(lambda a: a.astype(cdt), mp)
        glob = state.global_state.astype(cdt)
        first = count == 1
        mean_log_lr = (sum(jnp.sum(l.astype(cdt)) for l in fields[2])
                       / max(sum(l.size for l in fields[2]), 1))
        param_bias_global = glob @ w.global_to_param_w + w.global_to_param_b
        tensor_bias = glob @ w.global_to_tensor_w + w.global_to_tensor_b
        lr_momentum = sigmoid(w.lr_momentum_logit)
        rows_per_block = resolve_block_rows(block_rows)

        steps, new_fields, new_tensors = [], [], []
        for g, momentum, ms, log_lr, h, tensor in zip(grads, *fields):
            sd, leaf, n = momentum.dtype, g.shape, g.size
            tensor = tensor.astype(cdt)
            bias = tensor @ w.tensor_to_param_w + w.tensor_to_param_b + param_bias_global
            if use_blocks(n, rows_per_block):
                new, (sum_hx, sum_sq), step = _leaf_by_blocks(
                    g, momentum, ms, log_lr, h, bias, first, mean_log_lr, lr_momentum, w, cdt,
                    rows_per_block)
                new = [a.reshape(leaf + (-1,)) for a in new[:3]] + [new[3].reshape(leaf)]
                step = step.reshape(leaf)
            else:  # features first, then back to the state's features-last layout
                momentum, ms, h = (jnp.moveaxis(a.astype(cdt), -1, 0) for a in (momentum, ms, h))
                new, hx, direction, step = _per_coordinate(
                    g.astype(cdt), momentum, ms, log_lr.astype(cdt), h, bias, first, mean_log_lr,
                    lr_momentum, w)
                new = [jnp.moveaxis(a, 0, -1) for a in new[:3]] + [new[3]]
                sum_hx = jnp.sum(hx, axis=tuple(range(1, hx.ndim)))
                sum_sq = jnp.sum(jnp.square(direction))
            # Eq. 5: the direction over its RMS on the leaf; the Tensor GRU on the leaf's mean
            # of [h, x] (0 for a leaf with no coordinates).
            steps.append((step / jnp.sqrt(sum_sq / max(n, 1) + 1e-16)).astype(g.dtype))
            new_tensors.append(bias_gru(sum_hx / max(n, 1), tensor, w.tensor_gate_w,
                                        w.tensor_gate_b, w.tensor_cand_w, w.tensor_cand_b,
                                        tensor_bias))
            momentum, ms, h, log_lr = new
            new_fields.append([a.astype(sd) for a in (momentum, ms, log_lr, h)])

        glob = bias_gru(jnp.mean(jnp.stack(new_tensors), axis=0), glob, w.global_gate_w,
                        w.global_gate_b, w.global_cand_w, w.global_cand_b,
                        jnp.zeros((3 * glob.shape[-1],), cdt))
        columns = [jax.tree.unflatten(treedef, list(c)) for c in zip(*new_fields)]
        tensors = jax.tree.unflatten(treedef, [t.astype(level_dtype) for t in new_tensors])
        return (jax.tree.unflatten(treedef, steps),
                L2OScaleState(count, *columns, tensors, glob.astype(level_dtype)))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def l2o_scale(learning_rate: optax.ScalarOrSchedule = 1.0,
              meta_params: L2OScaleParams | None = None, *,
              initial_log_lr: float = math.log(1e-3), state_dtype: Any = None,
              block_rows: int | None = None) -> optax.GradientTransformationExtraArgs:
    """L2O-Scale: ``w -= learning_rate · exp(l' + c) · δ``; ``learning_rate = 1`` is the paper's
    step (the step length is the optimizer's own output).

    ``meta_params`` is required here (``hyperadam_optax.l2o_scale`` loads the shipped weights
    when it is ``None``). Other arguments: :func:`scale_by_l2o_scale`.
    """
    require_meta_params(meta_params, "l2o_scale")
    return optax.chain(scale_by_l2o_scale(meta_params, initial_log_lr=initial_log_lr,
                                          state_dtype=state_dtype, block_rows=block_rows),
                       optax.scale_by_learning_rate(learning_rate))


#: L2O-Scale in the optimizer registry; its paper's objective (the log-ratio meta-loss) on the
#: library's cheap scale-augmented task.
SPEC = OptimizerSpec(
    name="l2o_scale",
    params_type=L2OScaleParams,
    size_field=SIZE_FIELDS,
    shapes=l2o_scale_shapes,
    init_meta_params=init_l2o_scale_meta_params,
    make=l2o_scale,
    default_learning_rate=1.0,
    recipe=TrainingRecipe(task="digits-mlp-scaled", meta_loss="log_ratio", meta_lr=1e-3),
    aliases=("l2o-scale",),
)
