"""Meta-training (layer 3): the one optimizee unroll, the jitted meta-step, runs on disk.

- :mod:`~hyperadam_optax.meta.unroll`: the inner loop every other layer runs;
- :mod:`~hyperadam_optax.meta.learned`: :class:`LearnedOptimizer`, from the registry;
- :mod:`~hyperadam_optax.meta.truncation`: one truncation of one task slot;
  :mod:`~hyperadam_optax.meta.estimators`: meta-gradient estimators built from it (truncated
  and full BPTT, ES, PES); :mod:`~hyperadam_optax.meta.meta_step`: the jitted meta-step;
  :mod:`~hyperadam_optax.meta.config`: its settings; :mod:`~hyperadam_optax.meta.sharding`:
  devices;
- :mod:`~hyperadam_optax.meta.validation`: fixed validation tasks that choose checkpoints;
- :mod:`~hyperadam_optax.meta.choices`: what a run is set up from (the optimizer, the tasks,
  the run's options); :mod:`~hyperadam_optax.meta.run`: :func:`meta_train`, a run directory
  with resume.
"""

from hyperadam_optax.meta.choices import OptimizerChoice, RunOptions, TaskChoice
from hyperadam_optax.meta.config import ESTIMATORS, META_LOSSES, MetaTrainConfig
from hyperadam_optax.meta.learned import LearnedOptimizer, learned_optimizer
from hyperadam_optax.meta.meta_step import (
    MetaState,
    init_meta_state,
    make_meta_step,
    outer_optimizer,
    truncated_unroll,
)
from hyperadam_optax.meta.plots import plot_metrics
from hyperadam_optax.meta.run import NonFiniteMetaStepsError, meta_train
from hyperadam_optax.meta.run_dir import RunConfigMismatchError, read_metrics
from hyperadam_optax.meta.sharding import cpu_compiler_options, shard_meta_state, task_mesh
from hyperadam_optax.meta.truncation import TaskSlot
from hyperadam_optax.meta.unroll import final_loss, optimizee_step, train, unroll
from hyperadam_optax.meta.validation import VALIDATION_METRICS, VALIDATION_SEED, make_evaluator

__all__ = ["ESTIMATORS", "META_LOSSES", "VALIDATION_METRICS", "VALIDATION_SEED", "LearnedOptimizer",
           "MetaState", "MetaTrainConfig", "NonFiniteMetaStepsError", "OptimizerChoice",
           "RunConfigMismatchError", "RunOptions", "TaskChoice", "TaskSlot", "cpu_compiler_options",
           "final_loss", "init_meta_state", "learned_optimizer", "make_evaluator",
           "make_meta_step", "meta_train", "optimizee_step", "outer_optimizer", "plot_metrics",
           "read_metrics", "shard_meta_state", "task_mesh", "train", "truncated_unroll", "unroll"]
