"""Reports of evaluations: markdown tables, paired comparisons, JSON/CSV files and plots."""

from __future__ import annotations

import json
import os

import numpy as np

from hyperadam_optax.evaluation.baselines import BASELINES
from hyperadam_optax.evaluation.protocol import RunResult, paired_difference


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
    paired = all(len(results[t][lab].final_loss) >= 2 for t in task_names for lab in labels)
    if learned and baselines and paired:  # a paired s.e. needs two runs or more
        lines += ["", "Paired difference to the best baseline of each task (negative: better):", "",
                  "| optimizer | " + " | ".join(task_names) + " |", "|---|" + "---:|" * len(task_names)]
        for label in learned:
            cells = []
            for t in task_names:
                best = min(baselines, key=lambda b, t=t: results[t][b].mean)
                diff, se = paired_difference(results[t][label], results[t][best])
                cells.append(f"{diff:+.4f} ± {se:.4f} vs {best}")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    diverged = [f"{label} on {t} ({results[t][label].diverged} of "
                f"{len(results[t][label].final_loss)} runs)"
                for t in task_names for label in labels if results[t][label].diverged]
    if diverged:
        lines += ["", "**Diverged** (final loss not finite or above the run's first minibatch "
                  "loss): " + "; ".join(diverged) + "."]
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
    pairing = {"seed": evaluated["seed"]} if "seed" in evaluated else {}
    steps = evaluated.get("steps", {})
    rows = [{"task": t, "optimizer": o, "learning_rate": rates[t][o], "mean": r.mean,
             "stderr": r.stderr, "final_losses": r.final_loss.tolist(), **pairing,
             **({"steps": steps[t]} if t in steps else {}),
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


def load_results(path: str) -> dict[str, dict[str, RunResult]]:
    """``{task: {optimizer: RunResult}}`` from a ``{suite}.json`` of :func:`save_evaluation`
    (the per-run final losses; the curves are not stored)."""
    try:
        with open(path) as f:
            rows = json.load(f)
        out: dict[str, dict[str, RunResult]] = {}
        pairing: dict[str, dict[tuple, list[str]]] = {}
        for r in rows:
            out.setdefault(r["task"], {})[r["optimizer"]] = RunResult(
                np.asarray(r["final_losses"], np.float64), np.empty((0, 0)))
            runs = (len(r["final_losses"]), r.get("seed"), r.get("steps"))
            pairing.setdefault(r["task"], {}).setdefault(runs, []).append(r["optimizer"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path} is not an evaluation JSON written by save_evaluation: {e}") from e
    if not out:
        raise ValueError(f"{path} holds no results")
    for task, groups in pairing.items():  # paired runs: the same seeds, the same steps
        if len(groups) > 1:
            detail = "; ".join(f"{', '.join(names)}: {n} runs, seed {seed}, {steps} steps"
                               for (n, seed, steps), names in groups.items())
            raise ValueError(f"{path}: the optimizers of task {task!r} did not run on the same "
                             f"seeds ({detail}), so they cannot be compared pair by pair")
    return out


def paired_comparison(results: dict[str, dict[str, RunResult]], optimizer: str,
                      baseline: str) -> dict[str, tuple[float, float, str]]:
    """Per task: ``(mean, s.e., verdict)`` of ``optimizer - baseline`` over paired runs;
    the verdict is ``"ahead"`` (more than 2 s.e. lower), ``"behind"`` or ``"level"``."""
    out = {}
    for task, by_optimizer in results.items():
        missing = [n for n in (optimizer, baseline) if n not in by_optimizer]
        if missing:
            raise ValueError(f"no {', '.join(missing)} on task {task!r}; found "
                             f"{sorted(by_optimizer)}")
        d, se = paired_difference(by_optimizer[optimizer], by_optimizer[baseline])
        out[task] = (d, se, "ahead" if d < -2 * se else "behind" if d > 2 * se else "level")
    return out


def comparison_table(comparisons: dict[str, dict[str, tuple[float, float, str]]]) -> str:
    """Markdown: a row per ``{row label: paired_comparison(...)}``, a column per task."""
    tasks = list(dict.fromkeys(t for c in comparisons.values() for t in c))
    lines = ["| | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for label, c in comparisons.items():
        cells = [f"{c[t][0]:+.4f} ± {c[t][1]:.4f} {c[t][2]}" if t in c else "" for t in tasks]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
