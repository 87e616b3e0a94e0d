"""hyperadam_optax: HyperAdam (Wang, Sun & Xu, AAAI 2019) and learned optimizers for optax.

Subpackages, bottom to top (docs/DESIGN.md): ``optimizers`` (the transforms and their
registry), ``io`` (files and the shipped weights), ``tasks`` (optimizees, data, the task
registry), ``meta`` (the unroll, meta-training, runs on disk), ``evaluation`` (the paper's
protocol, tuned baselines, suites, reports, introspection) and ``cli``.
"""

from importlib import metadata as _metadata

from hyperadam_optax import contrib
from hyperadam_optax.io.files import load_meta_params, save_meta_params
from hyperadam_optax.io.pretrained import (
    PretrainedWeightsUnavailableError,
    dm_optimizer,
    hyperadam,
    l2o_scale,
    load_pretrained,
    pretrained_card,
    rnnprop,
)
from hyperadam_optax.optimizers.dm_optimizer import (
    DMParams,
    DMState,
    init_dm_meta_params,
    scale_by_dm_optimizer,
)
from hyperadam_optax.optimizers.hyperadam import (
    HyperAdamParams,
    HyperAdamState,
    adam_meta_params,
    hyperadam_internals,
    hyperadam_shapes,
    init_hyperadam_meta_params,
    init_meta_params,
    scale_by_hyperadam,
)
from hyperadam_optax.optimizers.l2o_scale import (
    L2OScaleParams,
    L2OScaleState,
    init_l2o_scale_meta_params,
    scale_by_l2o_scale,
)
from hyperadam_optax.optimizers.rnnprop import (
    RNNpropParams,
    RNNpropState,
    init_rnnprop_meta_params,
    scale_by_rnnprop,
)

try:
    __version__ = _metadata.version("hyperadam-optax")
except _metadata.PackageNotFoundError:  # a checkout on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = [
    "contrib",
    "DMParams",
    "DMState",
    "RNNpropParams",
    "RNNpropState",
    "dm_optimizer",
    "init_dm_meta_params",
    "init_rnnprop_meta_params",
    "rnnprop",
    "scale_by_dm_optimizer",
    "scale_by_rnnprop",
    "L2OScaleParams",
    "L2OScaleState",
    "init_l2o_scale_meta_params",
    "l2o_scale",
    "scale_by_l2o_scale",
    "HyperAdamParams",
    "HyperAdamState",
    "PretrainedWeightsUnavailableError",
    "adam_meta_params",
    "hyperadam",
    "hyperadam_internals",
    "hyperadam_shapes",
    "init_hyperadam_meta_params",
    "init_meta_params",
    "load_meta_params",
    "load_pretrained",
    "pretrained_card",
    "save_meta_params",
    "scale_by_hyperadam",
]
