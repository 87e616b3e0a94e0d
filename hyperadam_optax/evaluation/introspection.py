"""A look inside HyperAdam: its decay rates and weights over a training run.

HyperAdam's idea (Sec. 3 of the paper) is that the learned optimizer chooses, per step and
coordinate, the decay rates ``β_t, γ_t`` of J Adam-like candidates and the weights ``ρ_t``
that combine them. :func:`trace_hyperadam` records them along a run;
:func:`plot_trace` draws them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperadam_optax.meta.unroll import train
from hyperadam_optax.optimizers.hyperadam import HyperAdamParams, hyperadam, hyperadam_internals
from hyperadam_optax.tasks.base import TaskFamily


def _coordinate_mean(tree) -> jax.Array:
    """Mean over every coordinate of every leaf: ``(J,)``."""
    leaves = jax.tree.leaves(tree)
    total = sum(jnp.sum(x.reshape(-1, x.shape[-1]), axis=0) for x in leaves)
    return total / sum(x.size // x.shape[-1] for x in leaves)


def trace_hyperadam(meta_params: HyperAdamParams, family: TaskFamily, key: jax.Array,
                    steps: int, learning_rate: float = 0.005,
                    normalization: str = "global_l2",
                    sign_agreement: bool = False) -> dict[str, np.ndarray]:
    """Train one task of ``family`` with HyperAdam (``normalization`` and ``sign_agreement``
    as in ``scale_by_hyperadam``) and record its choices at every step.

    Returns numpy arrays: ``loss`` (steps,), the pre-update minibatch losses; ``beta``,
    ``gamma``, ``rho`` (steps, J), each candidate's decay rates and weight averaged over all
    coordinates; ``step_norm`` (steps,), the global norm of the update ``α d_t``.
    """
    options = {"normalization": normalization, "sign_agreement": sign_agreement}
    tx = hyperadam(learning_rate, meta_params, **options)

    def observe(grads, opt_state, updates):
        inside = hyperadam_internals(meta_params, grads, opt_state[0], **options)
        return {"step_norm": optax.tree.norm(updates),
                **{k: _coordinate_mean(v) for k, v in inside.items()}}

    run = jax.jit(lambda k: train(tx, family, k, steps, observe=observe)[0])
    loss, rows = run(key)
    return {"loss": np.asarray(loss), **{k: np.asarray(v) for k, v in rows.items()}}


def plot_trace(traces: dict[str, dict[str, np.ndarray]], path: str | None = None):
    """One row of panels per trace (label -> :func:`trace_hyperadam` output): loss, β_t, γ_t
    and ρ_t of every candidate over the steps. Returns the figure (saved to ``path`` if given)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(traces), 4, figsize=(15, 3.2 * len(traces)), squeeze=False)
    for row, (label, tr) in zip(axes, traces.items()):
        t = np.arange(1, len(tr["loss"]) + 1)
        row[0].plot(t, tr["loss"])
        row[0].set_yscale("log")
        row[0].set_title(f"{label}: loss")
        for ax, name, symbol in zip(row[1:], ("beta", "gamma", "rho"), ("β_t", "γ_t", "ρ_t")):
            ax.plot(t, tr[name], lw=0.8)
            ax.set_title(f"{label}: {symbol} (each line a candidate)")
        for ax in row:
            ax.set_xlabel("step")
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=100)
    return fig
