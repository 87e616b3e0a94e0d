"""A learned optimizer as meta-training sees it: meta-parameters in, optax transform out."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import optax

from hyperadam_optax.optimizers.registry import get_optimizer

PyTree = Any


@dataclasses.dataclass(frozen=True)
class LearnedOptimizer:
    """A learned optimizer for meta-training (any, not only the registry's).

    Attributes:
      name: its name.
      init_meta_params: ``key -> meta_params``.
      make: ``meta_params -> optax.GradientTransformation`` (cheap, pure: it is rebuilt from
        traced meta-parameters inside ``jax.grad``).
      meta_loss: its default meta-loss (one of ``META_LOSSES``).
      default_task: its default training problem (a name of ``hyperadam_optax.tasks.TASKS``).
      default_meta_lr: its default outer Adam learning rate.
    """

    name: str
    init_meta_params: Callable[[jax.Array], PyTree]
    make: Callable[[PyTree], optax.GradientTransformation]
    meta_loss: str = "mean"
    default_task: str = "mnist-mlp-rs"
    default_meta_lr: float = 1e-4


def learned_optimizer(name: str, *, learning_rate: float | None = None,
                      make_kwargs: dict | None = None, **init_kwargs) -> LearnedOptimizer:
    """The registry's optimizer ``name`` with its paper's training recipe as defaults.

    ``learning_rate``: the alias's rate (default: its paper's, e.g. HyperAdam's 0.005);
    ``make_kwargs``: other arguments of the alias (e.g. the DMoptimizer's ``variant``);
    ``init_kwargs``: arguments of its ``init_*_meta_params`` (e.g. ``init="adam"``,
    ``warm_start_betas`` for HyperAdam, ``hidden`` for RNNprop and DM).
    """
    spec = get_optimizer(name)
    rate = spec.default_learning_rate if learning_rate is None else learning_rate
    make_kwargs = dict(make_kwargs or {})
    return LearnedOptimizer(
        name=spec.name,
        init_meta_params=functools.partial(spec.init_meta_params, **init_kwargs),
        make=lambda theta: spec.make(rate, theta, **make_kwargs),
        meta_loss=spec.recipe.meta_loss,
        default_task=spec.recipe.task,
        default_meta_lr=spec.recipe.meta_lr,
    )
