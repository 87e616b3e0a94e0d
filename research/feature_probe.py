"""Can HyperAdam's open StateCell units tell which step a task wants?

The readout trained in research/record.md (``θ_q[1:]``) can only make the step depend on the
task through what the StateCell's open units (1-19; unit 0 is the clock) hold. This script
asks whether they hold it: for each family of ``--ensemble`` and of the validation families,
``--tasks`` tasks run ``--steps`` steps of the given HyperAdam weights; each task is summarised
by the mean over all coordinates and over the steps of ``s_t`` and of ``s_t²`` for every open
unit, in two windows (steps 1-50 and 51-end: 76 features); and, what the StateCell does not
see, the gradient's sign agreement (``|m̂| / √v̂`` and ``sign(g_t m_{t-1})``: 4). The
target is the log2 of the rate a tuned ``adam-0.8-0.9-decay`` wants on the family
(:mod:`tuned_rates`, cached), over the start's peak rate.

Printed: the ridge regression from the family-mean features to the target (features
standardised over the ensemble's families), its leave-one-family-out R² and rank correlation
over the ensemble for a few ridge strengths, the single best feature's, and the validation
families' rates predicted by the fit on the whole ensemble. High leave-one-out R²: the units
carry the task's rate and a readout could learn it; near 0 or negative: they do not. A
control regresses on the loss curve instead (the mean of ``log(f_t / f_0)`` in each window):
whether the trajectory itself says which step the task wants.

    python research/feature_probe.py research/starts/hyperadam-input-path-gate.npz \\
        --cache runs/rates/cache.json
"""

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np
from tuned_rates import START_PEAK  # research/, the script's own directory

import hyperadam_optax as ha
from hyperadam_optax.evaluation.baselines import tune_learning_rate
from hyperadam_optax.io import make_kwargs_of
from hyperadam_optax.meta.unroll import train
from hyperadam_optax.tasks.registry import build_families, ensemble_members

WINDOW = 50


def unit_moments(tree) -> jax.Array:
    """Mean over every coordinate of ``s`` and of ``s²``, units 1-19: ``(2, J - 1)``."""
    leaves = [x.reshape(-1, x.shape[-1])[:, 1:] for x in jax.tree.leaves(tree)]
    n = sum(len(x) for x in leaves)
    return jnp.stack([sum(jnp.sum(x, 0) for x in leaves) / n,
                      sum(jnp.sum(x * x, 0) for x in leaves) / n])


def sign_agreement(grads, state) -> jax.Array:
    """Over every coordinate, the mean of ``|m̂| / √v̂`` of the first candidate (the start's
    candidates share one ``β, γ``; near 1 where the gradient's sign has held, near 0 where it
    flips) and of ``sign(g_t m_{t-1})`` (+1: the step continues, -1: it reverses): ``(2,)``."""
    def per_leaf(g, m, v, b, c):
        m, v, b, c = m[..., 0], v[..., 0], b[..., 0], c[..., 0]
        ok = b > 0
        ratio = jnp.where(ok, jnp.abs(m) / jnp.sqrt(v * jnp.where(ok, b, 1.0)
                                                    / jnp.where(c > 0, c, 1.0) + 1e-30), 0.0)
        return jnp.stack([jnp.sum(ratio), jnp.sum(jnp.sign(g * m))])

    sums = jax.tree.leaves(jax.tree.map(per_leaf, grads, state.m, state.v, state.beta_hat,
                                        state.gamma_hat))
    return sum(sums) / sum(x.size for x in jax.tree.leaves(grads))


def windows(rows) -> jax.Array:
    return jnp.concatenate([rows[:WINDOW].mean(0).ravel(), rows[WINDOW:].mean(0).ravel()])


def task_features(theta, kwargs, family, keys, steps: int) -> dict[str, np.ndarray]:
    """Per task, each averaged over the two windows: ``units``, the open units' moments
    ``(tasks, 4 (J - 1))``; ``agreement``, :func:`sign_agreement` ``(tasks, 4)``;
    ``control``, the mean of ``log(f_t / f_0)`` ``(tasks, 2)``."""
    tx = ha.hyperadam(0.005, theta, **kwargs)

    def observe(grads, state, updates):
        return unit_moments(state[0].h), sign_agreement(grads, state[0])

    def one(key):
        loss, (units, agreement) = train(tx, family, key, steps, observe=observe)[0]
        return {"units": windows(units), "agreement": windows(agreement),
                "control": windows(jnp.log(loss / loss[0])[:, None])}

    return jax.tree.map(np.asarray, jax.jit(lambda ks: jax.lax.map(one, ks))(keys))


def ridge(x, y, lam):
    """Weights and intercept of ridge regression on standardised ``x``."""
    mu, sd = x.mean(0), x.std(0) + 1e-12
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + lam * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return lambda q: ((q - mu) / sd) @ w + y.mean()


def loo(x, y, lam):
    """Leave-one-out predictions."""
    return np.array([ridge(np.delete(x, i, 0), np.delete(y, i), lam)(x[i:i + 1])[0]
                     for i in range(len(y))])


def r2(pred, y) -> float:
    return float(1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2))


def spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("meta_params")
    p.add_argument("--ensemble", default="l2o-set-nets")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--cache", default=None, help="tuned rates' cache (tuned_rates.py)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    theta, metadata = ha.load_meta_params(args.meta_params, with_metadata=True)
    kwargs = make_kwargs_of(metadata)
    names = ensemble_members(args.ensemble) + ensemble_members("validation")
    families, _ = build_families(",".join(names))
    rows = {}
    for group in (args.ensemble, "validation"):
        for name in ensemble_members(group):
            family = families[name]
            rate = tune_learning_rate("adam-0.8-0.9-decay", family, steps=args.steps, runs=3,
                                      seed=args.seed, cache_path=args.cache)
            keys = jax.random.split(jax.random.fold_in(jax.random.key(args.seed), len(rows)),
                                    args.tasks)
            feats = task_features(theta, kwargs, family, keys, args.steps)
            rows[name] = (group, math.log2(rate / START_PEAK),
                          {k: v.mean(0) for k, v in feats.items()})
            print(f"{name}: log2 rate/peak {rows[name][1]:+.2f}", flush=True)
    train_names = [n for n, r in rows.items() if r[0] == args.ensemble]
    y = np.array([rows[n][1] for n in train_names])

    def x_of(kinds, names=train_names):
        return np.stack([np.concatenate([rows[n][2][k] for k in kinds]) for n in names])

    print(f"\n{len(train_names)} families of {args.ensemble}\n")
    print("| features | ridge λ | leave-one-family-out R² | rank correlation |")
    print("|---|---:|---:|---:|")
    sets = {"open units": ("units",), "sign agreement": ("agreement",),
            "both": ("units", "agreement"), "control: loss curve": ("control",)}
    sets = {f"{label} ({x_of(kinds).shape[1]})": kinds for label, kinds in sets.items()}
    for label, kinds in sets.items():
        for lam in (1.0, 10.0, 100.0):
            pred = loo(x_of(kinds), y, lam)
            print(f"| {label} | {lam:g} | {r2(pred, y):+.2f} | {spearman(pred, y):+.2f} |")
    for label, kinds in list(sets.items())[:2]:
        x = x_of(kinds)
        single = [(r2(loo(x[:, [j]], y, 1e-6), y), j) for j in range(x.shape[1])]
        best, j = max(single)
        print(f"| {label}: best single feature ({j}; the max over features, optimistic) | 0 | "
              f"{best:+.2f} | {spearman(loo(x[:, [j]], y, 1e-6), y):+.2f} |")
    val_names = [n for n, r in rows.items() if r[0] == "validation"]
    print("\n| validation family | log2 rate / peak | predicted: units | sign agreement |")
    print("|---|---:|---:|---:|")
    fits = [ridge(x_of(k), y, 10.0)(x_of(k, val_names)) for k in (("units",), ("agreement",))]
    for i, n in enumerate(val_names):
        print(f"| {n} | {rows[n][1]:+.2f} | {fits[0][i]:+.2f} | {fits[1][i]:+.2f} |")

if __name__ == "__main__":
    main()
