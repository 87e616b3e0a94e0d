"""Signal-to-noise of the PES meta-gradient a run applies, per family and meta-parameter field.

For weights of any learned optimizer (a file of ``save_meta_params``, a run's
``best_meta_params.npz``) and each family of ``--families``, the PES estimator of
``meta-train`` (``--num-particles`` pairs, ``--sigma``, truncations of ``--unroll`` in
trajectories of ``--trajectory``, ``--meta-loss``) runs with the weights held fixed (the
slots spread over the trajectory as in a run) and ``--estimates`` of its meta-step
estimates g_t are kept, one every ``--spacing`` meta-steps after as many for burn-in (by
default a trajectory's truncations: every pair has restarted between two kept estimates, so
they share no particle and no accumulated noise). Over them, in total and per field,
``SNR = |E g|² / E|g - E g|²`` (``|E g|²`` without its ``1/T`` bias):
a meta-step points the right way when SNR is well above 1 (its cosine with ``E g`` is about
``sqrt(SNR / (1 + SNR))``), and an average over n meta-steps of similar direction has about
n times it. With ``--reference`` also each field's movement ``|θ - θ_ref| / |θ_ref|``.

    python research/pes_snr.py research/runs/ha-paper-pes-ensemble/meta_params_2000.npz \\
        --reference research/runs/ha-paper-pes-digits/best_meta_params.npz
"""

import argparse

import jax
import numpy as np

import hyperadam_optax as ha
from hyperadam_optax.io import make_kwargs_of
from hyperadam_optax.meta import MetaTrainConfig, init_meta_state, learned_optimizer
from hyperadam_optax.meta.estimators import ESTIMATORS
from hyperadam_optax.optimizers.registry import spec_for_params
from hyperadam_optax.tasks.registry import build_families


def snr(samples: np.ndarray) -> float:
    """``|E g|² / E|g - E g|²`` from T samples (rows), without the ``1/T`` bias of
    ``|mean|²``."""
    t = len(samples)
    noise = float(np.sum(samples.var(axis=0, ddof=1)))
    return (float(np.sum(samples.mean(axis=0) ** 2)) - noise / t) / noise


def estimates(learned, family, config, theta, num: int, spacing: int, key
              ) -> dict[str, np.ndarray]:
    """``{field: (num, size)}``: ``num`` PES estimates at fixed ``theta``, ``spacing``
    meta-steps apart after ``spacing`` of burn-in."""
    pes = ESTIMATORS["pes"]
    slots = init_meta_state(key, learned, family, config, theta).slots[0]
    step = jax.jit(lambda s, k: pes.gradient(learned, family, config, theta, s, k)[1:3])
    rows = []
    for t in range((num + 1) * spacing):
        g, slots = step(slots, jax.random.fold_in(key, t))
        if t % spacing == spacing - 1 and t >= spacing:
            rows.append({k: np.asarray(v).ravel() for k, v in g._asdict().items()})
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("meta_params")
    p.add_argument("--reference", default=None, help="weights to measure movement from")
    p.add_argument("--families", default="l2o-set-digits")
    p.add_argument("--estimates", type=int, default=12, help="T, estimates per family")
    p.add_argument("--spacing", type=int, default=None,
                   help="meta-steps between kept estimates (default trajectory / unroll)")
    p.add_argument("--num-particles", type=int, default=16)
    p.add_argument("--sigma", type=float, default=0.01)
    p.add_argument("--unroll", type=int, default=20)
    p.add_argument("--trajectory", type=int, default=400)
    p.add_argument("--meta-loss", default="log_ratio")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    theta, metadata = ha.load_meta_params(args.meta_params, with_metadata=True)
    name = spec_for_params(type(theta).__name__).name
    learned = learned_optimizer(name, make_kwargs=make_kwargs_of(metadata))
    config = MetaTrainConfig(estimator="pes", num_particles=args.num_particles,
                             sigma=args.sigma, unroll=args.unroll, trajectory=args.trajectory,
                             meta_loss=args.meta_loss)
    families, _ = build_families(args.families)
    spacing = args.spacing or args.trajectory // args.unroll
    fields = list(theta._fields)
    print(f"{args.meta_params} ({name}): SNR of one meta-step's PES estimate, "
          f"{args.num_particles} pairs, sigma {args.sigma}, {args.estimates} estimates "
          f"{spacing} meta-steps apart\n")
    print("| family | total | " + " | ".join(fields) + " |")
    print("|---|" + "---:|" * (len(fields) + 1))
    per_field = {f: [] for f in fields}
    for i, (family_name, family) in enumerate(families.items()):
        g = estimates(learned, family, config, theta, args.estimates, spacing,
                      jax.random.fold_in(jax.random.key(args.seed), i))
        total = snr(np.concatenate([g[f] for f in fields], axis=1))
        cells = []
        for f in fields:
            per_field[f].append(snr(g[f]))
            cells.append(f"{per_field[f][-1]:.3f}")
        print(f"| {family_name} | {total:.3f} | " + " | ".join(cells) + " |", flush=True)
    print("| median | | " + " | ".join(f"{np.median(v):.3f}" for v in per_field.values())
          + " |")
    if args.reference:
        ref = ha.load_meta_params(args.reference, with_metadata=True)[0]
        moved = [float(np.linalg.norm(np.asarray(a) - np.asarray(b))
                       / (np.linalg.norm(np.asarray(b)) + 1e-12))
                 for a, b in zip(theta, ref)]
        print(f"\nmovement |θ - θ_ref| / |θ_ref| from {args.reference}:\n")
        print("| " + " | ".join(fields) + " |")
        print("|" + "---:|" * len(fields))
        print("| " + " | ".join(f"{m:.3f}" for m in moved) + " |")


if __name__ == "__main__":
    main()
