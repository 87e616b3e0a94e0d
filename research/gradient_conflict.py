"""Do the families of an ensemble pull the trained block the same way, and consistently?

For each family, K fresh tasks (drawn from the seed and the family's name) run ``--horizon``
steps from the given HyperAdam weights (``log_final`` meta-loss, as the runs of
research/record.md use); each task's exact gradient (full BPTT, one task at a time) is
restricted to the trained block ``--train-only``. Printed per family:

- ``median |g|``: the median norm of one task's gradient;
- ``split-half cos``: the cosine between the mean gradients of two disjoint halves of the K
  tasks (averaged over 64 random splits): how consistently a meta-step of K/2 tasks of this
  family points the same way (Metz et al. 2019: near 0 where the meta-loss is chaotic);
- ``... normalised``: the same with every task's gradient scaled to norm 1 before averaging
  (what per-task normalisation of the meta-gradient would give);
- ``cos with the push``: the cosine between the family's descent direction ``-mean g`` and
  ``--push`` minus the start (what a run learned), restricted to the block; positive = this
  family asks for the move the run made (and the same for the normalised mean).

Then the cosines between the families' mean descent directions, of the raw gradients and of
the normalised ones.

    python research/gradient_conflict.py research/starts/hyperadam-input-path-gate.npz \\
        --push research/runs/ha-open-readout-balanced/meta_params_100.npz
"""

import argparse
import hashlib
import os
import re
import zlib

import jax
import numpy as np

import hyperadam_optax as ha
from hyperadam_optax.io import make_kwargs_of
from hyperadam_optax.meta.config import MetaTrainConfig
from hyperadam_optax.meta.learned import learned_optimizer
from hyperadam_optax.meta.trainable import trainable_mask
from hyperadam_optax.meta.truncation import fresh_slot, truncation
from hyperadam_optax.tasks.registry import build_families, ensemble_members

BALANCED = ("digits-mlp-scaled,l2o-teacher-mlp-deep-scaled,l2o-logistic100-noisy,digits-cnn,"
            "l2o-quadratic20,sine-lstm-small,l2o-norm20,l2o-functions-2d")


def flat_block(stacked, mask) -> np.ndarray:
    """(K, ...) stacked pytree -> (K, n): each row the entries that ``mask`` trains."""
    rows = []
    for x, m in zip(jax.tree.leaves(stacked), jax.tree.leaves(mask), strict=True):
        x = np.asarray(x)
        if m is True:
            rows.append(x.reshape(len(x), -1))
        elif m is not False:
            rows.append(x[:, m])
    return np.concatenate(rows, axis=1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def split_half(g: np.ndarray, rng: np.random.Generator, splits: int = 64) -> float:
    k = len(g)
    cos = []
    for _ in range(splits):
        p = rng.permutation(k)
        cos.append(cosine(g[p[: k // 2]].mean(0), g[p[k // 2:]].mean(0)))
    return float(np.mean(cos))


def task_gradients(learned, family, config, theta, keys):
    """Per task, one after another (memory of one): the ``log_final`` meta-loss and its
    exact gradient (full BPTT)."""
    def one(key):
        slot = fresh_slot(learned, family, theta, key, 0)
        return jax.value_and_grad(
            lambda th: truncation(learned, family, config, th, slot).meta_loss)(theta)

    return jax.jit(lambda ks: jax.lax.map(one, ks))(keys)


def family_gradients(learned, name, families, config, theta, mask, args, cache_dir):
    """(losses, (K, n) block gradients) of family ``name``, its tasks drawn from the seed and
    the name (not its place in the list); cached under ``cache_dir`` if given."""
    tag = hashlib.sha256(repr((args.weights_sha, args.train_only, args.seed, args.tasks,
                               args.horizon, name)).encode()).hexdigest()[:16]
    path = cache_dir and os.path.join(cache_dir, f"{name}-{tag}.npz")
    if path and os.path.exists(path):
        cached = np.load(path)
        return cached["losses"], cached["grads"]
    key = jax.random.fold_in(jax.random.key(args.seed), zlib.crc32(name.encode()))
    losses, grads = task_gradients(learned, families[name], config, theta,
                                   jax.random.split(key, args.tasks))
    losses, g = np.asarray(losses), flat_block(grads, mask)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        np.savez(path, losses=losses, grads=g)
    return losses, g


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("meta_params")
    p.add_argument("--families", default=BALANCED)
    p.add_argument("--train-only", default="theta_q[1:],theta_u[21:],theta_r[21:]")
    p.add_argument("--push", help="weights a run reached from META_PARAMS")
    p.add_argument("--tasks", type=int, default=16, help="K, tasks per family")
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="keep each family's gradients here (reruns reuse them)")
    args = p.parse_args(argv)
    with open(args.meta_params, "rb") as f:
        args.weights_sha = hashlib.sha256(f.read()).hexdigest()
    theta, metadata = ha.load_meta_params(args.meta_params, with_metadata=True)
    learned = learned_optimizer("hyperadam", make_kwargs=make_kwargs_of(metadata))
    fields = tuple(re.split(r",(?![^\[]*\])", args.train_only))
    config = MetaTrainConfig(unroll=args.horizon, trajectory=args.horizon,
                             meta_loss="log_final", estimator="full", trainable=fields)
    mask = trainable_mask(theta, config.trainable)
    push = None
    if args.push:
        moved = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b),
                             ha.load_meta_params(args.push, with_metadata=True)[0], theta)
        push = flat_block(jax.tree.map(lambda x: x[None], moved), mask)[0]
    names = ensemble_members(args.families)
    families, _ = build_families(args.families)
    print("| family | final/first loss | median |g| | split-half cos | split-half cos, "
          "normalised | cos with the push | ..., normalised |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    descent, unit_descent = {}, {}
    for name in names:
        losses, g = family_gradients(learned, name, families, config, theta, mask, args,
                                     args.cache_dir)
        norms = np.linalg.norm(g, axis=1)
        unit = g / (norms[:, None] + 1e-30)
        rng = np.random.default_rng([args.seed, zlib.crc32(name.encode())])
        descent[name], unit_descent[name] = -g.mean(0), -unit.mean(0)
        with_push = (f"{cosine(descent[name], push):+.3f} | "
                     f"{cosine(unit_descent[name], push):+.3f}" if push is not None else "- | -")
        print(f"| {name} | {float(np.mean(np.exp(losses))):.3g} | {np.median(norms):.3g} | "
              f"{split_half(g, rng):+.3f} | {split_half(unit, rng):+.3f} | {with_push} |",
              flush=True)
    for title, directions in (("raw", descent), ("normalised", unit_descent)):
        print(f"\ncosines between the families' mean descent directions, {title}:\n")
        print("| | " + " | ".join(str(j) for j in range(len(names))) + " |")
        print("|---|" + "---:|" * len(names))
        for i, a in enumerate(names):
            print(f"| {i} {a} | " + " | ".join(
                f"{cosine(directions[a], directions[b]):+.2f}" for b in names) + " |")

if __name__ == "__main__":
    main()
