"""How much signal one task gives the meta-gradient: exact BPTT against one ES pair.

For each family, K fresh tasks run ``--horizon`` steps from the given HyperAdam weights; the
meta-loss is ``log_final`` (the trajectory's log final loss over its first). Per task, the
exact gradient (backpropagation through the whole trajectory) and one antithetic ES pair's
estimate (``σ = --sigma``, perturbing only ``--fields``, as ``meta-train --train-only``
does) are restricted to the trained fields and split into two parts: the step schedule
(``b_q`` and the clock's readout row ``θ_q[0]``) and the readout of the other LSTM units
(``θ_q[1:]``, what would make the step depend on the task). For each part, the signal-to-noise
ratio of a single task's estimate is ``|E g|² / E|g - E g|²`` (over the K tasks, unbiased); an
average over B tasks has about B times it, so a meta-step of B tasks points the right way
when B · SNR is well above 1.

    python research/gradient_snr.py research/starts/hyperadam-input-path-gate.npz
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import hyperadam_optax as ha
from hyperadam_optax.io import make_kwargs_of
from hyperadam_optax.meta.config import MetaTrainConfig
from hyperadam_optax.meta.estimators.perturb import antithetic_noise, shifted
from hyperadam_optax.meta.learned import learned_optimizer
from hyperadam_optax.meta.truncation import fresh_slot, truncation
from hyperadam_optax.tasks.registry import build_families, ensemble_members


def snr(samples: np.ndarray) -> float:
    """``|E g|² / E|g - E g|²`` from K samples, without the ``1/K`` bias of ``|mean|²``."""
    k = len(samples)
    noise = np.sum(samples.var(axis=0, ddof=1))
    return float((np.sum(samples.mean(axis=0) ** 2) - noise / k) / noise)


def parts(g) -> dict[str, np.ndarray]:
    """(K, ...) gradients -> {"schedule": (K, 2J), "features": (K, (J-1) J)}."""
    q, b = np.asarray(g.theta_q), np.asarray(g.b_q)
    return {"schedule": np.concatenate([b, q[:, 0]], axis=1),
            "features": q[:, 1:].reshape(len(q), -1)}


def measure(learned, family, config, theta, keys, sigma: float, fields):
    """Per task: the log_final meta-loss, its exact gradient and one ES pair's estimate."""
    slots = jax.vmap(lambda k: fresh_slot(learned, family, theta, k, 0))(keys)

    def loss(th, slot):
        return truncation(learned, family, config, th, slot).meta_loss

    @jax.jit
    def pairs(noise, slots):  # the ES estimator's terms (estimators/es.py), one per pair
        up = jax.vmap(loss)(shifted(theta, noise, 1.0), slots)
        down = jax.vmap(loss)(shifted(theta, noise, -1.0), slots)
        weights = (up - down) / (2 * sigma**2)
        return jax.tree.map(lambda e: weights.reshape((-1,) + (1,) * (e.ndim - 1)) * e, noise)

    losses, grads = jax.jit(jax.vmap(jax.value_and_grad(loss), in_axes=(None, 0)))(theta, slots)
    noise = antithetic_noise(jax.random.fold_in(keys[0], 1), theta, len(keys), sigma, fields)
    return losses, parts(grads), parts(pairs(noise, slots))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("meta_params")
    p.add_argument("--families", default="digits-mlp,l2o-quadratic20,mnist-mlp-leaky-narrow,"
                                         "l2o-logistic10")
    p.add_argument("--tasks", type=int, default=32, help="K, tasks per family")
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--sigma", type=float, default=0.01)
    p.add_argument("--fields", default="theta_q,b_q")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    theta, metadata = ha.load_meta_params(args.meta_params, with_metadata=True)
    learned = learned_optimizer("hyperadam", make_kwargs=make_kwargs_of(metadata))
    fields = tuple(args.fields.split(","))
    config = MetaTrainConfig(unroll=args.horizon, trajectory=args.horizon,
                             meta_loss="log_final", estimator="full", trainable=fields)
    names = ensemble_members(args.families)
    families, _ = build_families(args.families)
    print("| family | final/first loss | BPTT SNR schedule | BPTT SNR features "
          "| ES-pair SNR schedule | ES-pair SNR features |")
    print("|---|---:|---:|---:|---:|---:|")
    for i, name in enumerate(names):
        keys = jax.random.split(jax.random.fold_in(jax.random.key(args.seed), i), args.tasks)
        losses, bptt, es = measure(learned, families[name], config, theta, keys,
                                   args.sigma, fields)
        print(f"| {name} | {float(jnp.mean(jnp.exp(losses))):.3g} | "
              f"{snr(bptt['schedule']):.3g} | {snr(bptt['features']):.3g} | "
              f"{snr(es['schedule']):.3g} | {snr(es['features']):.3g} |", flush=True)

if __name__ == "__main__":
    main()
