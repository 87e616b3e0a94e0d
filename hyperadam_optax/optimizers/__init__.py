"""The learned optimizers as optax transformations, one module each, and their registry.

Layer 1 of the package: pure functions of (gradients, state, meta-parameters); no data, no
training loop, no file IO.
"""

from hyperadam_optax.optimizers.registry import OPTIMIZERS, get_optimizer
from hyperadam_optax.optimizers.spec import OptimizerSpec, TrainingRecipe

__all__ = ["OPTIMIZERS", "OptimizerSpec", "TrainingRecipe", "get_optimizer"]
