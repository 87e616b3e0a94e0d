"""Backpropagation through whole trajectories: the exact gradient of the trajectory's
meta-loss (with ``config.second_order``, also through the optimizee gradients).

It is truncated BPTT with one truncation per trajectory (``unroll == trajectory``, checked by
:class:`~hyperadam_optax.meta.config.MetaTrainConfig`): every meta-step starts each slot on a
fresh task, so nothing is carried and nothing is cut. Memory and time grow with the horizon.
"""

from hyperadam_optax.meta.estimators.tbptt import gradient, init_slots

__all__ = ["gradient", "init_slots"]
