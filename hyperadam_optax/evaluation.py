"""The HyperAdam paper's evaluation protocol, tuned baselines and suites.

Protocol (the authors' code, reference notes): N runs with fresh initialisations and the
same seeds for every optimizer (paired); each run trains for ``steps`` steps; its reported
loss is the loss of the FINAL parameters averaged over the minibatches seen during the run.
No Random Scaling and no convex term. Runs are ``vmap``-ped: one compiled program per
(optimizer, task); a baseline's learning-rate grid is ``vmap``-ped too.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hyperadam_optax.tasks import TaskFamily, final_loss, train

#: Hand-designed baselines, each ``learning_rate -> transform`` (optax defaults otherwise).
BASELINES: dict[str, Callable[[float], optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "adagrad": optax.adagrad,
    "adadelta": optax.adadelta,
    "rmsprop": optax.rmsprop,
    "adam": optax.adam,
    # Adam with the decay rates of the shipped HyperAdam's warm start: what that
    # optimizer is before meta-training, tuned like the others (README: Pretrained).
    "adam-0.8-0.9": lambda lr: optax.adam(lr, b1=0.8, b2=0.9),
    # ... and with its rate schedule: linear from lr to lr / 4 over 100 steps, then constant
    # (the warm start's clock falls along tanh, nearly linear; init_meta_params).
    "adam-0.8-0.9-decay": lambda lr: optax.adam(optax.linear_schedule(lr, lr / 4, 100),
                                                b1=0.8, b2=0.9),
}

#: Learning rates tuned over: a sqrt(2) grid from 2^-12 to 2^3, extended while the best rate
#: is at an end (Adadelta and SGD on sigmoid MLPs want rates above 1).
LR_GRID = tuple(float(2.0 ** (k / 2)) for k in range(-24, 7))

#: Added to the seed of tuning runs so tuning never sees the reported runs' seeds.
TUNING_SEED_OFFSET = 1_000_003


@dataclasses.dataclass(frozen=True)
class RunResult:
    """``final_loss``: (runs,) protocol losses; ``curve``: (runs, steps) minibatch losses."""

    final_loss: np.ndarray
    curve: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.final_loss))

    @property
    def stderr(self) -> float:
        n = len(self.final_loss)
        return float(np.std(self.final_loss, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")


def _one_run(make_tx, family: TaskFamily, steps: int, key, hyper):
    curve, final, task, step_keys = train(make_tx(hyper), family, key, steps)
    return final_loss(family, final, task, step_keys), curve, final


def run_protocol(make_tx: Callable, family: TaskFamily, *, steps: int, runs: int, seed: int,
                 hypers=None) -> RunResult | list[RunResult]:
    """Run ``runs`` paired runs of ``make_tx(hyper)`` on ``family``.

    ``hypers=None``: ``make_tx(None)`` once, returns a :class:`RunResult`. Otherwise a
    sequence of floats (e.g. learning rates), all ``vmap``-ped in one program; returns one
    result per value.
    """
    keys = jax.random.split(jax.random.PRNGKey(seed), runs)
    if hypers is None:
        fn = jax.jit(jax.vmap(lambda k: _one_run(make_tx, family, steps, k, None)[:2]))
        final, curve = fn(keys)
        return RunResult(np.asarray(final), np.asarray(curve))
    grid = jnp.asarray(hypers, jnp.float32)
    fn = jax.jit(jax.vmap(jax.vmap(lambda k, h: _one_run(make_tx, family, steps, k, h)[:2],
                                   in_axes=(0, None)), in_axes=(None, 0)))
    final, curve = fn(keys, grid)
    return [RunResult(np.asarray(f), np.asarray(c)) for f, c in zip(final, curve)]


def test_metrics(make_tx: Callable, family: TaskFamily, test_x, test_y, *, steps: int,
                 runs: int, seed: int) -> dict[str, np.ndarray]:
    """Train as :func:`run_protocol`, then the final parameters' mean cross-entropy, top-1 and
    top-2 accuracy on held-out images, per run: ``{"loss", "top1", "top2"}`` of shape (runs,)."""
    if family.logits is None:
        raise ValueError(f"task {family.name} has no logits function: not a classifier")
    test_x, test_y = jnp.asarray(test_x, jnp.float32), jnp.asarray(test_y, jnp.int32)

    def one(key):
        _, _, final = _one_run(make_tx, family, steps, key, None)
        logits = family.logits(final, test_x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, test_y).mean()
        top2 = jax.lax.top_k(logits, 2)[1]
        return (loss, jnp.mean(top2[:, 0] == test_y),
                jnp.mean(jnp.any(top2 == test_y[:, None], axis=1)))

    keys = jax.random.split(jax.random.PRNGKey(seed), runs)
    loss, top1, top2 = jax.jit(jax.vmap(one))(keys)
    return {"loss": np.asarray(loss), "top1": np.asarray(top1), "top2": np.asarray(top2)}


def _injected(name: str):
    inner = BASELINES[name]
    return lambda lr: optax.inject_hyperparams(lambda learning_rate: inner(learning_rate))(
        learning_rate=lr)


def tune_learning_rate(name: str, family: TaskFamily, *, steps: int, runs: int, seed: int,
                       grid=LR_GRID, cache_path: str | None = None, max_extend: int = 8) -> float:
    """The rate with the lowest mean protocol loss on tuning seeds (cached on disk).

    Tuning uses seeds ``seed + TUNING_SEED_OFFSET``, never the reported runs' seeds; runs that
    diverge count as infinite loss. While the best rate is at an end of the grid, the grid is
    extended by sqrt(2) steps past that end (at most ``max_extend`` times 4 rates).
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {sorted(BASELINES)}")
    key = f"{name}|{family.name}|steps={steps}|runs={runs}|seed={seed}|grid={list(grid)}"
    cache = {}
    if cache_path and os.path.exists(cache_path):
        with open(cache_path) as f:
            cache = json.load(f)
        if key in cache:
            return float(cache[key]["learning_rate"])

    def score(rates):
        results = run_protocol(_injected(name), family, steps=steps, runs=runs,
                               seed=seed + TUNING_SEED_OFFSET, hypers=rates)
        return {lr: (r.mean if np.all(np.isfinite(r.final_loss)) else np.inf)
                for lr, r in zip(rates, results)}

    scores = score(tuple(grid))
    for _ in range(max_extend):
        rates = sorted(scores)
        best = min(rates, key=scores.get)
        if best == rates[-1]:
            scores.update(score(tuple(best * 2.0 ** (k / 2) for k in range(1, 5))))
        elif best == rates[0]:
            scores.update(score(tuple(best * 2.0 ** (-k / 2) for k in range(1, 5))))
        else:
            break
    best = float(min(scores, key=scores.get))
    if cache_path:
        from hyperadam_optax._checkpoint import atomic_write

        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
        cache[key] = {"learning_rate": best,
                      "scores": {repr(lr): float(v) for lr, v in sorted(scores.items())}}
        text = json.dumps(cache, indent=1).encode()
        atomic_write(cache_path, lambda f: f.write(text))
    return best


def paired_difference(a: RunResult, b: RunResult) -> tuple[float, float]:
    """Mean and standard error of ``a - b`` over paired runs."""
    d = a.final_loss - b.final_loss
    return float(np.mean(d)), float(np.std(d, ddof=1) / np.sqrt(len(d)))


# Suites ---------------------------------------------------------------------------------------

def suite_tasks(suite: str, data) -> dict[str, TaskFamily]:
    """The tasks of a suite (the paper's Table 1, Table 2, Fig. 5d)."""
    from hyperadam_optax.sine_lstm import sine_lstm
    from hyperadam_optax.tasks import mnist_mlp

    if suite == "table1":
        return {f"mlp-{a}": mnist_mlp(*data, activation=a) for a in ("sigmoid", "relu", "elu", "tanh")}
    if suite == "table2":
        return {"sine-baseline": sine_lstm(noise=0.1), "sine-small-noise": sine_lstm(noise=0.01),
                "sine-2layer": sine_lstm(layers=2, noise=0.1)}
    if suite == "deep-mlp":
        return {f"mlp-{n}hidden": mnist_mlp(*data, sizes=(784,) + (20,) * n + (10,))
                for n in range(1, 11)}
    if suite == "cnn":
        from hyperadam_optax.cnn import mnist_cnn

        return {a: mnist_cnn(*data, architecture=a) for a in ("cnn1", "cnn2")}
    if suite == "long-horizon":
        from hyperadam_optax.cnn import mnist_cnn

        return {"mlp-sigmoid": mnist_mlp(*data),
                "mlp-9hidden": mnist_mlp(*data, sizes=(784,) + (20,) * 9 + (10,)),
                "cnn2": mnist_cnn(*data, architecture="cnn2"),
                "sine-2layer": sine_lstm(layers=2, noise=0.1)}
    if suite == "generalisation":
        from hyperadam_optax.cnn import mnist_cnn

        return {"mlp-sigmoid": mnist_mlp(*data), "cnn1": mnist_cnn(*data, architecture="cnn1"),
                "cnn2": mnist_cnn(*data, architecture="cnn2")}
    raise ValueError(f"unknown suite {suite!r}; expected one of {SUITES}")


#: Suites; "long-horizon" is meant for ``steps`` of 2,000 or 10,000 with fewer runs;
#: "generalisation" (Table 3) trains on the training images and scores held-out ones.
SUITES = ("table1", "table2", "deep-mlp", "cnn", "long-horizon", "generalisation")


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """A baseline (tuned, or at a fixed ``lr``) or a learned optimizer with meta-parameters."""

    label: str
    baseline: str | None = None
    lr: float | None = None
    make: Callable[[], optax.GradientTransformation] | None = None


def parse_optimizer(text: str) -> OptimizerSpec:
    """``adam`` (tuned), ``adam@0.01`` (fixed rate); ``hyperadam``, ``rnnprop``, ``dm`` (the
    pretrained meta-parameters shipped in the package), ``hyperadam:PATH.npz`` (and likewise
    ``rnnprop:``, ``dm:``), or ``hyperadam:warm`` (the Adam warm start); learned optimizers
    run at their default learning rate."""
    from hyperadam_optax import _dm_optimizer, _hyperadam, _meta_params, _rnnprop
    from hyperadam_optax._pretrained import load_pretrained
    from hyperadam_optax._serialization import load_meta_params

    name, _, arg = text.partition(":")
    if name in BASELINES:
        if arg:
            raise ValueError(f"{text!r}: a baseline takes '@rate', not ':'")
        return OptimizerSpec(label=name, baseline=name)
    if "@" in name and name.split("@")[0] in BASELINES:
        base, rate = name.split("@")
        return OptimizerSpec(label=name, baseline=base, lr=float(rate))
    factories = {"hyperadam": _hyperadam.hyperadam, "rnnprop": _rnnprop.rnnprop,
                 "dm": _dm_optimizer.dm_optimizer}
    if name not in factories:
        raise ValueError(f"unknown optimizer {text!r}; expected a baseline "
                         f"({', '.join(BASELINES)}) or hyperadam, rnnprop, dm (pretrained), "
                         "optionally with ':PATH.npz'")
    if not arg:
        theta = load_pretrained(PRETRAINED_NAMES[name])
    elif name == "hyperadam" and arg == "warm":
        theta = _meta_params.init_meta_params(jax.random.key(0), 20, "adam")
    else:
        theta = load_meta_params(arg)
    return OptimizerSpec(label=text, make=lambda: factories[name](meta_params=theta))


#: Optimizer names of the CLI -> names of the shipped weights (``pretrained/<name>.npz``).
PRETRAINED_NAMES = {"hyperadam": "hyperadam", "rnnprop": "rnnprop", "dm": "dm_optimizer"}


def evaluate_suite(suite: str, optimizers: list[str], *, runs: int = 100, steps: int = 100,
                   seed: int = 0, tune_runs: int = 10, cache_path: str | None = None,
                   data=None, test_data=None, progress: bool = True,
                   tasks: list[str] | None = None) -> dict:
    """Every (task, optimizer) of ``suite``: ``{"results": {task: {label: RunResult}},
    "learning_rates": {task: {label: rate}}}`` and, for ``"generalisation"``, ``"test":
    {task: {label: {"loss", "top1", "top2"}}}`` on ``test_data``.

    ``data``/``test_data``: MNIST ``(x, y)``; default: the embedded 5,000 images, split into
    4,000 for training and 1,000 held out (:func:`~hyperadam_optax.data.mnist_5k_split`), the
    held-out ones used only by the generalisation suite. ``tasks``: a subset of the suite's
    task names (default: all).
    """
    if data is None and suite != "table2":
        from hyperadam_optax.data import mnist_5k_split

        train, test = mnist_5k_split()
        data, test_data = (train.x, train.y), (test.x, test.y)
    if suite == "generalisation" and test_data is None:
        raise ValueError("the generalisation suite needs held-out test images (test_data)")
    all_tasks = suite_tasks(suite, data)
    unknown = sorted(set(tasks or ()) - set(all_tasks))
    if unknown:
        raise ValueError(f"unknown tasks {unknown} for suite {suite!r}; expected some of "
                         f"{list(all_tasks)}")
    tasks = {t: f for t, f in all_tasks.items() if tasks is None or t in tasks}
    specs = [parse_optimizer(o) for o in optimizers]
    pairs = [(t, s) for t in tasks for s in specs]
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pairs), desc=f"evaluate {suite}", unit="cell")
        except ModuleNotFoundError:
            pass
    results, rates, test = {}, {}, {}
    for task_name, spec in pairs:
        family = tasks[task_name]
        if spec.baseline is not None:
            lr = spec.lr if spec.lr is not None else tune_learning_rate(
                spec.baseline, family, steps=steps, runs=tune_runs, seed=seed,
                cache_path=cache_path)
            make = (lambda lr=lr, b=spec.baseline: BASELINES[b](lr))
        else:
            lr, make = None, spec.make
        results.setdefault(task_name, {})[spec.label] = run_protocol(
            lambda _h, make=make: make(), family, steps=steps, runs=runs, seed=seed)
        rates.setdefault(task_name, {})[spec.label] = lr
        if suite == "generalisation":
            test.setdefault(task_name, {})[spec.label] = test_metrics(
                lambda _h, make=make: make(), family, *test_data, steps=steps, runs=runs,
                seed=seed)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(task=task_name, optimizer=spec.label, refresh=False)
    if bar is not None:
        bar.close()
    out = {"results": results, "learning_rates": rates}
    if test:
        out["test"] = test
    return out


def markdown_table(evaluated: dict) -> str:
    """Rows: optimizers; columns: tasks; cells ``mean ± s.e.`` of the protocol loss, then
    each non-baseline's paired difference to the best baseline of that task."""
    results, rates = evaluated["results"], evaluated["learning_rates"]
    task_names = list(results)
    labels = list(results[task_names[0]])
    lines = ["| optimizer | " + " | ".join(task_names) + " |",
             "|---|" + "---:|" * len(task_names)]
    for label in labels:
        cells = []
        for t in task_names:
            r, lr = results[t][label], rates[t][label]
            tuned = f" (lr {lr:.3g})" if lr is not None else ""
            cells.append(f"{r.mean:.4f} ± {r.stderr:.4f}{tuned}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    learned = [lab for lab in labels if lab.split("@")[0] not in BASELINES]
    baselines = [lab for lab in labels if lab.split("@")[0] in BASELINES]
    if learned and baselines:
        lines += ["", "Paired difference to the best baseline of each task (negative: better):", "",
                  "| optimizer | " + " | ".join(task_names) + " |", "|---|" + "---:|" * len(task_names)]
        for label in learned:
            cells = []
            for t in task_names:
                best = min(baselines, key=lambda b, t=t: results[t][b].mean)
                diff, se = paired_difference(results[t][label], results[t][best])
                cells.append(f"{diff:+.4f} ± {se:.4f} vs {best}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "test" in evaluated:
        lines += ["", "Held-out images: cross-entropy / top-1 / top-2 accuracy of the final "
                  "parameters (mean ± s.e.):", "",
                  "| optimizer | " + " | ".join(task_names) + " |",
                  "|---|" + "---:|" * len(task_names)]
        for label in labels:
            cells = []
            for t in task_names:
                m = evaluated["test"][t][label]
                cells.append(" / ".join(
                    f"{np.mean(m[k]):.4f} ± {np.std(m[k], ddof=1) / np.sqrt(len(m[k])):.4f}"
                    for k in ("loss", "top1", "top2")))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_evaluation(evaluated: dict, out_dir: str, suite: str) -> list[str]:
    """Write ``{suite}.md``, ``{suite}.json``, ``{suite}.csv`` and ``{suite}.png``."""
    os.makedirs(out_dir, exist_ok=True)
    results, rates = evaluated["results"], evaluated["learning_rates"]
    paths = []
    md = os.path.join(out_dir, f"{suite}.md")
    with open(md, "w") as f:
        f.write(markdown_table(evaluated) + "\n")
    test = evaluated.get("test", {})
    rows = [{"task": t, "optimizer": o, "learning_rate": rates[t][o], "mean": r.mean,
             "stderr": r.stderr, "final_losses": r.final_loss.tolist(),
             **({f"test_{k}": v.tolist() for k, v in test[t][o].items()} if t in test else {})}
            for t in results for o, r in results[t].items()]
    js = os.path.join(out_dir, f"{suite}.json")
    with open(js, "w") as f:
        json.dump(rows, f)
    csv = os.path.join(out_dir, f"{suite}.csv")
    with open(csv, "w") as f:
        f.write("task,optimizer,learning_rate,mean,stderr\n")
        for r in rows:
            f.write(f"{r['task']},{r['optimizer']},{r['learning_rate']},{r['mean']},{r['stderr']}\n")
    paths += [md, js, csv]
    try:
        paths.append(plot_curves(results, os.path.join(out_dir, f"{suite}.png")))
    except ModuleNotFoundError:
        pass
    return paths


def plot_curves(results: dict, path: str) -> str:
    """Mean minibatch-loss curves with standard-error bands, one panel per task."""
    # The object-oriented API: no pyplot, so the caller's backend (e.g. a notebook's
    # inline one) is never switched.
    from matplotlib.figure import Figure

    n = len(results)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (task, by_opt) in zip(axes.ravel(), results.items()):
        for label, r in by_opt.items():
            mean = r.curve.mean(axis=0)
            se = r.curve.std(axis=0, ddof=1) / np.sqrt(len(r.curve)) if len(r.curve) > 1 else 0
            t = np.arange(1, len(mean) + 1)
            ax.plot(t, mean, label=label)
            ax.fill_between(t, mean - se, mean + se, alpha=0.2)
        ax.set_title(task)
        ax.set_yscale("log")
        ax.set_xlabel("step")
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
