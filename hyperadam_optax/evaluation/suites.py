"""The paper's evaluation suites: every (task, optimizer) pair run by the protocol.

A suite is a tuple of task names of the one task registry (``hyperadam_optax.tasks.TASKS``);
an optimizer is named as on the command line (:func:`parse_optimizer`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import jax
import optax

from hyperadam_optax.evaluation.baselines import BASELINES, tune_learning_rate
from hyperadam_optax.evaluation.protocol import run_protocol, test_metrics
from hyperadam_optax.io.files import load_weights_or_checkpoint, make_kwargs_of
from hyperadam_optax.io.pretrained import load_pretrained
from hyperadam_optax.optimizers import registry
from hyperadam_optax.tasks.base import TaskFamily
from hyperadam_optax.tasks.data import mnist_data
from hyperadam_optax.tasks.registry import (
    REPORT_FAMILIES,
    SELECTION_FAMILIES,
    VALIDATION_FAMILIES,
    get_task,
)

#: Suite -> task names. "long-horizon" is meant for ``steps`` of 2,000 or 10,000 with fewer
#: runs; "generalisation" (Table 3) trains on the training images and scores held-out ones.
SUITES: dict[str, tuple[str, ...]] = {
    "table1": ("mlp-sigmoid", "mlp-relu", "mlp-elu", "mlp-tanh"),
    "table2": ("sine-baseline", "sine-small-noise", "sine-2layer"),
    "deep-mlp": tuple(f"mlp-{n}hidden" for n in range(1, 11)),
    "cnn": ("cnn1", "cnn2"),
    "long-horizon": ("mlp-sigmoid", "mlp-9hidden", "cnn2", "sine-2layer"),
    "generalisation": ("mlp-sigmoid", "cnn1", "cnn2"),
    # Tasks of no paper and no meta-training family, scored as users score (final loss at
    # their horizon, against tuned Adam): checkpoints and settings are chosen on "selection";
    # "report" is only reported; "validation" is both.
    "selection": SELECTION_FAMILIES,
    "report": REPORT_FAMILIES,
    "validation": VALIDATION_FAMILIES,
}


def _suite(suite: str) -> tuple[str, ...]:
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {tuple(SUITES)}")
    return SUITES[suite]


def suite_tasks(suite: str, data) -> dict[str, TaskFamily]:
    """The task families of a suite, built on MNIST ``data = (x, y)`` where they need it."""
    return {name: get_task(name).build(data if get_task(name).needs_data else None)
            for name in _suite(suite)}


@dataclasses.dataclass(frozen=True)
class EvaluatedOptimizer:
    """A baseline (tuned, or at a fixed ``lr``) or a learned optimizer with meta-parameters."""

    label: str
    baseline: str | None = None
    lr: float | None = None
    make: Callable[[], optax.GradientTransformation] | None = None
    #: What is evaluated, whatever it was called (``l2o-scale`` and ``l2o_scale`` are one).
    key: tuple = ()


#: ``NAME:WORD`` evaluates an initialisation (key 0, default sizes) instead of a file:
#: ``warm`` its Adam warm start (HyperAdam's ``init="adam"``), ``paper`` its authors' init.
INITIAL_WEIGHTS = {"warm": "adam", "paper": "paper"}


def parse_optimizer(text: str) -> EvaluatedOptimizer:
    """``adam`` (tuned), ``adam@0.01`` (fixed rate); a learned optimizer of the registry by
    name (``hyperadam``, ``rnnprop``, ``dm_optimizer`` or ``dm``: the pretrained
    meta-parameters shipped in the package), ``NAME:PATH.npz`` (a file of
    ``save_meta_params`` or a meta-training checkpoint), or ``NAME:warm`` / ``NAME:paper``
    (an initialisation, :data:`INITIAL_WEIGHTS`); learned optimizers run at their default
    learning rate, with the alias arguments their file's metadata (a checkpoint: its run's
    config) names (``make_kwargs``, e.g. HyperAdam's ``normalization``)."""
    name, colon, arg = text.partition(":")
    if name in BASELINES:
        if colon:
            raise ValueError(f"{text!r}: a baseline takes '@rate', not ':'")
        return EvaluatedOptimizer(label=name, baseline=name, key=(name, None))
    if "@" in name and name.split("@")[0] in BASELINES:
        base, _, rate = name.partition("@")
        try:
            lr = float(rate)
        except ValueError:
            lr = float("nan")
        if arg or not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"{text!r}: expected BASELINE@RATE with one positive finite rate, "
                             f"e.g. {base}@0.01")
        return EvaluatedOptimizer(label=name, baseline=base, lr=lr, key=(base, lr))
    try:
        spec = registry.get_optimizer(name)
    except ValueError:
        raise ValueError(f"unknown optimizer {text!r}; expected a baseline "
                         f"({', '.join(BASELINES)}) or {', '.join(registry.names())} "
                         "(pretrained), optionally with ':PATH.npz'") from None
    if colon and not arg:
        raise ValueError(f"{text!r}: expected {name}:PATH (a weight file or a checkpoint) after "
                         f"the colon, or {name} alone for the shipped weights")
    metadata = {}
    if not arg:
        theta, metadata = load_pretrained(spec.name, with_metadata=True)
        key = (spec.name, "pretrained")
    elif arg in INITIAL_WEIGHTS:  # e.g. hyperadam:warm, rnnprop:paper
        try:
            theta = spec.init_meta_params(jax.random.key(0), init=INITIAL_WEIGHTS[arg])
        except ValueError as e:
            raise ValueError(f"{text!r}: {e}") from None
        key = (spec.name, arg)
    else:
        theta, metadata = load_weights_or_checkpoint(arg, spec.name)
        if metadata is None:
            raise ValueError(f"{arg}: a checkpoint outside its run directory (no ../config.json)"
                             " does not say how its weights were made; pass the run's "
                             "best_meta_params.npz or meta_params.npz")
        if not isinstance(theta, spec.params_type):
            raise ValueError(f"{arg} holds {type(theta).__name__}, not the "
                             f"{spec.params_type.__name__} of {spec.name}")
        key = (spec.name, os.path.realpath(arg))
    kwargs = make_kwargs_of(metadata)
    return EvaluatedOptimizer(label=text, make=lambda: spec.make(meta_params=theta, **kwargs),
                              key=key)


def parse_optimizers(texts: list[str]) -> list[EvaluatedOptimizer]:
    """:func:`parse_optimizer` of each; the same optimizer named twice (an alias, another
    spelling of a path) is evaluated once, under its first name."""
    if isinstance(texts, str) or not texts:
        raise ValueError(f"expected a non-empty list of optimizer names, got {texts!r}")
    entries: dict[tuple, EvaluatedOptimizer] = {}
    for text in texts:
        entry = parse_optimizer(text)
        entries.setdefault(entry.key, entry)
    return list(entries.values())


def check_request(suite: str, optimizers: list[str], tasks: list[str] | None = None
                  ) -> list[EvaluatedOptimizer]:
    """Everything about an evaluation that can be refused before any work: the suite, its
    tasks, the optimizers (their files are read); returns the parsed optimizers."""
    if tasks is not None and not tasks:
        raise ValueError(f"expected some tasks of suite {suite!r} (default: all of them)")
    unknown = sorted(set(tasks or ()) - set(_suite(suite)))
    if unknown:
        raise ValueError(f"unknown tasks {unknown} for suite {suite!r}; expected some of "
                         f"{list(SUITES[suite])}")
    return parse_optimizers(optimizers)


def _suite_data(suite: str, data, test_data):
    """MNIST ``(x, y)`` for training and held-out scoring: the given ones, else the embedded
    4,000/1,000 split when a task of the suite needs data."""
    if data is None and any(get_task(t).needs_data for t in _suite(suite)):
        train, test = mnist_data(None, "train")[0], mnist_data(None, "test")[0]
        data, test_data = (train.x, train.y), (test.x, test.y)
    if suite == "generalisation" and test_data is None:
        raise ValueError("the generalisation suite needs held-out test images (test_data)")
    return data, test_data


def evaluate_suite(suite: str, optimizers: list[str], *, runs: int = 100, steps: int = 100,
                   seed: int = 0, tune_runs: int = 10, cache_path: str | None = None,
                   data=None, test_data=None, progress: bool = True,
                   tasks: list[str] | None = None) -> dict:
    """Every (task, optimizer) of ``suite``: ``{"results": {task: {label: RunResult}},
    "learning_rates": {task: {label: rate}}}`` and, for ``"generalisation"``, ``"test":
    {task: {label: {"loss", "top1", "top2"}}}`` on ``test_data``.

    ``data``/``test_data``: MNIST ``(x, y)``; default: the embedded 5,000 images, split into
    4,000 for training and 1,000 held out (:func:`~hyperadam_optax.tasks.data.mnist_data`),
    the held-out ones used only by the generalisation suite. ``tasks``: a subset of the
    suite's task names (default: all). Every task runs ``steps`` steps, but a long-horizon
    family (its ``TaskSpec.horizon``, e.g. ``val-wine-mlp-1000``) its own; ``"steps"`` of
    the result says which, per task.
    """
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed} (larger seeds would alias)")
    entries = check_request(suite, optimizers, tasks)
    data, test_data = _suite_data(suite, data, test_data)
    families = {t: f for t, f in suite_tasks(suite, data).items() if tasks is None or t in tasks}
    pairs = [(t, e) for t in families for e in entries]
    bar = _progress_bar(progress, len(pairs), suite)
    results, rates, test = {}, {}, {}
    horizons = {t: get_task(t).horizon or steps for t in families}
    for task_name, entry in pairs:
        family, task_steps = families[task_name], horizons[task_name]
        if entry.baseline is not None:
            lr = entry.lr if entry.lr is not None else tune_learning_rate(
                entry.baseline, family, steps=task_steps, runs=tune_runs, seed=seed,
                cache_path=cache_path)
            make = (lambda lr=lr, b=entry.baseline: BASELINES[b](lr))
        else:
            lr, make = None, entry.make
        results.setdefault(task_name, {})[entry.label] = run_protocol(
            lambda _h, make=make: make(), family, steps=task_steps, runs=runs, seed=seed)
        rates.setdefault(task_name, {})[entry.label] = lr
        if suite == "generalisation":
            test.setdefault(task_name, {})[entry.label] = test_metrics(
                lambda _h, make=make: make(), family, *test_data, steps=task_steps, runs=runs,
                seed=seed)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(task=task_name, optimizer=entry.label, refresh=False)
    if bar is not None:
        bar.close()
    out = {"results": results, "learning_rates": rates, "seed": seed, "steps": horizons}
    if test:
        out["test"] = test
    return out


def _progress_bar(enabled: bool, total: int, suite: str):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ModuleNotFoundError:
        return None
    return tqdm(total=total, desc=f"evaluate {suite}", unit="cell")
