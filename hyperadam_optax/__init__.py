"""hyperadam_optax: HyperAdam (Wang, Sun & Xu, AAAI 2019) and learned optimizers for optax."""

from hyperadam_optax._dm_optimizer import (
    DMParams,
    DMState,
    dm_optimizer,
    init_dm_meta_params,
    scale_by_dm_optimizer,
)
from hyperadam_optax._hyperadam import (
    HyperAdamState,
    hyperadam,
    hyperadam_internals,
    scale_by_hyperadam,
)
from hyperadam_optax._meta_params import (
    HyperAdamParams,
    adam_meta_params,
    init_meta_params,
)
from hyperadam_optax._pretrained import (
    PretrainedWeightsUnavailableError,
    load_pretrained,
    pretrained_card,
)
from hyperadam_optax._rnnprop import (
    RNNpropParams,
    RNNpropState,
    init_rnnprop_meta_params,
    rnnprop,
    scale_by_rnnprop,
)
from hyperadam_optax._serialization import load_meta_params, save_meta_params

__version__ = "0.1.0"

__all__ = [
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
    "HyperAdamParams",
    "HyperAdamState",
    "PretrainedWeightsUnavailableError",
    "adam_meta_params",
    "hyperadam",
    "hyperadam_internals",
    "init_meta_params",
    "load_meta_params",
    "load_pretrained",
    "pretrained_card",
    "save_meta_params",
    "scale_by_hyperadam",
]
