"""The one registry of named task families, read by meta-training, evaluation and the CLI.

A name maps to a :class:`TaskSpec`: how to build the family from the MNIST training data
``(x, y)`` (or without data). The evaluation suites (``hyperadam_optax.evaluation.SUITES``)
are tuples of these names.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from hyperadam_optax.tasks.augment import random_scaling, random_scaling_with_convex
from hyperadam_optax.tasks.base import TaskFamily
from hyperadam_optax.tasks.cnn import mnist_cnn
from hyperadam_optax.tasks.mlp import digits_mlp, mnist_mlp, mnist_mlp_mixture
from hyperadam_optax.tasks.quadratic import random_quadratics
from hyperadam_optax.tasks.sine_lstm import sine_lstm


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """``build(data) -> TaskFamily``; ``data`` is MNIST ``(x, y)`` if ``needs_data`` else None."""

    build: Callable[[tuple | None], TaskFamily]
    needs_data: bool
    description: str


def _mnist(build, description):
    return TaskSpec(build, True, description)


def _deep_mlp(n):
    return _mnist(lambda d: mnist_mlp(*d, sizes=(784,) + (20,) * n + (10,)),
                  f"MLP 784-{'-'.join(['20'] * n)}-10 sigmoid (Fig. 5d)")


TASKS: dict[str, TaskSpec] = {
    # Meta-training problems.
    "mnist-mlp-rs": _mnist(lambda d: random_scaling_with_convex(mnist_mlp(*d), r=3.0),
                           "HyperAdam's and RNNprop's training problem: the MNIST MLP under "
                           "Random Scaling (r = 3) plus the 20-dim clipped convex term"),
    "mnist-mlp": _mnist(lambda d: mnist_mlp(*d), "the plain MLP 784-20-10 sigmoid"),
    "mnist-mlp-mix": _mnist(lambda d: mnist_mlp_mixture(*d),
                            "the base MLP with its hidden activation drawn per task from "
                            "sigmoid, softplus, SiLU, GELU, leaky ReLU 0.1 (no reported task)"),
    "mnist-mlp-dm": _mnist(lambda d: mnist_mlp(*d, init_std=0.01),
                           "DeepMind's MNIST problem: the MLP with weights ~ N(0, 0.01²)"),
    "quadratic": TaskSpec(lambda d: random_quadratics(10), False,
                          "random 10-dim quadratics (quick experiments)"),
    # Cheap tasks on scikit-learn's 8x8 digits (they bring their own data).
    "digits-mlp": TaskSpec(lambda d: digits_mlp(), False,
                           "MLP 64-32-10 ReLU on the 8x8 digits (2,410 parameters)"),
    "digits-mlp-scaled": TaskSpec(lambda d: random_scaling(digits_mlp(), r=math.log(1000.0)),
                                  False, "the digits MLP with every coordinate rescaled by "
                                         "exp(U[-ln 1000, ln 1000]) per task"),
    # Evaluation tasks (the paper's tables and figures).
    **{f"mlp-{a}": _mnist(lambda d, a=a: mnist_mlp(*d, activation=a),
                          f"MLP 784-20-10 {a} (Table 1)")
       for a in ("sigmoid", "relu", "elu", "tanh")},
    "sine-baseline": TaskSpec(lambda d: sine_lstm(noise=0.1), False,
                              "sine-sequence LSTM, noise 0.1 (Table 2)"),
    "sine-small-noise": TaskSpec(lambda d: sine_lstm(noise=0.01), False,
                                 "sine-sequence LSTM, noise 0.01 (Table 2)"),
    "sine-2layer": TaskSpec(lambda d: sine_lstm(layers=2, noise=0.1), False,
                            "two-layer sine-sequence LSTM (Table 2)"),
    **{f"mlp-{n}hidden": _deep_mlp(n) for n in range(1, 11)},
    # Validation tasks: no paper reports them and no meta-training family contains them.
    "val-digits-tanh-wide": TaskSpec(lambda d: digits_mlp(sizes=(64, 128, 10), activation="tanh"),
                                     False, "MLP 64-128-10 tanh on the 8x8 digits"),
    "val-digits-gelu-deep": TaskSpec(
        lambda d: digits_mlp(sizes=(64, 32, 32, 32, 10), activation="gelu"), False,
        "MLP 64-32-32-32-10 GELU on the 8x8 digits"),
    "val-digits-linear": TaskSpec(lambda d: digits_mlp(sizes=(64, 10)), False,
                                  "softmax regression on the 8x8 digits (convex)"),
    "val-mnist-silu-wide": _mnist(lambda d: mnist_mlp(*d, sizes=(784, 64, 10), activation="silu"),
                                  "MLP 784-64-10 SiLU on MNIST"),
    "val-noisy-quadratic": TaskSpec(lambda d: random_quadratics(20, noise=1.0, cond=100.0), False,
                                    "20-dim quadratics, condition number 100, gradient noise 1"),
    "cnn1": _mnist(lambda d: mnist_cnn(*d, architecture="cnn1"), "CNN-1 c-c-p-f (Fig. 6)"),
    "cnn2": _mnist(lambda d: mnist_cnn(*d, architecture="cnn2"), "CNN-2 c-c-p-c-c-p-f-f (Fig. 6)"),
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]


def make_task(name: str, data=None) -> TaskFamily:
    """The family ``name``; ``data``: MNIST ``(x, y)`` for the tasks that need it."""
    spec = get_task(name)
    if spec.needs_data and data is None:
        raise ValueError(f"task {name!r} needs training data (x, y)")
    return spec.build(data)
