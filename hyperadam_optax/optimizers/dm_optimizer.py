"""DMoptimizer (Andrychowicz et al., NeurIPS 2016) as an optax gradient transformation."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperadam_optax.optimizers.blocks import by_blocks, resolve_block_rows
from hyperadam_optax.optimizers.coordinatewise import (
    check_float_leaves,
    check_meta_params,
    check_same_structure,
    compute_dtype,
    map_leaves,
    state_dtype_for,
    zeros_state,
)
from hyperadam_optax.optimizers.lstm import (
    init_two_layer_lstm_output,
    two_layer_lstm_output,
)
from hyperadam_optax.optimizers.spec import OptimizerSpec, TrainingRecipe, require_meta_params

#: ``(k, output_scale)`` of the two published variants of the preprocessing and output.
DM_VARIANTS = {"deepmind": (5.0, 0.01), "rnnprop": (10.0, 0.1)}


class DMParams(NamedTuple):
    """Meta-parameters of the DMoptimizer; hidden size H = ``theta_out.shape[0]`` (20).

    Attributes:
      theta_h1, b_h1: ``(2 + H, 4H)``, ``(4H,)``: first LSTM layer on the two preprocessed
        gradient features and ``h1``; gates (i, g, f, o).
      theta_h2, b_h2: ``(2H, 4H)``, ``(4H,)``: second LSTM layer on ``[h1, h2]``.
      theta_out, b_out: ``(H, 1)``, ``(1,)``: output layer, ``out = h2 θ_out + b_out``.
    """

    theta_h1: jax.Array
    b_h1: jax.Array
    theta_h2: jax.Array
    b_h2: jax.Array
    theta_out: jax.Array
    b_out: jax.Array


def dm_shapes(hidden: int) -> dict[str, tuple[int, ...]]:
    h = hidden
    return {"theta_h1": (2 + h, 4 * h), "b_h1": (4 * h,), "theta_h2": (2 * h, 4 * h),
            "b_h2": (4 * h,), "theta_out": (h, 1), "b_out": (1,)}


def init_dm_meta_params(key: jax.Array, hidden: int = 20, init: str = "paper", *,
                        dtype=jnp.float32) -> DMParams:
    """LSTM kernels Glorot-uniform with forget bias 1, output layer truncated normal (std 0.1),
    zero output bias. (A guess: the reference notes give no initialisation for this model.)"""
    return DMParams(**init_two_layer_lstm_output(jax.random.split(key, 3), 2, hidden, init, dtype))


class DMState(NamedTuple):
    """``count`` and the two LSTM layers' states, each of shape ``param.shape + (H,)``."""

    count: jax.Array
    h1: Any
    c1: Any
    h2: Any
    c2: Any


def log_sign_preprocess(g: jax.Array, k: float) -> jax.Array:
    """``[max(log(|g| + ε) / k, -1), clip(g · e^k, -1, 1)]`` (Andrychowicz et al., App. A), ε the
    float32 machine epsilon as in DeepMind's code. Returns shape ``g.shape + (2,)``."""
    eps = float(np.finfo(np.float32).eps)
    log = jnp.maximum(jnp.log(jnp.abs(g) + eps) / k, -1.0)
    sign = jnp.clip(g * np.exp(k), -1.0, 1.0)
    return jnp.stack([log, sign], axis=-1)


def scale_by_dm_optimizer(meta_params: DMParams, *, variant: str = "deepmind",
                          state_dtype: Any = None, block_rows: int | None = None
                          ) -> optax.GradientTransformationExtraArgs:
    """The DMoptimizer's direction ``d_t = -output_scale · out_t``.

    Per coordinate: log/sign preprocessing with ``k`` → two LSTM layers → dense → ``out``; the
    paper's update is ``w += output_scale · out`` (no tanh): :func:`dm_optimizer` with
    ``learning_rate=1``. ``variant``: ``"deepmind"`` (k = 5, scale 0.01, DeepMind's code) or
    ``"rnnprop"`` (k = 10, scale 0.1, the RNNprop authors' re-implementation).
    ``block_rows``: a leaf of at least 8 blocks of this many coordinates is updated block by
    block, in place (:mod:`~hyperadam_optax.optimizers.blocks`; the same arithmetic); ``None``:
    8,192 in a single-device CPU process, else 0 (off).
    """
    if variant not in DM_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(DM_VARIANTS)}, got {variant!r}")
    k, output_scale = DM_VARIANTS[variant]
    hidden = check_meta_params(meta_params, DMParams, "theta_out", dm_shapes)
    resolve_block_rows(block_rows)  # refuse a bad value now; the default is read at trace time
    mp = meta_params

    def init_fn(params):
        check_float_leaves(params, "DMoptimizer params")

        def fields(p):
            return tuple(zeros_state(p, hidden, state_dtype_for(p, state_dtype))
                         for _ in range(4))

        return DMState(jnp.zeros([], jnp.int32), *map_leaves(fields, 4, params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        check_same_structure(updates, state.h1, "gradients", "DMoptimizer state (from init)",
                             trailing=1)
        check_float_leaves(updates, "DMoptimizer gradients")

        def leaf(g, h1, c1, h2, c2):
            cdt = compute_dtype([h1.dtype], mp)
            w = jax.tree.map(lambda x: x.astype(cdt), mp)
            x = log_sign_preprocess(g.astype(cdt), k)  # leaf-shaped: shardings are kept
            out, states = two_layer_lstm_output(
                x, *(a.astype(cdt) for a in (h1, c1, h2, c2)), w)
            d = -output_scale * out
            return (d.astype(g.dtype), *(a.astype(h1.dtype) for a in states))

        leaf = by_blocks(leaf, resolve_block_rows(block_rows))
        d, *fields = map_leaves(leaf, 5, updates, *state[1:])
        return d, DMState(optax.safe_increment(state.count), *fields)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def dm_optimizer(learning_rate: optax.ScalarOrSchedule = 1.0, meta_params: DMParams | None = None,
                 *, variant: str = "deepmind", state_dtype: Any = None,
                 block_rows: int | None = None) -> optax.GradientTransformationExtraArgs:
    """DMoptimizer: ``w += learning_rate · output_scale · out``; ``learning_rate = 1`` is the paper's.

    ``learning_rate`` multiplies the model's own output scale (0.01, or 0.1 for
    ``variant="rnnprop"``). ``meta_params`` is required here
    (``hyperadam_optax.dm_optimizer`` loads the shipped weights when it is ``None``).
    ``variant``, ``state_dtype``, ``block_rows``: :func:`scale_by_dm_optimizer`.
    """
    require_meta_params(meta_params, "dm_optimizer")
    return optax.chain(scale_by_dm_optimizer(meta_params, variant=variant, state_dtype=state_dtype,
                                             block_rows=block_rows),
                       optax.scale_by_learning_rate(learning_rate))


#: The DMoptimizer in the optimizer registry (also called ``"dm"``): the paper's step, hidden
#: 20; DeepMind's recipe (plain MNIST MLP with N(0, 0.01²) weights, sum of losses, 1e-3).
SPEC = OptimizerSpec(
    name="dm_optimizer",
    params_type=DMParams,
    size_field="theta_out",
    shapes=dm_shapes,
    init_meta_params=init_dm_meta_params,
    make=dm_optimizer,
    default_learning_rate=1.0,
    recipe=TrainingRecipe(task="mnist-mlp-dm", meta_loss="sum", meta_lr=1e-3),
    aliases=("dm",),
)
