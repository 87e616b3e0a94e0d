"""Time per jitted update of HyperAdam, RNNprop, DM, L2O-Scale and optax.adam; each of HyperAdam
and L2O-Scale against its floor.

Run: python benchmarks/update_step.py [--sizes 16384,1048576,10485760] [--repeats 10]

Prints one table from one run. The floor of an update is
max(FLOPs / matmul peak, bytes / elementwise bandwidth), both ceilings measured in the
same run, with the FLOPs and bytes per coordinate counted below.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax

import hyperadam_optax as ha


def flops_per_coordinate(j: int) -> int:
    """Multiply-adds counted as 2 FLOPs: the LSTM ([x, h] (2J) @ (2J, 4J)), the decay-rate
    layers (m @ (J, 2J) and s @ (J, 3J) with the WeightCell fused in), plus about 60
    elementwise FLOPs per candidate (gates, moments, bias corrections, candidate, combination)."""
    return 2 * (2 * j * 4 * j) + 2 * (j * 2 * j + j * 3 * j) + 60 * j


def bytes_per_coordinate(j: int, state_bytes: int = 4) -> int:
    """Read and write the 6 J-vectors of state, read the gradient, write the update."""
    return 2 * 6 * j * state_bytes + 4 + 4


def l2o_scale_flops_per_coordinate(k: int = 4, p: int = 10) -> int:
    """The Parameter GRU (gates ``[x, h]`` (3K+P) @ (3K+P, 2P), candidate @ (3K+P, P)), four
    readouts of h (decay, second-moment decay, direction, log rate) and the shortcut (K), plus
    about 20 elementwise FLOPs per timescale (moments, asinh, log, products) and 8 per unit
    of the GRU (gates, combination)."""
    f = 3 * k
    return 2 * (f + p) * 3 * p + 2 * 4 * p + 2 * k + 20 * k + 8 * p


def l2o_scale_bytes_per_coordinate(k: int = 4, p: int = 10, state_bytes: int = 4) -> int:
    """Read and write the K momenta, K second moments, the log rate and the P-unit state, read
    the gradient, write the update."""
    return 2 * (2 * k + 1 + p) * state_bytes + 4 + 4


def _time(fn, *args, repeats: int) -> float:
    out = fn(*args)
    jax.block_until_ready(out)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    return 2 * n**3 / _time(f, a, repeats=repeats) / 1e9


def elementwise_gbps(n: int = 1 << 26, repeats: int = 5) -> float:
    x = jnp.ones((n,), jnp.float32)
    f = jax.jit(lambda x: x * 1.0001 + 0.5)
    return 2 * 4 * n / _time(f, x, repeats=repeats) / 1e9


def time_update(tx, n: int, repeats: int) -> float:
    params = {"w": jnp.zeros((n,), jnp.float32)}
    grads = {"w": jax.random.normal(jax.random.key(1), (n,), jnp.float32)}
    state = tx.init(params)
    step = jax.jit(tx.update, donate_argnums=(1,))

    # Keep feeding the new state back in, as a training loop does (state is donated).
    holder = [state]

    def run(g):
        u, holder[0] = step(g, holder[0])
        return u

    return _time(run, grads, repeats=repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="16384,1048576,10485760")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--num-candidates", type=int, default=20,
                        help="J for HyperAdam, and the LSTM hidden size of RNNprop and DM")
    args = parser.parse_args(argv)
    j = args.num_candidates
    sizes = [int(s) for s in args.sizes.split(",")]

    peak = matmul_gflops()
    bw = elementwise_gbps()
    fpc, bpc = flops_per_coordinate(j), bytes_per_coordinate(j)
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}, J={j}")
    print(f"measured ceilings: matmul {peak:.1f} GFLOP/s, elementwise {bw:.1f} GB/s")
    lfpc, lbpc = l2o_scale_flops_per_coordinate(), l2o_scale_bytes_per_coordinate()
    print(f"HyperAdam per coordinate: {fpc} FLOPs, {bpc} bytes moved; "
          f"state {6 * j * 4} bytes/param (optax.adam: 8)")
    print(f"L2O-Scale (sizes 10/20/20, 4 timescales) per coordinate: {lfpc} FLOPs, {lbpc} bytes "
          f"moved; state {19 * 4} bytes/param")
    print()
    print("| coordinates | adam ms | hyperadam ms | rnnprop ms | dm ms | l2o_scale ms "
          "| hyperadam/adam | hyperadam/floor | l2o_scale/hyperadam | l2o_scale/floor |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    key = jax.random.key(0)
    learned = {
        "hyperadam": ha.hyperadam(5e-3, ha.init_meta_params(key, j, "paper")),
        "rnnprop": ha.rnnprop(1.0, ha.init_rnnprop_meta_params(key, j)),
        "dm": ha.dm_optimizer(1.0, ha.init_dm_meta_params(key, j)),
        "l2o_scale": ha.l2o_scale(1.0, ha.init_l2o_scale_meta_params(key)),
    }
    for n in sizes:
        t_adam = time_update(optax.adam(1e-3), n, args.repeats)
        t = {name: time_update(tx, n, args.repeats) for name, tx in learned.items()}
        floor = max(n * fpc / (peak * 1e9), n * bpc / (bw * 1e9))
        l2o_floor = max(n * lfpc / (peak * 1e9), n * lbpc / (bw * 1e9))
        print(f"| {n:,} | {t_adam * 1e3:.3f} | {t['hyperadam'] * 1e3:.2f} "
              f"| {t['rnnprop'] * 1e3:.2f} | {t['dm'] * 1e3:.2f} | {t['l2o_scale'] * 1e3:.2f} "
              f"| {t['hyperadam'] / t_adam:.0f}x | {t['hyperadam'] / floor:.2f}x "
              f"| {t['l2o_scale'] / t['hyperadam']:.2f} | {t['l2o_scale'] / l2o_floor:.2f}x |")


if __name__ == "__main__":
    main()
