"""Throughput of a PES meta-step on the 8x8 digits MLP family, against the forward unroll.

Run: python benchmarks/pes_throughput.py [--optimizers hyperadam,rnnprop,l2o_scale] [--pairs 8]
[--unroll 20] [--repeats 5]

For each learned optimizer on ``digits-mlp`` (MLP 64-32-10, 2,410 parameters), in one process:
one PES meta-step (``pairs`` antithetic pairs x 2 particles x ``unroll`` optimizee steps, the
outer update included), and the plain jitted, vmapped forward unroll of the same
2 x ``pairs`` tasks for ``unroll`` steps (the floor an estimator that only runs forward can
reach). Task-steps per second = optimizee steps of all particles per second. The byte floor
reads and writes the optimizer's per-coordinate state once per task-step at the measured
streaming bandwidth. Prints one table; the meta-training issue's target is 15,000 PES
meta-steps (8 pairs x 20 steps) per hour.
"""

from __future__ import annotations

import argparse

import jax
from update_floor import best_time, stream_gbps  # the same timer and bandwidth probe


def measure(name: str, pairs: int, unroll: int, repeats: int, gbps: float) -> dict:
    from hyperadam_optax import meta
    from hyperadam_optax.meta.unroll import flat_leaves, train
    from hyperadam_optax.tasks import make_task

    family = make_task("digits-mlp")
    learned = meta.learned_optimizer(name)
    config = meta.MetaTrainConfig(estimator="pes", num_particles=pairs, unroll=unroll,
                                  trajectory=10 * unroll, sigma=0.01, meta_lr=1e-4)
    state = meta.init_meta_state(jax.random.PRNGKey(0), learned, family, config)
    step = meta.make_meta_step(learned, family, config)
    holder = [state]

    def meta_step(_):
        holder[0], metrics = step(holder[0])
        return metrics["meta_loss"]

    t_meta = best_time(meta_step, None, repeats=repeats)
    theta = holder[0].meta_params
    forward = jax.jit(jax.vmap(lambda k: train(flat_leaves(learned.make(theta)), family, k,
                                               unroll)[0]))
    keys = jax.random.split(jax.random.PRNGKey(1), 2 * pairs)
    t_forward = best_time(forward, keys, repeats=repeats)
    params = family.init(jax.random.PRNGKey(0), {})
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(learned.make(theta).init(params)))
    task_steps = 2 * pairs * unroll
    floor = task_steps * 2 * state_bytes / (gbps * 1e9)
    return {"optimizer": name, "meta_step_ms": 1e3 * t_meta,
            "pes_task_steps_s": task_steps / t_meta, "forward_task_steps_s": task_steps / t_forward,
            "pes_over_forward": t_meta / t_forward, "floor_ms": 1e3 * floor,
            "meta_steps_per_hour": 3600 / t_meta, "state_kib": state_bytes / 1024}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizers", default="hyperadam,rnnprop,l2o_scale")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--unroll", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    gbps = stream_gbps()
    print(f"measured streaming bandwidth {gbps:.1f} GB/s; digits-mlp, {args.pairs} pairs x "
          f"{args.unroll} steps")
    print("| optimizer | state KiB / task | PES meta-step ms | PES task-steps/s | forward "
          "task-steps/s | PES / forward | byte floor ms | PES meta-steps / hour |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.optimizers.split(","):
        r = measure(name, args.pairs, args.unroll, args.repeats, gbps)
        print(f"| {r['optimizer']} | {r['state_kib']:.0f} | {r['meta_step_ms']:.1f} | "
              f"{r['pes_task_steps_s']:,.0f} | {r['forward_task_steps_s']:,.0f} | "
              f"{r['pes_over_forward']:.2f} | {r['floor_ms']:.2f} | "
              f"{r['meta_steps_per_hour']:,.0f} |")


if __name__ == "__main__":
    main()
