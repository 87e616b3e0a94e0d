"""Meta-gradient estimators, one module each, all with the same two functions:

- ``init_slots(key_slots, key_offsets, optimizer, family, config, meta_params)``: the
  estimator's per-task state (``MetaState.slots``), batched on a leading axis that is sharded
  over the devices' ``"tasks"`` mesh axis;
- ``gradient(optimizer, family, config, meta_params, slots, key) -> (meta_loss, estimate,
  slots_after, restarts)``: one meta-step's estimate, jittable and vmapped inside.

``tbptt`` (truncated BPTT), ``full`` (BPTT through whole trajectories), ``es`` (antithetic ES
over whole trajectories), ``pes`` (persistent ES over truncations).
"""

from hyperadam_optax.meta.estimators import es, full_bptt, pes, tbptt

#: ``MetaTrainConfig.estimator`` -> module.
ESTIMATORS = {"tbptt": tbptt, "full": full_bptt, "es": es, "pes": pes}

__all__ = ["ESTIMATORS", "es", "full_bptt", "pes", "tbptt"]
