"""Named learned optimizers and task families (what the CLI's names refer to)."""

from __future__ import annotations

import functools

from hyperadam_optax._dm_optimizer import dm_optimizer, init_dm_meta_params
from hyperadam_optax._hyperadam import hyperadam
from hyperadam_optax._meta_params import init_meta_params
from hyperadam_optax._rnnprop import init_rnnprop_meta_params, rnnprop
from hyperadam_optax.meta_train import LearnedOptimizer
from hyperadam_optax.tasks import (
    TaskFamily,
    mnist_mlp,
    mnist_mlp_mixture,
    random_quadratics,
    random_scaling_with_convex,
)


def hyperadam_learned(learning_rate: float = 0.005, num_candidates: int = 20,
                      init: str = "paper", warm_start_step: float = 1.0,
                      warm_start_betas: tuple[float, float] = (0.9, 0.999),
                      warm_start_decay: tuple[float, float] | None = None) -> LearnedOptimizer:
    """HyperAdam for meta-training: α = 0.005, J = 20, mean-of-losses meta-loss (authors' code).

    ``init="adam"`` starts from Adam(*warm_start_betas) at rate
    ``learning_rate * warm_start_step``, decaying over time if ``warm_start_decay`` is
    ``(horizon, floor)`` (:func:`init_meta_params`).
    """
    return LearnedOptimizer(
        name="hyperadam",
        init_meta_params=functools.partial(init_meta_params, num_candidates=num_candidates,
                                           init=init, warm_start_step=warm_start_step,
                                           warm_start_betas=warm_start_betas,
                                           warm_start_decay=warm_start_decay),
        make=lambda theta: hyperadam(learning_rate, theta),
        meta_loss="mean",
    )


def rnnprop_learned(learning_rate: float = 1.0, hidden: int = 20,
                    init: str = "paper") -> LearnedOptimizer:
    """RNNprop as in its authors' code: the paper's step (``learning_rate=1``), the last loss
    of each truncation as meta-loss, the Random Scaling + convex problem, meta Adam 1e-4."""
    return LearnedOptimizer(
        name="rnnprop",
        init_meta_params=functools.partial(init_rnnprop_meta_params, hidden=hidden, init=init),
        make=lambda theta: rnnprop(learning_rate, theta),
        meta_loss="last",
        default_task="mnist-mlp-rs",
        default_meta_lr=1e-4,
    )


def dm_learned(learning_rate: float = 1.0, hidden: int = 20, init: str = "paper",
               variant: str = "deepmind") -> LearnedOptimizer:
    """The DMoptimizer as in DeepMind's code: the sum of all losses as meta-loss, the plain
    MNIST MLP (weights ~ N(0, 0.01²)), meta Adam 1e-3."""
    return LearnedOptimizer(
        name="dm",
        init_meta_params=functools.partial(init_dm_meta_params, hidden=hidden, init=init),
        make=lambda theta: dm_optimizer(learning_rate, theta, variant=variant),
        meta_loss="sum",
        default_task="mnist-mlp-dm",
        default_meta_lr=1e-3,
    )


OPTIMIZERS = {"hyperadam": hyperadam_learned, "rnnprop": rnnprop_learned, "dm": dm_learned}

#: Task name -> (builder taking the training data (x, y) or None, needs_data).
TASKS = {
    # The HyperAdam/RNNprop training problem: MNIST MLP under Random Scaling (r = 3) plus the
    # 20-dim clipped convex term under Random Scaling (r = 1).
    "mnist-mlp-rs": (lambda data: random_scaling_with_convex(mnist_mlp(*data), r=3.0), True),
    "mnist-mlp": (lambda data: mnist_mlp(*data), True),
    # The base MLP with its hidden activation drawn per task from tasks.VALIDATION_ACTIVATIONS
    # (sigmoid, softplus, SiLU, GELU, leaky ReLU 0.1): a family of no reported test task.
    "mnist-mlp-mix": (lambda data: mnist_mlp_mixture(*data), True),
    # DeepMind's MNIST problem for the DMoptimizer: the same MLP, weights ~ N(0, 0.01²).
    "mnist-mlp-dm": (lambda data: mnist_mlp(*data, init_std=0.01), True),
    "quadratic": (lambda data: random_quadratics(10), False),
}


def make_optimizer(name: str, **kwargs) -> LearnedOptimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](**kwargs)


def make_task(name: str, data=None) -> TaskFamily:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    build, needs_data = TASKS[name]
    if needs_data and data is None:
        raise ValueError(f"task {name!r} needs training data (x, y)")
    return build(data)


__all__ = ["OPTIMIZERS", "TASKS", "dm_learned", "hyperadam_learned", "make_optimizer", "make_task",
           "rnnprop_learned"]
