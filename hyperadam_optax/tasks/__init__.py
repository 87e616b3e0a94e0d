"""Optimizees as task families, the data they train on, and the one task registry.

Layer 2 of the package: :class:`TaskFamily` (four pure functions), the paper's optimizees
(MLPs, CNNs, the sine-sequence LSTM, quadratics), the Random Scaling + convex augmentation,
the embedded data, and :data:`TASKS`, the names meta-training and evaluation share.
"""

from hyperadam_optax.tasks.augment import random_scaling, random_scaling_with_convex
from hyperadam_optax.tasks.base import TaskFamily
from hyperadam_optax.tasks.cnn import mnist_cnn
from hyperadam_optax.tasks.mlp import (
    VALIDATION_ACTIVATIONS,
    digits_mlp,
    mnist_mlp,
    mnist_mlp_mixture,
)
from hyperadam_optax.tasks.quadratic import random_quadratics
from hyperadam_optax.tasks.registry import TASKS, TaskSpec, get_task, make_task
from hyperadam_optax.tasks.sine_lstm import sine_lstm

__all__ = ["TASKS", "TaskFamily", "TaskSpec", "VALIDATION_ACTIVATIONS", "digits_mlp", "get_task",
           "make_task", "mnist_cnn", "mnist_mlp", "mnist_mlp_mixture", "random_quadratics",
           "random_scaling", "random_scaling_with_convex", "sine_lstm"]
