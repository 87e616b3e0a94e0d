"""The one registry of named task families, read by meta-training, evaluation and the CLI.

A name maps to a :class:`TaskSpec`: how to build the family from the MNIST training data
``(x, y)`` (or without data). The evaluation suites (``hyperadam_optax.evaluation.SUITES``)
are tuples of these names.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from hyperadam_optax.tasks import l2o_problems as l2o
from hyperadam_optax.tasks.augment import (
    log_objective,
    random_scaling,
    random_scaling_with_convex,
    sparse_gradient,
)
from hyperadam_optax.tasks.autoencoder import digits_autoencoder
from hyperadam_optax.tasks.base import TaskFamily
from hyperadam_optax.tasks.cnn import digits_cnn, mnist_cnn
from hyperadam_optax.tasks.data import mnist_data
from hyperadam_optax.tasks.mlp import digits_mlp, mnist_mlp, mnist_mlp_mixture
from hyperadam_optax.tasks.quadratic import random_quadratics
from hyperadam_optax.tasks.sequence import digits_rows_lstm
from hyperadam_optax.tasks.sine_lstm import sine_lstm
from hyperadam_optax.tasks.tabular import tabular_classifier, tabular_regression


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """``build(data) -> TaskFamily``; ``data`` is MNIST ``(x, y)`` if ``needs_data`` else None."""

    build: Callable[[tuple | None], TaskFamily]
    needs_data: bool
    description: str
    #: The steps an evaluation suite scores this family at (a long-horizon family); None: the
    #: suite's ``steps``.
    horizon: int | None = None


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
    # Networks of other kinds and shapes for ensembles (activations, widths and depths that no
    # validation family and no reported task has).
    "digits-cnn": TaskSpec(lambda d: digits_cnn(batch_size=32), False,
                           "convnet c(8)-p-c(16)-p-f on the 8x8 digits (1,898 parameters), "
                           "batches of 32"),
    "digits-mlp-softplus-deep": TaskSpec(
        lambda d: digits_mlp(sizes=(64, 16, 16, 16, 16, 10), activation="softplus"), False,
        "MLP 64-16-16-16-16-10 softplus on the 8x8 digits"),
    "mnist-mlp-leaky-narrow": _mnist(
        lambda d: mnist_mlp(*d, sizes=(784, 8, 10), activation="leaky_relu"),
        "MLP 784-8-10 leaky ReLU 0.1 on MNIST"),
    "mnist-mlp-softplus-2x8": _mnist(
        lambda d: mnist_mlp(*d, sizes=(784, 8, 8, 10), activation="softplus"),
        "MLP 784-8-8-10 softplus on MNIST"),
    "sine-lstm-small": TaskSpec(lambda d: sine_lstm(hidden=8, noise=0.05), False,
                                "sine-sequence LSTM with 8 hidden units, noise 0.05 (Table 2's "
                                "have 20 units)"),
    # The L2O-Scale problem set (Sec. 4.1 of its paper; tasks/l2o_problems.py), for ensembles.
    "l2o-functions-2d": TaskSpec(lambda d: l2o.functions_2d(), False,
                                 "the nine 2-D test functions (Rosenbrock, Ackley, ...), one "
                                 "per task, gradient noise 0 or 1"),
    "l2o-bowls": TaskSpec(lambda d: l2o.bowls(), False,
                          "2-D bowls of condition 0.1, 1, 5 and 5 rotated, noise 0 or 0.1"),
    "l2o-quadratic20": TaskSpec(lambda d: l2o.quadratic(20), False,
                                "0.5 ||Wx - y||², 20-dim, W, y ~ N(0, 1)"),
    "l2o-quadratic50-noisy": TaskSpec(lambda d: l2o.quadratic(50, noise=1.0), False,
                                      "0.5 ||Wx - y||², 50-dim, gradient noise 1"),
    "l2o-quadratic20-log": TaskSpec(lambda d: log_objective(l2o.quadratic(20)), False,
                                    "log(f + 1e-6) - log(1e-6) of the 20-dim quadratic"),
    "l2o-norm20": TaskSpec(lambda d: l2o.norm_problem(20, 1.0), False,
                           "sum |Wx - y| (+1e-6), 20-dim"),
    "l2o-logistic10": TaskSpec(lambda d: l2o.logistic_regression(10), False,
                               "two-class logistic regression, 10 features, batch 100"),
    "l2o-logistic100-noisy": TaskSpec(lambda d: l2o.logistic_regression(100, batch=20,
                                                                        noise=1.0), False,
                                      "logistic regression, 100 features, batch 20, noise 1"),
    "l2o-logistic100-sparse": TaskSpec(
        lambda d: sparse_gradient(l2o.logistic_regression(100, batch=50), keep=0.01), False,
        "logistic regression, 100 features, 99% of gradient coordinates zeroed per step"),
    "l2o-teacher-mlp": TaskSpec(lambda d: l2o.teacher_mlp_regression((16,)), False,
                                "sigmoid MLP 8-16-1 fitting a random 6-layer ReLU net"),
    "l2o-teacher-mlp-deep-scaled": TaskSpec(
        lambda d: random_scaling(l2o.teacher_mlp_regression((16, 16, 16)), r=math.log(1000.0)),
        False, "sigmoid MLP 8-16-16-16-1 fitting a random ReLU net, coordinates rescaled by "
               "exp(U[-ln 1000, ln 1000])"),
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
    # Report families (REPORT_FAMILIES): only ever reported, never used to choose anything.
    "val-breast-cancer-logistic": TaskSpec(
        lambda d: tabular_classifier("breast_cancer"), False,
        "logistic regression on scikit-learn's breast cancer table (30 features, convex)"),
    "val-diabetes-mlp": TaskSpec(
        lambda d: tabular_regression("diabetes", hidden=(32,), activation="tanh"), False,
        "MLP 10-32-1 tanh regression on scikit-learn's diabetes table"),
    "val-digits-rows-lstm": TaskSpec(
        lambda d: digits_rows_lstm(hidden=16), False,
        "LSTM (16 units) reading an 8x8 digit row by row, then a dense classifier"),
    "val-digits-autoencoder-1000": TaskSpec(
        lambda d: digits_autoencoder(hidden=(32, 8, 32), activation="softplus"), False,
        "autoencoder 64-32-8-32-64 softplus on the 8x8 digits, scored after 1,000 steps",
        horizon=1000),
    "val-wine-mlp-1000": TaskSpec(
        lambda d: tabular_classifier("wine", hidden=(32, 32), activation="elu"), False,
        "MLP 13-32-32-3 ELU on scikit-learn's wine table, scored after 1,000 steps",
        horizon=1000),
    "cnn1": _mnist(lambda d: mnist_cnn(*d, architecture="cnn1"), "CNN-1 c-c-p-f (Fig. 6)"),
    "cnn2": _mnist(lambda d: mnist_cnn(*d, architecture="cnn2"), "CNN-2 c-c-p-c-c-p-f-f (Fig. 6)"),
}


#: Task ensembles for meta-training: a name -> the task families sampled per meta-step (one
#: compiled program each). None of them is, or contains, a ``val-*`` family or a reported task.
ENSEMBLES: dict[str, tuple[str, ...]] = {
    "l2o-set": ("l2o-functions-2d", "l2o-bowls", "l2o-quadratic20", "l2o-quadratic50-noisy",
                "l2o-quadratic20-log", "l2o-norm20", "l2o-logistic10", "l2o-logistic100-noisy",
                "l2o-logistic100-sparse", "l2o-teacher-mlp", "l2o-teacher-mlp-deep-scaled"),
}
ENSEMBLES["l2o-set-digits"] = ENSEMBLES["l2o-set"] + ("digits-mlp", "digits-mlp-scaled")
#: Networks only: image MLPs of several shapes and activations, a convnet, an LSTM, and the
#: L2O-Scale set's teacher-net regressions.
ENSEMBLES["nets"] = ("digits-mlp", "digits-mlp-scaled", "digits-mlp-softplus-deep",
                     "digits-cnn", "mnist-mlp-leaky-narrow", "mnist-mlp-softplus-2x8",
                     "sine-lstm-small", "l2o-teacher-mlp", "l2o-teacher-mlp-deep-scaled")
#: The whole ensemble of the meta-training issue: the L2O-Scale set plus the networks.
ENSEMBLES["l2o-set-nets"] = ENSEMBLES["l2o-set"] + tuple(
    n for n in ENSEMBLES["nets"] if n not in ENSEMBLES["l2o-set"])

#: The validation families: no paper reports them and no ensemble contains them. Split once,
#: here: checkpoints and settings are chosen on the SELECTION families (``meta-train
#: --validate-on selection``, the suite "selection"); the REPORT families are only reported
#: (the suite "report"), so a reported score was never optimised. The suite "validation" is
#: both.
SELECTION_FAMILIES = ("val-digits-tanh-wide", "val-digits-gelu-deep", "val-digits-linear",
                      "val-mnist-silu-wide", "val-noisy-quadratic")
REPORT_FAMILIES = ("val-breast-cancer-logistic", "val-diabetes-mlp", "val-digits-rows-lstm",
                   "val-digits-autoencoder-1000", "val-wine-mlp-1000")
VALIDATION_FAMILIES = SELECTION_FAMILIES + REPORT_FAMILIES


def ensemble_members(name: str) -> tuple[str, ...]:
    """The task names of ensemble ``name`` (or ``"selection"``: :data:`SELECTION_FAMILIES`,
    also spelt ``"validation"`` as before the split), of a comma-separated list of tasks, or
    ``(name,)`` for a single task; each is checked against :data:`TASKS`. Report families
    never score checkpoints: a list naming one is refused."""
    named = {**ENSEMBLES, "selection": SELECTION_FAMILIES, "validation": SELECTION_FAMILIES}
    names = named.get(name) or tuple(n.strip() for n in name.split(","))
    for n in names:
        get_task(n)
    if len(set(names)) != len(names):
        raise ValueError(f"task list {name!r} names a task twice")
    return names


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)} or an "
                         f"ensemble {sorted(ENSEMBLES)}")
    return TASKS[name]


def build_families(names: str, data_dir: str | None = None
                   ) -> tuple[dict[str, TaskFamily], str]:
    """The families of ``names`` (a task, an ensemble, ``"selection"`` or tasks separated by
    commas: :func:`ensemble_members`), in order, each built on MNIST's training images (the
    embedded ones, or full MNIST from ``data_dir``) if it needs them, and the data's
    description (``"none"`` if no family needs any, ``data_dir`` unread)."""
    members = ensemble_members(names)
    data, description = None, "none"
    if any(get_task(n).needs_data for n in members):
        d, description = mnist_data(data_dir, "train")
        data = (d.x, d.y)
    return {n: get_task(n).build(data if get_task(n).needs_data else None)
            for n in members}, description


def make_task(name: str, data=None) -> TaskFamily:
    """The family ``name``; ``data``: MNIST ``(x, y)`` for the tasks that need it."""
    spec = get_task(name)
    if spec.needs_data and data is None:
        raise ValueError(f"task {name!r} needs training data (x, y)")
    return spec.build(data)
