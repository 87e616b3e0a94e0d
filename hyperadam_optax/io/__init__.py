"""Files: the ``.npz`` format of meta-parameters and checkpoints, and the shipped weights."""

from hyperadam_optax.io.files import (
    atomic_write,
    ensure_writable_dir,
    load_meta_params,
    load_pytree,
    load_weights_or_checkpoint,
    make_kwargs_of,
    meta_params_from_checkpoint,
    read_json,
    read_leaves,
    save_meta_params,
    save_pytree,
)
from hyperadam_optax.io.pretrained import (
    PRETRAINED,
    PretrainedWeightsUnavailableError,
    load_pretrained,
    pretrained_card,
)

__all__ = ["PRETRAINED", "PretrainedWeightsUnavailableError", "atomic_write",
           "ensure_writable_dir", "load_meta_params", "load_pretrained", "load_pytree",
           "load_weights_or_checkpoint", "make_kwargs_of", "meta_params_from_checkpoint",
           "pretrained_card", "read_json", "read_leaves", "save_meta_params", "save_pytree"]
